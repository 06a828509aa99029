"""The Beam stages off the DirectRunner: on Beam's portable job service (the path of the
Flink and Spark job servers) and on Beam's DaskRunner over a two-process dask.distributed
cluster, each started here; their outputs must equal the DirectRunner's. Also the
beam.runner presets' arguments, and the refusals of what cannot run."""

from __future__ import annotations

import glob
import hashlib
import os
import sys

import pytest
import tensorflow as tf
import tensorflow_data_validation as tfdv

from pipeline.beam_config import DATA_IMPORT, PIPELINE_STAGES
from pipeline.config import CONFIG_DIR, load_config
from pipeline.errors import ConfigError
from pipeline.ops.workdir import WorkDir
from pipeline.results.eval_results import load_evaluation
from pipeline.results.statistics import STATS_FILE
from tests.helpers import (BLESS_ANY, FAST_RUN, REPO, dask_cluster, dask_settings,
                           local_job_service, medtfx, portable_settings)

IMPORT_SETTINGS = ["train_shards=5", "folds=5", "eval_fold=4", "validation_fold=3",
                   "source.on_bad=quarantine"]


@pytest.fixture(scope="module")
def job_endpoint():
    with local_job_service() as endpoint:
        yield endpoint


@pytest.fixture(scope="module")
def dask_address():
    with dask_cluster(workers=2) as address:
        yield address


# ---------------------------------------------------------------- config


def test_each_runner_preset_gives_the_arguments_its_runner_needs():
    def args(*overrides: str) -> list[str]:
        return load_config(None, list(overrides)).beam.pipeline_args(*PIPELINE_STAGES)

    setup = f"--setup_file={os.path.join(REPO, 'setup.py')}"
    assert args() == ["--direct_running_mode=in_memory", "--direct_num_workers=1"]
    assert args(*portable_settings("localhost:8099")) == [
        "--runner=PortableRunner", "--job_endpoint=localhost:8099",
        "--environment_type=LOOPBACK", setup]
    assert args("beam.runner=dataflow", "beam.project=p", "beam.region=europe-west4",
                "beam.temp_location=gs://b/tmp", "beam.sdk_container_image=img") == [
        "--runner=DataflowRunner", "--project=p", "--region=europe-west4",
        "--temp_location=gs://b/tmp", "--sdk_container_image=img", setup]
    assert args("beam.runner=flink", "beam.flink_master=flink:8081") == [
        "--runner=FlinkRunner", "--flink_master=flink:8081", "--environment_type=DOCKER", setup]
    assert args("beam.runner=spark", "beam.job_endpoint=spark-js:8099", "beam.setup_file=null",
                "beam.environment_type=EXTERNAL", "beam.environment_config=localhost:50000") == [
        "--runner=PortableRunner", "--job_endpoint=spark-js:8099",
        "--environment_type=EXTERNAL", "--environment_config=localhost:50000"]
    dask_args = load_config(None, dask_settings("tcp://s:8786")).beam.pipeline_args(DATA_IMPORT)
    assert dask_args == ["--runner=apache_beam.runners.dask.dask_runner.DaskRunner",
                         "--dask_client_address=tcp://s:8786"]


@pytest.mark.parametrize("overrides, message", [
    (["beam.runner=portable"], "beam: runner portable needs job_endpoint"),
    (["beam.runner=dataflow", "beam.project=p"], "needs region and temp_location"),
    (["beam.runner=dataflow", "beam.project=p", "beam.region=r", "beam.temp_location=/t"],
     "temp_location '/t': Dataflow needs gs://"),
    (["beam.runner=spark", "beam.spark_master_url=spark://m:7077",
      "beam.environment_type=LOOPBACK"], "LOOPBACK runs workers in the submitting process"),
    (["beam.runner=flink", "beam.flink_master=m:8081", "beam.environment_type=EXTERNAL"],
     "environment_type EXTERNAL needs environment_config"),
    (["beam.runner=samza"], "beam: runner: Input should be"),
])
def test_a_runner_without_what_it_needs_is_refused_at_load(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, overrides)


def test_the_pipeline_stages_are_refused_on_dask_naming_stage_and_runner():
    config = load_config(None, dask_settings("tcp://s:8786"))
    with pytest.raises(ConfigError) as refused:
        config.beam.pipeline_args(*PIPELINE_STAGES)
    assert str(refused.value).startswith(
        "beam.runner=dask: ImportExampleGen cannot run on it: Beam's DaskRunner (2.77) does "
        "not translate beam.io.Read")


# ---------------------------------------------------------------- medtfx data import


@pytest.fixture(scope="module")
def kermany(tmp_path_factory) -> str:
    """A small Kermany-layout release with one image that does not decode."""
    from pipeline.data.synth_layouts import LayoutSpec, generate_layout

    root = str(tmp_path_factory.mktemp("kermany") / "data")
    generate_layout(root, LayoutSpec("pneumonia", images=40, size=32, seed=3))
    bad = sorted(glob.glob(os.path.join(root, "chest_xray", "train", "NORMAL", "*.jpeg")))[0]
    with open(bad, "wb") as f:
        f.write(b"not an image")
    return root


def imported(root: str, out: str, *overrides: str) -> dict[str, str]:
    """`medtfx data import` of `root` on the runner the overrides name: a digest of each
    file written, the quarantine list included."""
    from pipeline.data.importer import import_dataset

    config = load_config(os.path.join(CONFIG_DIR, "pneumonia.yaml"),
                         [*IMPORT_SETTINGS, *overrides])
    import_dataset(root, out, config.source, config.task, config.split_plan, config.limits,
                   config.beam.pipeline_args(DATA_IMPORT))
    return {os.path.relpath(os.path.join(folder, name), out):
            hashlib.sha256(open(os.path.join(folder, name), "rb").read()).hexdigest()
            for folder, _, names in os.walk(out) for name in names}


@pytest.fixture(scope="module")
def direct_import(kermany, tmp_path_factory) -> dict[str, str]:
    return imported(kermany, str(tmp_path_factory.mktemp("direct") / "shards"))


@pytest.mark.slow
def test_data_import_on_the_portable_job_service_writes_the_direct_runners_bytes(
        kermany, direct_import, job_endpoint, tmp_path):
    assert any(name.startswith("train04-") for name in direct_import)
    assert len(direct_import) == 7  # five shards, the manifest, the quarantine list
    on_portable = imported(kermany, str(tmp_path / "shards"), *portable_settings(job_endpoint))
    assert on_portable == direct_import


@pytest.mark.slow
def test_data_import_on_dask_writes_the_direct_runners_bytes(kermany, direct_import,
                                                             dask_address, tmp_path):
    on_dask = imported(kermany, str(tmp_path / "shards"), *dask_settings(dask_address))
    assert on_dask == direct_import


@pytest.mark.slow
def test_dask_still_cannot_read_the_examples_the_pipeline_stages_read(dask_address, tmp_path):
    """Why the config refuses them: the first read of TFRecords, as ImportExampleGen's
    executor and every tfx-bsl reader do it (beam.io.ReadFromTFRecord)."""
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    path = str(tmp_path / "records.tfrec")
    with tf.io.TFRecordWriter(path) as writer:
        writer.write(b"record")
    options = PipelineOptions(load_config(None, dask_settings(dask_address)).beam.pipeline_args())
    with pytest.raises(AttributeError, match="'NoneType' object has no attribute 'map'"):
        with beam.Pipeline(options=options) as pipeline:
            _ = pipeline | beam.io.ReadFromTFRecord(path) | beam.Map(len)


# ---------------------------------------------------------------- the pipeline


@pytest.fixture(scope="module")
def portable_run(tiny_data, job_endpoint, tmp_path_factory) -> dict:
    """The whole pipeline, as a user runs it, with every Beam stage on the job service."""
    work = tmp_path_factory.mktemp("portable") / "work"
    overrides = [arg for o in portable_settings(job_endpoint) for arg in ("--set", o)]
    result = medtfx("run", "--data-root", tiny_data, "--work-dir", str(work), *FAST_RUN,
                    *BLESS_ANY, *overrides)
    assert result.returncode == 0, result.stdout + result.stderr
    return {"work": WorkDir(str(work)), "stdout": result.stdout}


def outputs(work: WorkDir, component: str, name: str) -> list[str]:
    """The output folders of a component's executions, oldest first."""
    return sorted(glob.glob(os.path.join(work.pipeline_root, component, name, "*")),
                  key=lambda path: int(os.path.basename(path)))


def shard_counts(data_root: str) -> dict[str, int]:
    """Records per labelled shard, from the file names (trainNN-COUNT.tfrec)."""
    return {name.split("-")[0]: int(name.split("-")[1].split(".")[0])
            for name in os.listdir(data_root) if name.startswith("train")}


@pytest.mark.slow
def test_pipeline_on_the_portable_job_service_is_blessed_and_pushed(portable_run):
    assert "BLESSED" in portable_run["stdout"]
    assert os.listdir(portable_run["work"].serving)


@pytest.mark.slow
def test_portable_import_and_statistics_count_every_record_of_every_split(portable_run,
                                                                          tiny_data):
    work, expected = portable_run["work"], shard_counts(tiny_data)
    (examples,) = outputs(work, "ImportExampleGen", "examples")
    (statistics,) = outputs(work, "StatisticsGen", "statistics")
    for split, count in expected.items():
        records = tf.data.TFRecordDataset(
            glob.glob(os.path.join(examples, f"Split-{split}", "*")), compression_type="GZIP")
        assert sum(1 for _ in records) == count, split
        stats = tfdv.load_stats_binary(os.path.join(statistics, f"Split-{split}", STATS_FILE))
        assert stats.datasets[0].num_examples == count, split
    (graph,) = outputs(work, "Transform", "transform_graph")
    assert os.path.isdir(os.path.join(graph, "transform_fn"))


@pytest.mark.slow
def test_portable_evaluation_equals_the_direct_runners_on_the_same_model(portable_run,
                                                                         tiny_data, monkeypatch):
    """The Evaluator again, alone and on the DirectRunner, over the portable run's model."""
    # TFX's Beam executors parse sys.argv and the Beam arguments as absl flags: pytest's own
    # arguments (-v) must not be among them.
    monkeypatch.setattr(sys, "argv", sys.argv[:1])
    from tfx.orchestration.local.local_dag_runner import LocalDagRunner
    from tfx.orchestration.pipeline import RunOptions

    from pipeline.local_runner import build_local_pipeline

    work = portable_run["work"]
    settings = [arg for arg in FAST_RUN + BLESS_ANY if arg != "--set"]
    config = load_config(None, [*settings, "enable_cache=false"])
    LocalDagRunner().run(build_local_pipeline(config, tiny_data, work),
                         run_options=RunOptions(from_nodes=["Evaluator"], to_nodes=["Evaluator"]))
    on_portable, on_direct = (load_evaluation(uri, config.task, 1, 1)
                              for uri in outputs(work, "Evaluator", "evaluation"))
    held_out = sum(count for split, count in shard_counts(tiny_data).items()
                   if split in ("train12", "train13", "train14"))
    assert on_portable["overall"].metrics["example_count"] == held_out
    assert list(on_portable) == list(on_direct)
    for name, result in on_direct.items():
        assert on_portable[name].metrics == pytest.approx(result.metrics), name
