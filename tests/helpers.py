"""Helpers for tests that drive medtfx the way a user does."""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Tiny and quick: 32 px, a few steps, Beam in one process (its worker start-up would
# dominate at this size) and the small X-ray CNN. These runs test the machinery;
# tests/test_trainer_e2e.py runs EfficientNet and DenseNet through the whole pipeline.
FAST_RUN = ["--set", "image_size=32", "--set", "train_steps=6", "--set", "epochs=2",
            "--set", "batch_size=16", "--set", "backbone=pneumonia_cnn",
            "--set", "direct_running_mode=in_memory", "--set", "direct_num_workers=1"]
# Six training steps cannot make a good model; runs that test the machinery set the
# thresholds so that the outcome is known.
BLESS_ANY = ["--set", "auc_threshold=0", "--set", "slice_auc_threshold=0",
             "--set", "max_auc_drop=1", "--set", "max_slice_auc_drop=1",
             "--set", "min_specificity=null"]

# The entry modules whose code fingerprint (pipeline/core/fingerprint.py) some component carries.
FINGERPRINTED = ("modules.preprocessing", "modules.trainer", "modules.evaluation",
                 "components.data_gate", "components.model_packager",
                 "components.serving_pusher", "components.ensemble",
                 "components.statistics_gen", "components.bulk_inferrer",
                 "components.submission_writer", "components.example_gen",
                 "components.serving_validator", "components.task_schema",
                 "components.evaluator")


def require_capability(ok: bool, missing: str) -> None:
    """A test that needs something of the machine (a tmpfs mount, a network namespace):
    skipped where `missing` is missing, but failed under CI=true, where .ci/run provides it
    and a skip would drop that coverage silently."""
    if ok:
        return
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI=true and this machine lacks {missing} (.ci/run provides it)",
                    pytrace=False)
    pytest.skip(f"this machine lacks {missing}")


def medtfx(*args: str, timeout: int = 1200, wrapper: tuple[str, ...] = (),
           env: dict | None = None) -> subprocess.CompletedProcess:
    """The installed console script, as a user runs it (inside `wrapper`, e.g. unshare)."""
    command = [*wrapper, os.path.join(os.path.dirname(sys.executable), "medtfx"), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=REPO,
                          env=env)


def code_copy(root) -> dict:
    """A copy of the project's code that a test may edit, and the environment in which
    `medtfx` imports it instead of the installed one."""
    for part in ("modules", "components", "pipeline", "schema"):
        shutil.copytree(os.path.join(REPO, part), os.path.join(root, part),
                        ignore=shutil.ignore_patterns("__pycache__"))
    return {"root": str(root), "env": {**os.environ, "PYTHONPATH": str(root)}}


def load_schema():
    from google.protobuf import text_format
    from tensorflow_metadata.proto.v0 import schema_pb2

    with open(os.path.join(REPO, "schema", "melanoma.pbtxt")) as f:
        return text_format.Parse(f.read(), schema_pb2.Schema())


def shard_records(data_root: str, pattern: str, limit: int | None = None) -> list[bytes]:
    import tensorflow as tf

    paths = sorted(glob.glob(os.path.join(data_root, pattern)))
    dataset = tf.data.TFRecordDataset(paths)
    return [r.numpy() for r in (dataset.take(limit) if limit else dataset)]


def run_transform(records: list[bytes], image_size: int, out_dir: str) -> np.ndarray:
    """preprocessing_fn under tf.Transform's Beam implementation: writes the transform graph
    to `out_dir` as TFX's Transform lays it out, and returns the transformed images (in no
    particular order)."""
    import apache_beam as beam
    import tensorflow_transform.beam as tft_beam
    from tfx_bsl.public import tfxio

    from modules import features as F
    from modules.preprocessing import preprocessing_fn
    from modules.task import TaskSpec

    source = tfxio.TFExampleBeamRecord(physical_format="inmem", telemetry_descriptors=["test"],
                                       schema=load_schema())
    fn = lambda inputs: preprocessing_fn(  # noqa: E731
        inputs, {"image_size": image_size, "task": TaskSpec().model_dump()})
    images_file = os.path.join(out_dir, "images.npy")
    with beam.Pipeline() as pipeline, tft_beam.Context(temp_dir=os.path.join(out_dir, "tmp")):
        raw = pipeline | beam.Create(records) | source.BeamSource()
        (transformed, _), transform_fn = (
            (raw, source.TensorAdapterConfig())
            | tft_beam.AnalyzeAndTransformDataset(fn, output_record_batches=True))
        _ = transform_fn | tft_beam.WriteTransformFn(out_dir)
        _ = (transformed
             | beam.FlatMap(lambda batch: batch[0].column(F.IMAGE_KEY).to_pylist())
             | beam.combiners.ToList()
             | beam.Map(lambda images: np.save(images_file, np.array(images, np.float32))))
    # TFX's Transform also stores the raw schema beside the graph; run_fn reads it from there.
    os.makedirs(os.path.join(out_dir, "metadata"), exist_ok=True)
    with open(os.path.join(out_dir, "metadata", "schema.pbtxt"), "w") as f:
        f.write(str(load_schema()))
    return np.load(images_file).reshape(-1, image_size, image_size, 3)


TRAIN_SPLITS = [f"train{i:02d}" for i in range(9)]
VALIDATION_SPLITS = ["train09", "train10", "train11"]
ALL_SPLITS = [f"train{i:02d}" for i in range(15)]


def beam_context(tmp_dir: str):
    """A Beam executor's context as a run builds it, with the config's Beam arguments for
    one process (a worker's start-up would dominate at test sizes)."""
    from tfx.dsl.components.base import base_beam_executor

    from pipeline.config import load_config

    return base_beam_executor.BaseBeamExecutor.Context(
        beam_pipeline_args=load_config(None, ["direct_running_mode=in_memory",
                                              "direct_num_workers=1"]).beam.pipeline_args(),
        tmp_dir=tmp_dir, unique_id="1")


def write_examples(data_root: str, root):
    """The shards as ImportExampleGen writes them under `root`/examples (one split
    directory per shard, holding a copy of it); returns that Examples artifact."""
    from tfx.types import artifact_utils, standard_artifacts

    from components.example_gen import output_name

    for split in ALL_SPLITS:
        os.makedirs(os.path.join(root, "examples", f"Split-{split}"))
        (shard,) = glob.glob(os.path.join(data_root, f"{split}-*.tfrec"))
        shutil.copy(shard, os.path.join(root, "examples", f"Split-{split}", output_name(0, 1)))
    examples = standard_artifacts.Examples()
    examples.uri = os.path.join(root, "examples")
    examples.split_names = artifact_utils.encode_split_names(ALL_SPLITS)
    return examples


def write_trainer_inputs(data_root: str, root) -> None:
    """The Trainer's inputs under `root` as TFX lays them out: the shards as ImportExampleGen
    writes them, the 32 px transform graph of the training shards, the schema."""
    write_examples(data_root, root)
    run_transform(shard_records(data_root, "train0[0-8]-*.tfrec"), 32,
                  os.path.join(root, "transform"))
    os.makedirs(os.path.join(root, "schema"))
    shutil.copy(os.path.join(REPO, "schema", "melanoma.pbtxt"), os.path.join(root, "schema"))


def trainer_fn_args(root, overrides: list[str], base_model: str | None = None,
                    out=None):
    """(FnArgs, config) for run_fn on what write_trainer_inputs wrote under `root`, with
    its outputs under `out` (default `root`), built as the Trainer executor builds them:
    the small X-ray CNN at 32 px, 2 epochs of 2 steps of 8, then `overrides`. What the
    Trainer tests check does not depend on the backbone, and EfficientNet's build and
    export would be most of their time (every backbone is built in tests/test_model.py and
    trained through the pipeline in tests/test_trainer_e2e.py)."""
    from google.protobuf import json_format
    from tfx.components.trainer import fn_args_utils
    from tfx.proto import trainer_pb2
    from tfx.types import artifact_utils, standard_artifacts

    from pipeline.config import load_config
    from pipeline.pipeline import run_settings

    def artifact(cls, uri: str):
        made = cls()
        made.uri = uri
        return made

    examples = artifact(standard_artifacts.Examples, os.path.join(root, "examples"))
    examples.split_names = artifact_utils.encode_split_names(ALL_SPLITS)
    config = load_config(None, ["image_size=32", "batch_size=8", "epochs=2", "train_steps=4",
                                "backbone=pneumonia_cnn", *overrides])
    exec_properties = {
        "train_args": json_format.MessageToJson(
            trainer_pb2.TrainArgs(splits=TRAIN_SPLITS, num_steps=config.trainer.train_steps)),
        "eval_args": json_format.MessageToJson(trainer_pb2.EvalArgs(splits=VALIDATION_SPLITS)),
        "custom_config": run_settings(config).model_dump_json(),
    }
    inputs = {"examples": [examples],
              "transform_graph": [artifact(standard_artifacts.TransformGraph,
                                           os.path.join(root, "transform"))],
              "schema": [artifact(standard_artifacts.Schema, os.path.join(root, "schema"))]}
    if base_model:
        inputs["base_model"] = [artifact(standard_artifacts.Model, base_model)]
    out = root if out is None else out
    fn_args = fn_args_utils.get_common_fn_args(inputs, exec_properties,
                                               working_dir=os.path.join(out, "work"))
    fn_args.serving_model_dir = os.path.join(out, "model", "Format-Serving")
    fn_args.model_run_dir = os.path.join(out, "model_run")
    return fn_args, config


@contextlib.contextmanager
def local_job_service():
    """Beam's pure-Python job service in a process of its own, with the project importable;
    yields its endpoint. A LOOPBACK job runs its workers in the submitting process."""
    with socket.socket() as s:
        s.bind(("localhost", 0))
        port = s.getsockname()[1]
    service = subprocess.Popen(
        [sys.executable, "-m", "apache_beam.runners.portability.local_job_service_main",
         "--port", str(port)], env={**os.environ, "PYTHONPATH": REPO},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 60
        while socket.socket().connect_ex(("localhost", port)):
            if service.poll() is not None or time.time() > deadline:
                raise RuntimeError("Beam's job service did not start")
            time.sleep(0.5)
        yield f"localhost:{port}"
    finally:
        service.terminate()
        service.wait(30)


@contextlib.contextmanager
def dask_cluster(workers: int = 2):
    """A dask.distributed cluster of single-threaded worker processes; yields the
    scheduler's address."""
    from dask.distributed import LocalCluster

    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster:
        yield cluster.scheduler_address


def portable_settings(endpoint: str) -> list[str]:
    """Config overrides that run the Beam stages on the job service at `endpoint`."""
    return ["beam.runner=portable", f"beam.job_endpoint={endpoint}"]


def dask_settings(address: str) -> list[str]:
    """Config overrides that run the Beam stages on the Dask scheduler at `address`."""
    return ["beam.runner=dask", f"beam.dask_client_address={address}"]


def serve_both_ways(model_dir: str, records: list[bytes], metadata: bool) -> tuple:
    """Scores of the same examples through serving_default and serving_image."""
    import tensorflow as tf

    from modules import features as F
    from modules.task import TaskSpec

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


def open_in_chromium(url: str, screenshot: str, width: int = 1200):
    """Loads `url` in Debian's headless Chromium through ChromeDriver, saves a full-page
    screenshot, and returns the live driver (the caller quits it)."""
    import tempfile

    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    # The flags that keep Chromium from reaching for a network this machine does not have.
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync",
                 f"--user-data-dir={tempfile.mkdtemp(prefix='chromium-')}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    driver.set_window_size(width, 900)
    driver.get(url)
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(width, height)
    os.makedirs(os.path.dirname(screenshot), exist_ok=True)
    driver.save_screenshot(screenshot)
    return driver
