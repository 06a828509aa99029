"""Every shipped config loads, and its curated schema says what its task spec says: the same
features, closed code domains where the task's tables are closed, open ones where a release
may add codes. A task edited without its schema (or the reverse) fails here, not at DataGate
on someone's data."""

from __future__ import annotations

import glob
import os

import pytest
from google.protobuf import text_format
from tensorflow_metadata.proto.v0 import schema_pb2

from modules.task import TaskSpec
from pipeline.config import CONFIG_DIR, load_config

CONFIGS = sorted(glob.glob(os.path.join(CONFIG_DIR, "*.yaml")))


def schema_of(path: str) -> dict[str, schema_pb2.Feature]:
    with open(path) as f:
        schema = text_format.Parse(f.read(), schema_pb2.Schema())
    return {feature.name: feature for feature in schema.feature}


@pytest.mark.parametrize("path", CONFIGS, ids=os.path.basename)
def test_the_schema_follows_the_task(path):
    config = load_config(path)
    task: TaskSpec = config.task
    features = schema_of(config.schema_path)
    expected = {task.image_key, task.image_name_key, task.group_key, task.label.key,
                *task.metadata}
    assert set(features) == expected
    label = features[task.label.key].int_domain
    assert (label.min, label.max) == (0, len(task.label.classes) - 1)
    assert "SERVING" in features[task.label.key].not_in_environment
    for feature in task.categorical:
        domain = features[feature.key].int_domain
        assert domain.min == task.missing and domain.is_categorical
        if feature.open:
            assert not domain.HasField("max"), f"{feature.key} is open in the task"
        else:
            assert domain.max == len(feature.values) - 1, feature.key
    for feature in task.numeric:
        domain = features[feature.key].int_domain
        assert (domain.min, domain.max) == (task.missing, feature.max), feature.key


def test_every_task_has_a_config():
    names = {load_config(path).task.name for path in CONFIGS}
    assert {"melanoma", "pneumonia", "chest-xray-sex", "celeba"} <= names
