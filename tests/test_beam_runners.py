"""The Beam stages off the DirectRunner: `medtfx data import` on Beam's portable job service
(the path of the Flink and Spark job servers) and on Beam's DaskRunner over a two-process
dask.distributed cluster, each started here, must write the DirectRunner's bytes. Also the
beam.runner presets' arguments, and the refusals of what cannot run. The pipeline's own Beam
stages run on the portable job service in tests/test_kubeflow_tasks.py, as tasks of the
compiled Kubeflow pipeline."""

from __future__ import annotations

import glob
import hashlib
import os

import pytest
import tensorflow as tf

from pipeline.core.beam import DATA_IMPORT, PIPELINE_STAGES
from pipeline.config import CONFIG_DIR, load_config
from pipeline.core.errors import ConfigError
from tests.helpers import REPO, dask_cluster, dask_settings, local_job_service, portable_settings

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
    assert args() == ["--direct_running_mode=in_memory", "--direct_num_workers=1",
                      "--sdk_container_image=this-interpreter"]
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
        "beam.runner=dask: StatisticsGen cannot run on it: Beam's DaskRunner (2.77) does "
        "not translate beam.io.Read")


# ---------------------------------------------------------------- medtfx data import


@pytest.fixture(scope="module")
def kermany(tmp_path_factory) -> str:
    """A small Kermany-layout release with one image that does not decode."""
    from pipeline.sample.layouts import LayoutSpec, generate_layout

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
def test_import_example_gen_copies_the_shards_on_dask(tiny_data, dask_address, tmp_path):
    """Its executor sends only file names through Beam (Create and a map), which the
    DaskRunner translates."""
    from tfx.dsl.components.base import base_beam_executor
    from tfx.proto import example_gen_pb2
    from tfx.types import standard_artifacts
    from tfx.utils import proto_utils

    from components.example_gen import Executor

    context = base_beam_executor.BaseBeamExecutor.Context(
        beam_pipeline_args=load_config(None, dask_settings(dask_address)).beam.pipeline_args(
            "ImportExampleGen"), tmp_dir=str(tmp_path / "tmp"), unique_id="1")
    examples = standard_artifacts.Examples()
    examples.uri = str(tmp_path / "examples")
    splits = example_gen_pb2.Input(splits=[example_gen_pb2.Input.Split(
        name=f"train{i:02d}", pattern=f"train{i:02d}-*.tfrec") for i in range(15)])
    Executor(context).Do({}, {"examples": [examples]}, {
        "input_base": tiny_data, "input_config": proto_utils.proto_to_json(splits),
        "output_config": proto_utils.proto_to_json(example_gen_pb2.Output()),
        "output_data_format": example_gen_pb2.FORMAT_TF_EXAMPLE,
        "output_file_format": example_gen_pb2.FORMAT_TFRECORDS_GZIP})  # as TFX passes them
    for i in range(15):
        (shard,) = glob.glob(os.path.join(tiny_data, f"train{i:02d}-*.tfrec"))
        (copy,) = glob.glob(os.path.join(examples.uri, f"Split-train{i:02d}", "*"))
        with open(shard, "rb") as a, open(copy, "rb") as b:
            assert a.read() == b.read(), shard


@pytest.mark.slow
def test_dask_still_cannot_read_the_examples_the_pipeline_stages_read(dask_address, tmp_path):
    """Why the config refuses them: the first read of TFRecords, as every tfx-bsl reader
    does it (beam.io.ReadFromTFRecord)."""
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    path = str(tmp_path / "records.tfrec")
    with tf.io.TFRecordWriter(path) as writer:
        writer.write(b"record")
    options = PipelineOptions(load_config(None, dask_settings(dask_address)).beam.pipeline_args())
    with pytest.raises(AttributeError, match="'NoneType' object has no attribute 'map'"):
        with beam.Pipeline(options=options) as pipeline:
            _ = pipeline | beam.io.ReadFromTFRecord(path) | beam.Map(len)
