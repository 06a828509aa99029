"""The Trainer's choices through the whole pipeline: EfficientNet and the small CNN, the
metadata branch, test-time augmentation, balanced sampling and two-stage fine-tuning. Runs
share a work dir, so only the Trainer onwards reruns. A K-fold ensemble runs through the
compiled Kubeflow pipeline in tests/test_kubeflow_tasks.py. Every other backbone is built
in tests/test_model.py: the export and serving code they would go through here is the same.
"""

from __future__ import annotations

import numpy as np
import pytest

from tests.helpers import serve_both_ways, shard_records
from tests.test_pipeline_e2e import BLESS_ANY, run

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("trainer-e2e")


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
