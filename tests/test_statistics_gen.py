"""The one-pass StatisticsGen writes, split for split, the statistics TFDV computes for
each split alone: what ExampleValidator and the DataGate check is unchanged."""

from __future__ import annotations

import glob
import os
import shutil

import tensorflow as tf
import tensorflow_data_validation as tfdv
from tfx.types import artifact_utils, standard_artifacts

from components.statistics_gen import Executor
from pipeline.results.statistics import STATS_FILE
from tests.helpers import REPO, beam_context, load_schema

SPLITS = ["train00", "train01", "train07", "empty"]


def examples_artifact(root: str, data_root: str) -> standard_artifacts.Examples:
    """ImportExampleGen's layout: one folder per split; `empty` holds no records."""
    examples = standard_artifacts.Examples()
    examples.uri = os.path.join(root, "examples")
    examples.split_names = artifact_utils.encode_split_names(SPLITS)
    for split in SPLITS:
        folder = os.path.join(examples.uri, f"Split-{split}")
        os.makedirs(folder)
        target = os.path.join(folder, "data.tfrecord")
        if split == "empty":
            tf.io.TFRecordWriter(target).close()
        else:
            (shard,) = glob.glob(os.path.join(data_root, f"{split}-*.tfrec"))
            shutil.copy(shard, target)
    return examples


def test_each_split_gets_the_statistics_tfdv_computes_for_it_alone(tiny_data, tmp_path):
    examples = examples_artifact(str(tmp_path), tiny_data)
    schema = standard_artifacts.Schema()
    schema.uri = str(tmp_path / "schema")
    os.makedirs(schema.uri)
    shutil.copy(os.path.join(REPO, "schema", "melanoma.pbtxt"), schema.uri)
    statistics = standard_artifacts.ExampleStatistics()
    statistics.uri = str(tmp_path / "statistics")

    Executor(beam_context(str(tmp_path / "tmp"))).Do(
        {"examples": [examples], "schema": [schema]}, {"statistics": [statistics]}, {"code": ""})

    assert artifact_utils.decode_split_names(statistics.split_names) == SPLITS
    options = tfdv.StatsOptions(schema=load_schema())
    for split in SPLITS:
        written = tfdv.load_stats_binary(
            os.path.join(statistics.uri, f"Split-{split}", STATS_FILE))
        alone = tfdv.generate_statistics_from_tfrecord(
            os.path.join(examples.uri, f"Split-{split}", "data.tfrecord"),
            stats_options=options)
        assert written == alone, split
    assert written.datasets[0].num_examples == 0
