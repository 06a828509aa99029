"""Every shipped config loads, and its curated schema says what its task spec says: the same
features, closed code domains where the task's tables are closed, open ones where a release
may add codes. A task edited without its schema (or the reverse) fails here, not at DataGate
on someone's data."""

from __future__ import annotations

import glob
import os

import pytest
from tensorflow_metadata.proto.v0 import schema_pb2

from components.task_schema import SchemaError, task_schema
from modules.task import TaskSpec
from pipeline.config import CONFIG_DIR, load_config

CONFIGS = sorted(glob.glob(os.path.join(CONFIG_DIR, "*.yaml")))


def schema_of(path: str, task: TaskSpec) -> dict[str, schema_pb2.Feature]:
    """The schema the pipeline checks the records against: the curated file, with the
    label's domain from the task (components/task_schema.py)."""
    schema = task_schema(path, task.label.key, len(task.label.classes))
    return {feature.name: feature for feature in schema.feature}


@pytest.mark.parametrize("path", CONFIGS, ids=os.path.basename)
def test_the_schema_follows_the_task(path):
    config = load_config(path)
    task: TaskSpec = config.task
    features = schema_of(config.schema_path, task)
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
    assert {"melanoma", "pneumonia", "chest-xray-sex", "celeba", "ddsm"} <= names


def test_a_label_map_changes_the_label_domain_and_nothing_else():
    """DDSM's binary variants check their labels against two codes, from the same file."""
    config = load_config(os.path.join(CONFIG_DIR, "ddsm.yaml"), [
        'label_values={"0": normal, "1": abnormal, "2": abnormal, "3": abnormal, '
        '"4": abnormal}', "classes=[normal, abnormal]", "positive=abnormal", "urgent=[]"])
    five = schema_of(config.schema_path, load_config(os.path.join(CONFIG_DIR,
                                                                  "ddsm.yaml")).task)
    two = schema_of(config.schema_path, config.task)
    assert (two["target"].int_domain.min, two["target"].int_domain.max) == (0, 1)
    assert five["target"].int_domain.max == 4
    assert {k: v for k, v in two.items() if k != "target"} == \
        {k: v for k, v in five.items() if k != "target"}


def test_a_schema_without_the_label_is_refused(tmp_path):
    path = tmp_path / "schema.pbtxt"
    path.write_text('feature { name: "image" type: BYTES }\n')
    with pytest.raises(SchemaError, match="no feature 'target', the task's label"):
        task_schema(str(path), "target", 2)
