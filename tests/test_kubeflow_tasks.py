"""Compiled tasks run: each task's container command from the spec (TFX's executor
entrypoint with the spec's arguments), executed here with the ExecutorInput a launcher would
pass. This checkout and .venv stand in for the image (kubeflow.project_dir = the repo)."""

from __future__ import annotations

import os
import sys

import pytest
import tensorflow as tf
import yaml

from pipeline.config import load_config
from pipeline.data.shards import list_shards
from tests.helpers import REPO
from tests.kubeflow_helpers import KUBEFLOW_SET, LocalLauncher, TaskFailed

pytestmark = pytest.mark.slow  # each task is a process that imports TFX


@pytest.fixture(scope="module")
def launcher(tiny_data, tmp_path_factory) -> LocalLauncher:
    from pipeline.kubeflow_runner import compile_pipeline

    root = tmp_path_factory.mktemp("kfp-tasks")
    config = load_config(None, KUBEFLOW_SET + [f"kubeflow.project_dir={REPO}"])
    compiled = compile_pipeline(config, str(root / "pipeline.yaml"))
    with open(compiled.path) as f:
        spec = yaml.safe_load(f)  # the file, as a launcher reads it
    return LocalLauncher(spec, str(root / "artifacts"), {"data_root": tiny_data},
                         python_dir=os.path.dirname(sys.executable), cwd=str(root))


@pytest.fixture(scope="module")
def examples(launcher) -> dict:
    return launcher.run("ImportExampleGen")["examples"]


def count_records(pattern: str) -> int:
    return sum(1 for _ in tf.data.TFRecordDataset(tf.io.gfile.glob(pattern), "GZIP"))


def test_example_gen_task_reads_the_data_root_given_for_the_run(examples, tiny_data):
    """The driver hook, then the executor: the runtime parameter replaces the compiled
    default (gs://, unreachable here), and every shard becomes its own split, record for
    record."""
    shards = list_shards(tiny_data, "train")
    splits = yaml.safe_load(examples["metadata"]["split_names"])
    assert splits == [s.split_name for s in shards]
    for shard in shards:
        assert count_records(os.path.join(examples["uri"], f"Split-{shard.split_name}",
                                          "*")) == shard.count, shard.split_name


def test_tasks_pass_artifacts_down_to_the_data_gate_which_stops_bad_data(launcher, examples):
    """Schema from the project directory, statistics, validation, then medtfx's own
    DataGate component, run from the spec like TFX's."""
    from google.protobuf import text_format
    from tensorflow_metadata.proto.v0 import schema_pb2

    schema = launcher.run("TaskSchema")["schema"]
    with open(os.path.join(REPO, "schema", "melanoma.pbtxt")) as f:
        curated = text_format.Parse(f.read(), schema_pb2.Schema())
    written = tf.io.gfile.GFile(os.path.join(schema["uri"], "schema.pbtxt")).read()
    assert text_format.Parse(written, schema_pb2.Schema()) == curated
    launcher.run("StatisticsGen")
    anomalies = launcher.run("ExampleValidator")["anomalies"]
    launcher.run("DataGate")  # the synthetic data fits the schema

    from tensorflow_metadata.proto.v0 import anomalies_pb2

    from components.data_gate import ANOMALIES_FILE

    report = os.path.join(anomalies["uri"], "Split-train03", ANOMALIES_FILE)
    found = anomalies_pb2.Anomalies()
    found.anomaly_info["age_approx"].description = "Unexpectedly large value: 240."
    with tf.io.gfile.GFile(report, "wb") as f:
        f.write(found.SerializeToString())
    with pytest.raises(TaskFailed) as failed:
        launcher.run("DataGate")
    assert "train03: age_approx: Unexpectedly large value: 240." in failed.value.stderr
