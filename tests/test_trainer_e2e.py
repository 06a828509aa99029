"""The Trainer's choices through the whole pipeline: EfficientNet and the small CNN, the
metadata branch, test-time augmentation, balanced sampling, two-stage fine-tuning, and a
3-fold ensemble served as one model. Runs share a work dir, so only the Trainer onwards
reruns. Every other backbone is built in tests/test_model.py: the export and serving code
they would go through here is the same."""

from __future__ import annotations

import glob
import os

import numpy as np
import pytest
import tensorflow as tf

from modules import features as F
from modules.task import TaskSpec
from tests.helpers import shard_records
from tests.test_pipeline_e2e import BLESS_ANY, run

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("trainer-e2e")


def serve_both_ways(model_dir: str, records: list[bytes], metadata: bool) -> tuple:
    """Scores of the same examples through serving_default and serving_image."""
    model = tf.saved_model.load(model_dir)
    examples = [tf.train.Example.FromString(r).features.feature for r in records]
    image_inputs = {F.IMAGE_KEY: tf.constant([e[F.IMAGE_KEY].bytes_list.value[0]
                                              for e in examples])}
    if metadata:
        image_inputs.update({key: tf.constant([e[key].int64_list.value[0] for e in examples],
                                              tf.int64) for key in TaskSpec().model_features})
    by_example = model.signatures["serving_default"](examples=tf.constant(records))
    by_image = model.signatures["serving_image"](**image_inputs)
    return by_example["probability"].numpy(), by_image["probability"].numpy()


@pytest.mark.parametrize("backbone, settings", [
    ("efficientnet_b0", ["metadata=true", "tta=4"]),
    # The small CNN carries the training settings at a fraction of EfficientNet's time.
    ("pneumonia_cnn", ["class_balance=sampling", "frozen_epochs=1", "unfreeze_fraction=0.5"]),
])
def test_each_backbone_trains_is_pushed_and_serves_images_and_examples_alike(
        backbone, settings, work, tiny_data):
    sets = [arg for s in [f"backbone={backbone}", *settings] for arg in ("--set", s)]
    summary = run(tiny_data, work, *BLESS_ANY, *sets)["summary"]
    assert summary["blessed"] and summary["pushed_model"]
    records = shard_records(tiny_data, "test00-*.tfrec")[:24]
    by_example, by_image = serve_both_ways(summary["pushed_model"], records,
                                           metadata="metadata=true" in settings)
    assert by_example.shape == (len(records), 1)
    np.testing.assert_allclose(by_image, by_example, atol=1e-5)


def test_a_three_fold_ensemble_is_served_as_one_model(work, tiny_data):
    result = run(tiny_data, work, *BLESS_ANY, "--set", "ensemble_folds=3")
    summary = result["summary"]
    assert {"Trainer_fold0", "Trainer_fold1", "Trainer_fold2", "Ensemble"} <= set(
        summary["components"])
    ensemble = summary["training"]["Ensemble"]
    assert len(ensemble["fold_aucs"]) == 3 and 0 <= ensemble["oof_auc"] <= 1
    # every shard outside the evaluation fold is scored once, by the model that never saw it
    outside = sum(int(name.split("-")[1].split(".")[0]) for name in os.listdir(tiny_data)
                  if name.startswith("train") and name[5:7] not in ("12", "13", "14"))
    assert ensemble["examples"] == outside
    assert "out-of-fold AUC" in result["stdout"]
    assert summary["blessed"] and summary["pushed_model"]
    members = glob.glob(str(work / "pipeline" / "Ensemble" / "model" / "*" / "Format-Keras"
                            / "member-*.keras"))
    assert len(members) == 3  # the fold networks, for the next run's warm start
    by_example, by_image = serve_both_ways(summary["pushed_model"],
                                           shard_records(tiny_data, "test00-*.tfrec")[:16],
                                           metadata=False)
    np.testing.assert_allclose(by_image, by_example, atol=1e-5)
