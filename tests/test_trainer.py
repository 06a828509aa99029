"""run_fn on a tiny dataset, called the way TFX's Trainer executor calls it."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf
from google.protobuf import json_format
from tfx.components.trainer import fn_args_utils
from tfx.proto import trainer_pb2
from tfx.types import artifact_utils, standard_artifacts

from modules import features as F
from modules.schedule import RampSustainDecay
from modules.trainer import run_fn, schedule_steps
from pipeline.config import load_config
from pipeline.pipeline import trainer_custom_config
from tests.helpers import REPO, run_transform, shard_records

TRAIN = [f"train{i:02d}" for i in range(9)]
VALIDATION = ["train09", "train10", "train11"]


def examples_artifact(data_root: str, uri: str) -> standard_artifacts.Examples:
    """The shards as ImportExampleGen writes them: one gzipped split directory per shard."""
    splits = [f"train{i:02d}" for i in range(15)]
    for split in splits:
        os.makedirs(os.path.join(uri, f"Split-{split}"))
        path = os.path.join(uri, f"Split-{split}", "data_tfrecord-00000-of-00001.gz")
        with tf.io.TFRecordWriter(path, options="GZIP") as writer:
            for record in shard_records(data_root, f"{split}-*.tfrec"):
                writer.write(record)
    artifact = standard_artifacts.Examples()
    artifact.uri = uri
    artifact.split_names = artifact_utils.encode_split_names(splits)
    return artifact


def artifact_at(cls, uri: str):
    artifact = cls()
    artifact.uri = uri
    return artifact


@pytest.fixture(scope="module")
def trained(tiny_data, tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("trainer")
    examples = examples_artifact(tiny_data, str(root / "examples"))
    transform_dir = str(root / "transform")
    run_transform(shard_records(tiny_data, "train0[0-8]-*.tfrec"), 32, transform_dir)
    os.makedirs(root / "schema")
    shutil.copy(os.path.join(REPO, "schema", "schema.pbtxt"), root / "schema")

    config = load_config(None, ["image_size=32", "batch_size=8", "epochs=2", "train_steps=4"])
    exec_properties = {
        "train_args": json_format.MessageToJson(trainer_pb2.TrainArgs(splits=TRAIN,
                                                                      num_steps=4)),
        "eval_args": json_format.MessageToJson(trainer_pb2.EvalArgs(splits=VALIDATION)),
        "custom_config": json.dumps(trainer_custom_config(config)),
    }
    fn_args = fn_args_utils.get_common_fn_args(
        {"examples": [examples],
         "transform_graph": [artifact_at(standard_artifacts.TransformGraph, transform_dir)],
         "schema": [artifact_at(standard_artifacts.Schema, str(root / "schema"))]},
        exec_properties, working_dir=str(root / "work"))
    fn_args.serving_model_dir = str(root / "model" / "Format-Serving")
    fn_args.model_run_dir = str(root / "model_run")
    run_fn(fn_args)
    return {"model": fn_args.serving_model_dir, "run": fn_args.model_run_dir,
            "config": config}


def test_exported_model_scores_unlabelled_test_examples(trained, tiny_data):
    model = tf.saved_model.load(trained["model"])
    records = shard_records(tiny_data, "test00-*.tfrec")
    assert F.LABEL_KEY not in tf.train.Example.FromString(records[0]).features.feature
    scores = model.signatures["serving_default"](examples=tf.constant(records))["probability"]
    assert scores.shape == (len(records), 1)
    assert np.all((scores.numpy() >= 0) & (scores.numpy() <= 1))


def test_slicing_signature_buckets_ages_and_marks_missing(trained):
    model = tf.saved_model.load(trained["model"])

    def example(age: int) -> bytes:
        return tf.train.Example(features=tf.train.Features(feature={
            F.AGE_KEY: tf.train.Feature(int64_list=tf.train.Int64List(value=[age]))
        })).SerializeToString()

    ages = [5, 30, 44, 45, 74, 75, 90, -1]
    buckets = model.signatures["slicing_features"](examples=tf.constant(
        [example(a) for a in ages]))[F.AGE_BUCKET_KEY].numpy().tolist()
    assert trained["config"].evaluation.age_buckets == [30, 45, 60, 75]
    assert buckets == [0, 1, 1, 2, 3, 4, 4, -1]


def test_trains_exactly_the_configured_steps_and_logs_for_tensorboard(trained):
    saved = tf.train.load_checkpoint(os.path.join(trained["model"], "variables", "variables"))
    assert saved.get_tensor("optimizer/_iterations/.ATTRIBUTES/VARIABLE_VALUE") == 4
    assert any("events.out.tfevents" in name for _, _, files in os.walk(trained["run"])
               for name in files)


def test_steps_come_from_example_counts_unless_given():
    assert schedule_steps(None, train_examples=1000, batch_size=32, epochs=5) == (5, 31)
    assert schedule_steps(20, train_examples=0, batch_size=32, epochs=5) == (5, 4)
    assert schedule_steps(3, train_examples=0, batch_size=32, epochs=5) == (3, 1)


def test_learning_rate_ramps_sustains_and_decays_per_step():
    lr = RampSustainDecay(start=1e-5, peak=1e-3, minimum=1e-6, ramp_steps=10,
                          sustain_steps=5, decay=0.5, steps_per_epoch=10)
    values = [float(lr(step)) for step in (0, 5, 10, 14, 15, 25, 35)]
    assert values[0] == pytest.approx(1e-5)
    assert values[1] == pytest.approx((1e-5 + 1e-3) / 2)
    assert values[2] == values[3] == pytest.approx(1e-3)
    assert values[4] == pytest.approx(1e-3)
    assert values[5] == pytest.approx((1e-3 - 1e-6) * 0.5 + 1e-6)  # one epoch of decay
    assert values[6] == pytest.approx((1e-3 - 1e-6) * 0.25 + 1e-6)
