"""The compiled pipeline runs, whole: every task of the spec `medtfx compile-kfp` writes,
ImportExampleGen through Pusher and the test shards' scoring, executed in dependency order
through each task's container command and arguments with the ExecutorInput a launcher
passes (tests/kubeflow_helpers.py). This checkout and .venv stand in for the image
(kubeflow.project_dir = the repo), a local folder for the bucket, and Beam's portable job
service (the path of the Flink and Spark job servers) runs every Beam stage. The data is the
other public release: ISIC 2019-2020 "70k" shards (a source, no diagnosis), 48 px, with
grayscale JPEGs among them.

Then the K-fold ensemble variant of the same pipeline, as a second run: the backend's
cache reuses the data tasks and Transform, and the resolver hands the first run's blessed
model to its Evaluator as the baseline."""

from __future__ import annotations

import csv
import glob
import json
import os
import shutil
import sys

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_data_validation as tfdv
import yaml

from modules import features as F
from modules.artifacts import CARD_DIR, SUBMISSION_FILE
from modules.records import record_dataset
from pipeline.config import load_config
from pipeline.data.shards import list_shards
from pipeline.kubeflow_entrypoint import COMMAND as ENTRYPOINT_COMMAND
from pipeline.results.eval_results import load_evaluation
from pipeline.results.statistics import STATS_FILE
from tests.helpers import local_job_service, serve_both_ways, shard_records
from tests.kubeflow_helpers import SLICES, LocalBackend, Run, TaskFailed, compiled

pytestmark = pytest.mark.slow  # each task is a process that imports TFX

RESOLVER = "latest_blessed_model_resolver"
# Transform gets the Beam arguments too, but runs in place: it has nothing to analyse.
BEAM_TASKS = ("ImportExampleGen", "StatisticsGen", "Evaluator", "BulkInferrer",
              "TestExampleGen", "TestStatisticsGen")


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> str:
    from pipeline.sample.synth import SynthSpec, generate

    root = str(tmp_path_factory.mktemp("release-70k"))
    generate(root, SynthSpec(images=300, size=48, seed=9, release="70k", grayscale_share=0.3,
                             malignant_share=0.3))
    return root


@pytest.fixture(scope="module")
def backend(tmp_path_factory) -> LocalBackend:
    root = tmp_path_factory.mktemp("kfp-runs")
    return LocalBackend(str(root / "artifacts"), str(root / "bucket"),
                        python_dir=os.path.dirname(sys.executable))


@pytest.fixture(scope="module")
def job_endpoint():
    with local_job_service() as endpoint:
        yield endpoint


@pytest.fixture(scope="module")
def single(backend, job_endpoint, data, tmp_path_factory) -> Run:
    path = str(tmp_path_factory.mktemp("kfp-spec") / "pipeline.yaml")
    return backend.submit(compiled(job_endpoint, path), {"data_root": data})


@pytest.fixture(scope="module")
def ensemble(backend, single, job_endpoint, data, tmp_path_factory) -> Run:
    """Without the test shards' scoring, which the first run has shown."""
    path = str(tmp_path_factory.mktemp("kfp-spec-ensemble") / "pipeline.yaml")
    return backend.submit(compiled(job_endpoint, path, "ensemble_folds=2",
                                   "scoring.test_shards=false"), {"data_root": data})


def count_records(pattern: str) -> int:
    return sum(1 for _ in record_dataset(tf.io.gfile.glob(pattern)))


def uri(run: Run, task: str, key: str) -> str:
    (artifact,) = run.outputs[task][key]
    return artifact["uri"]


def test_every_container_task_ran_after_what_it_depends_on(single):
    containers = [t for t in single.tasks if "container" in single.executor(t)]
    assert sorted(single.executed) == sorted(containers)
    # each launched as the spec says: medtfx's entrypoint around TFX's
    assert {tuple(single.container(t)["command"]) for t in containers} == {
        tuple(ENTRYPOINT_COMMAND)}
    for task in single.executed:
        for upstream in single.tasks[task].get("dependentTasks", []):
            if upstream in single.executed:
                assert single.executed.index(upstream) < single.executed.index(task)
    # the first run has no blessed model to compare against
    assert single.outputs[f"{RESOLVER}-model-resolver"]["model"] == []


def test_resources_from_the_config_are_in_the_spec_the_tasks_ran_from(single):
    assert single.container("Trainer")["resources"] == {
        "cpuLimit": 2.0, "resourceCpuLimit": "2", "memoryLimit": 8.589934592,
        "resourceMemoryLimit": "8Gi"}
    assert single.container("Transform")["resources"]["resourceCpuLimit"] == "1"


def test_example_gen_task_reads_the_data_root_given_for_the_run(single, data):
    """The driver hook, then the executor: the runtime parameter replaces the compiled
    default (gs://, unreachable here), and every shard becomes its own split, record for
    record, read on the job service."""
    (examples,) = single.outputs["ImportExampleGen"]["examples"]
    shards = list_shards(data, "train")
    assert yaml.safe_load(examples["metadata"]["split_names"]) == [s.split_name for s in shards]
    statistics = uri(single, "StatisticsGen", "statistics")
    for shard in shards:
        split = f"Split-{shard.split_name}"
        assert count_records(os.path.join(examples["uri"], split, "*")) == shard.count, split
        stats = tfdv.load_stats_binary(os.path.join(statistics, split, STATS_FILE))
        assert stats.datasets[0].num_examples == shard.count, split


def test_beam_stages_ran_on_the_portable_job_service(single, job_endpoint):
    for task in BEAM_TASKS:
        args = single.container(task)["args"]
        assert "--runner=PortableRunner" in args and f"--job_endpoint={job_endpoint}" in args
        assert "Job state changed to DONE" in single.logs[task], task
    assert "Using the in-place Transform" in single.logs["Transform"]
    assert "Job state changed" not in single.logs["Transform"]  # it read no example


def test_the_evaluator_scores_every_held_out_example_by_source_and_blesses(single, data):
    config = load_config(None, [SLICES])
    evaluation = load_evaluation(uri(single, "Evaluator", "evaluation"), config.task, 1, 1)
    assert {"source = ISIC20", "source = ISIC19", "source = ISIC18"} <= set(evaluation)
    held_out = sum(s.count for s in list_shards(data, "train")
                   if s.split_name in ("train12", "train13", "train14"))
    assert evaluation["overall"].metrics["example_count"] == held_out
    (blessing,) = single.outputs["Evaluator"]["blessing"]
    assert blessing["metadata"]["blessed"] == 1
    assert blessing["metadata"]["current_model_id"] == single.outputs["Trainer"]["model"][0][
        "name"]


def test_the_pushed_model_serves_what_the_submission_scored(single, backend, data):
    (pushed,) = single.outputs["Pusher"]["pushed_model"]
    assert pushed["metadata"]["pushed"] == 1
    destination = pushed["metadata"]["pushed_destination"]
    assert destination.startswith(os.path.join(backend.bucket, "serving"))
    records = shard_records(data, "test*.tfrec")
    model = tf.saved_model.load(destination)
    served = model.signatures["serving_default"](examples=tf.constant(records))
    names = [tf.train.Example.FromString(r).features.feature[F.IMAGE_NAME_KEY]
             .bytes_list.value[0].decode() for r in records]
    submission = os.path.join(uri(single, "SubmissionWriter", "submission"), SUBMISSION_FILE)
    with open(submission) as f:
        rows = {row["image_name"]: float(row["target"]) for row in csv.DictReader(f)}
    assert sorted(rows) == sorted(names)
    np.testing.assert_allclose([rows[n] for n in names], served["probability"].numpy()[:, 0],
                               atol=1e-5)


def test_the_data_gate_task_stops_a_run_whose_data_has_an_anomaly(single, tmp_path):
    from tensorflow_metadata.proto.v0 import anomalies_pb2

    from pipeline.results.anomalies import ANOMALIES_FILE

    (anomalies,) = single.outputs["ExampleValidator"]["anomalies"]
    tampered = {**anomalies, "name": "tampered/anomalies", "uri": str(tmp_path / "anomalies")}
    shutil.copytree(anomalies["uri"], tampered["uri"])
    found = anomalies_pb2.Anomalies()
    found.anomaly_info["age_approx"].description = "Unexpectedly large value: 240."
    with open(os.path.join(tampered["uri"], "Split-train03", ANOMALIES_FILE), "wb") as f:
        f.write(found.SerializeToString())
    with pytest.raises(TaskFailed) as failed:
        single.run("DataGate", inputs={"anomalies": [tampered]})
    assert "train03: age_approx: Unexpectedly large value: 240." in failed.value.stderr


def test_the_ensemble_variant_reuses_the_data_tasks_and_trains_one_model_per_fold(ensemble):
    assert ensemble.executed == [
        "Trainer_fold0", "Trainer_fold1", "Ensemble", "Evaluator", "ModelPackager", "Pusher"]
    # each member trains on splits of its own, so the run takes no TrainArgs
    assert "train_args" not in ensemble.spec["root"]["inputDefinitions"]["parameters"]


def test_the_ensemble_is_judged_against_the_first_runs_blessed_model(single, ensemble):
    (baseline,) = ensemble.outputs[f"{RESOLVER}-model-resolver"]["model"]
    assert baseline["name"] == single.outputs["Trainer"]["model"][0]["name"]
    (blessing,) = ensemble.outputs["Evaluator"]["blessing"]
    assert blessing["metadata"]["baseline_model_id"] == baseline["name"]
    assert blessing["metadata"]["current_model_id"] == ensemble.outputs["Ensemble"]["model"][
        0]["name"]


def test_the_ensemble_averages_its_folds_scored_out_of_fold(ensemble, data):
    from components.ensemble import OOF_AUC
    from modules.artifacts import VALIDATION_FILE

    (model,) = ensemble.outputs["Ensemble"]["model"]
    with open(os.path.join(model["uri"], VALIDATION_FILE)) as f:
        scored = json.load(f)
    assert len(scored["fold_aucs"]) == 2 and 0 <= scored[OOF_AUC] <= 1
    assert model["metadata"][OOF_AUC] == pytest.approx(scored[OOF_AUC])
    # every shard outside the evaluation fold is scored once, by the model that never saw it
    assert scored["examples"] == sum(s.count for s in list_shards(data, "train")
                                     if s.split_name not in ("train12", "train13", "train14"))
    # the fold networks, for the next run's warm start
    assert len(glob.glob(os.path.join(model["uri"], "*", "member-*.keras"))) == 2
    # the ensemble's calibration map: fitted on the members' out-of-fold scores
    from modules.calibration import fit_calibration

    labels, scores = [], []
    for fold in ("Trainer_fold0", "Trainer_fold1"):
        (member,) = ensemble.outputs[fold]["model"]
        with open(os.path.join(member["uri"], VALIDATION_FILE)) as f:
            recorded = json.load(f)
        labels, scores = labels + recorded["labels"], scores + recorded["scores"]
    fitted = fit_calibration(labels, scores)
    assert scored["calibration"]["method"] == fitted.method
    assert scored["calibration"]["temperature"] == pytest.approx(fitted.temperature)
    assert scored["calibration"]["examples"] == scored["examples"]


def test_the_pushed_ensemble_serves_as_one_model_beside_the_first(single, ensemble,
                                                                  data):
    first = single.outputs["Pusher"]["pushed_model"][0]["metadata"]["pushed_destination"]
    (pushed,) = ensemble.outputs["Pusher"]["pushed_model"]
    destination = pushed["metadata"]["pushed_destination"]
    assert sorted(os.listdir(os.path.dirname(destination))) == sorted(
        {os.path.basename(first), os.path.basename(destination)})
    records = shard_records(data, "test00-*.tfrec")[:16]
    by_example, by_image = serve_both_ways(destination, records, metadata=False)
    assert by_example.shape == (len(records), 1)
    np.testing.assert_allclose(by_image, by_example, atol=1e-5)
    with open(os.path.join(destination, CARD_DIR, "model_card.json")) as f:
        assert json.load(f)["model"]["backbone"] == "pneumonia_cnn"
