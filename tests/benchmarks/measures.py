"""The benchmark's measurements, each against the floor of the work it does (rows of the
table tests/benchmarks/bench.py prints)."""

from __future__ import annotations

import glob
import os
import statistics
import time

import tensorflow as tf
import tensorflow_transform as tft
import tf_keras as keras
from tfx import v1 as tfx
from tfx.components.util import examples_utils, tfxio_utils
from tfx.proto import example_gen_pb2
from tfx.types import standard_artifacts

from modules import features as F
from modules.export import keras_path
from modules.inputs import input_fn
from modules.model import build_model
from modules.records import record_dataset
from modules.settings import AugmentSettings, RunSettings
from modules.signatures import predict
from modules.task import TaskSpec
from modules.trainer import compile_model
from tests.benchmarks.floors import split_files
from tests.benchmarks.runs import PipelineRun
from tests.helpers import run_transform, shard_records


def row(name: str, value: float, floor: float | None, unit: str, goal: str = "",
        **extra) -> dict:
    """One line of the table: the measured value, its floor and their ratio (none when
    there is no floor, or it is zero)."""
    return {"name": name, "value": value, "floor": floor, "unit": unit,
            "ratio": value / floor if floor else None, "goal": goal, **extra}


def transform_output(data_root: str, size: int, out_dir: str) -> tft.TFTransformOutput:
    """The Transform graph at `size` px, built by tf.Transform's Beam implementation; the
    graph has no analyzers, so a few records make the same graph as all of them."""
    run_transform(shard_records(data_root, "train*.tfrec", limit=8), size, out_dir)
    return tft.TFTransformOutput(out_dir)


def trainer_batches(files: list[str], tf_transform_output: tft.TFTransformOutput,
                    cfg: RunSettings) -> tf.data.Dataset:
    """Training batches exactly as run_fn gets them (modules/inputs.py input_fn)."""
    examples = standard_artifacts.Examples()
    examples_utils.set_payload_format(examples, example_gen_pb2.PayloadFormat.FORMAT_TF_EXAMPLE)
    factory = tfxio_utils.get_tf_dataset_factory_from_artifact([examples], ["medtfx-bench"])
    accessor = tfx.components.DataAccessor(tf_dataset_factory=factory,
                                           record_batch_factory=None,
                                           data_view_decode_fn=None)
    return input_fn(files, accessor, tf_transform_output, cfg.batch_size, training=True,
                    settings=cfg)


def bare_batches(files: list[str], size: int, batch_size: int) -> tf.data.Dataset:
    """The input pipeline's floor: read, parse the image alone, decode, resize, batch."""
    spec = {F.IMAGE_KEY: tf.io.FixedLenFeature([], tf.string)}

    def decode(record: tf.Tensor) -> tf.Tensor:
        encoded = tf.io.parse_single_example(record, spec)[F.IMAGE_KEY]
        return tf.image.resize(tf.io.decode_jpeg(encoded, channels=3), [size, size]) / 255.0

    return tf.data.TFRecordDataset(files, num_parallel_reads=tf.data.AUTOTUNE).repeat() \
        .map(decode, num_parallel_calls=tf.data.AUTOTUNE).batch(batch_size) \
        .prefetch(tf.data.AUTOTUNE)


def images_per_second(dataset: tf.data.Dataset, images: int, warmup: int = 3) -> float:
    """Images a second drawn from an endless dataset, after `warmup` batches."""
    batches = iter(dataset)
    for _ in range(warmup):
        next(batches)
    done, start = 0, time.perf_counter()
    while done < images:
        done += int(tf.nest.flatten(next(batches))[0].shape[0])
    return done / (time.perf_counter() - start)


def input_rows(data_root: str, size: int, augment: AugmentSettings, images: int,
               scratch: str, cfg: RunSettings) -> list[dict]:
    """Item 1: the Trainer's input pipeline against a bare read + decode + resize."""
    files = sorted(glob.glob(os.path.join(data_root, "train*.tfrec")))
    graph = transform_output(data_root, size, os.path.join(scratch, f"transform-{size}"))
    settings = cfg.model_copy(update={"augment": augment})
    ours = images_per_second(trainer_batches(files, graph, settings), images)
    floor = images_per_second(bare_batches(files, size, cfg.batch_size), images)
    cores = len(os.sched_getaffinity(0))
    label = f"input pipeline {size} px" + (" augmented" if augment.enabled else "")
    # Augmented, the host only draws each image's change; the training step applies it.
    goal = ">= 0.5" if augment.enabled else ">= 0.8"
    return [row(f"{label} (img/s)", ours, floor, "img/s", goal),
            row(f"{label} (img/s/core)", ours / cores, floor / cores, "img/s/core")]


class _StepTimes(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.times: list[float] = []

    def on_train_batch_end(self, batch, logs=None):
        self.times.append(time.perf_counter())


def training_rows(data_root: str, scratch: str, cfg: RunSettings,
                  steps: int) -> list[dict]:
    """Item 2: the model stepping through the real input pipeline vs in-memory tensors."""
    files = sorted(glob.glob(os.path.join(data_root, "train*.tfrec")))
    graph = tft.TFTransformOutput(os.path.join(scratch, "transform-64"))
    batches = trainer_batches(files, graph, cfg)
    model = build_model("efficientnet_b0", "none", 64, cfg.dropout,
                        batchnorm_momentum=cfg.batchnorm_momentum)
    compile_model(model, cfg, steps, 1.0)
    rates = {}
    skip = 3  # tracing and the first batches
    for name, dataset in (("memory", tf.data.Dataset.from_tensors(next(iter(batches)))
                           .repeat()), ("pipeline", batches)):
        timer = _StepTimes()
        model.fit(dataset, steps_per_epoch=skip + steps, epochs=1, verbose=0,
                  callbacks=[timer])
        rates[name] = steps * cfg.batch_size / (timer.times[-1] - timer.times[skip - 1])
    return [row("training efficientnet_b0 64 px (img/s)", rates["pipeline"], rates["memory"],
                "img/s", ">= 0.9")]


def examples_files(run: PipelineRun, splits: list[str] | None = None) -> list[str]:
    """ImportExampleGen's record files of `splits` (default: every split)."""
    return split_files(run.output_uri("ImportExampleGen", "Examples"), splits)


def orchestration_row(run: PipelineRun, images: int) -> dict:
    """Item 4: wall time not spent inside any component, as a share of the wall time."""
    inside = sum(run.seconds.values())
    return row(f"orchestration overhead, {images} images (s)", run.wall - inside, run.wall,
               "s", "<= 0.10", components_seconds=inside, process_seconds=run.process_wall)


def median_seconds(call, calls: int, warmup: int = 3) -> float:
    for _ in range(warmup):
        call()
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def serving_rows(run: PipelineRun, calls: int) -> list[dict]:
    """Item 5: the exported signatures against the bare Keras network (graph mode) on the
    same decoded images: batch-1 latency and batch-32 throughput."""
    serving_dir = os.path.join(run.output_uri("Trainer", "Model"), "Format-Serving")
    loaded = tf.saved_model.load(serving_dir)
    network = keras.models.load_model(keras_path(serving_dir))
    bare = tf.function(lambda images: network(images, training=False))
    records = tf.stack(list(record_dataset(examples_files(run)).take(32)))
    encoded = tf.io.parse_example(records, {F.IMAGE_KEY: tf.io.FixedLenFeature(
        [], tf.string)})[F.IMAGE_KEY]
    images = loaded.signatures["transform_features"](examples=records)[F.IMAGE_KEY]
    calls_by_name = {
        "serving_default": lambda n: loaded.signatures["serving_default"](
            examples=records[:n]),
        "serving_image": lambda n: loaded.signatures["serving_image"](image=encoded[:n]),
        "keras": lambda n: bare(images[:n])}
    latency = {name: median_seconds(lambda: call(1), calls, warmup=10) * 1000
               for name, call in calls_by_name.items()}
    rate = {name: 32 / median_seconds(lambda: call(32), max(3, calls // 5))
            for name, call in calls_by_name.items()}
    return [row(f"{name} batch-1 latency (ms)", latency[name], latency["keras"], "ms",
                "<= 1.2") for name in ("serving_default", "serving_image")] + [
            row(f"{name} batch-32 throughput (img/s)", rate[name], rate["keras"], "img/s")
            for name in ("serving_default", "serving_image")]


def tta_rows(run: PipelineRun, task: TaskSpec, splits: list[str],
             orientations: tuple[int, ...] = (1, 2, 4, 8)) -> list[dict]:
    """`tta`'s evidence: the trained model's AUC on the evaluation fold (`splits`) with each
    number of orientations, against AUC without TTA, and the seconds per image each costs,
    against one orientation's. The same network and Transform graph the signatures run."""
    from sklearn.metrics import roc_auc_score

    serving_dir = os.path.join(run.output_uri("Trainer", "Model"), "Format-Serving")
    loaded = tf.saved_model.load(serving_dir)
    network = keras.models.load_model(keras_path(serving_dir))
    batches = [loaded.signatures["transform_features"](examples=records)
               for records in record_dataset(examples_files(run, splits)).batch(64)]
    labels = tf.concat([tf.io.parse_example(records, {task.label.key: tf.io.FixedLenFeature(
        [], tf.int64)})[task.label.key] for records in record_dataset(
            examples_files(run, splits)).batch(256)], 0).numpy()
    measured = {}
    for tta in orientations:
        scoring = tf.function(lambda transformed, tta=tta: predict(network, transformed, tta))
        scoring(batches[0])  # traced outside the timing
        start = time.perf_counter()
        scores = tf.concat([scoring(batch)[:, -1] for batch in batches], 0).numpy()
        measured[tta] = (roc_auc_score(labels, scores),
                         (time.perf_counter() - start) / len(labels))
    return [row(f"AUC with TTA {tta}, {len(labels)} evaluation images", measured[tta][0],
                measured[1][0], "AUC", "higher", seconds_per_image=measured[tta][1],
                cost=measured[tta][1] / measured[1][1]) for tta in orientations[1:]]


# The DirectRunner on two worker processes, against its default of one process.
TWO_WORKERS = ["direct_running_mode=multi_processing", "direct_num_workers=2"]
BEAM_STAGES = ("ImportExampleGen", "TestExampleGen", "StatisticsGen", "TestStatisticsGen",
               "Transform", "Evaluator", "BulkInferrer")


def beam_rows(one: PipelineRun, two: PipelineRun, label: str) -> list[dict]:
    """Item 6: each Beam stage that ran both ways, in one process (`one`) and on two worker
    processes (`two`, TWO_WORKERS): the speed-up of the second worker (seconds in one over
    seconds on two; 2.0 is linear) and the peak memory on two against one."""
    rows = []
    for stage in (s for s in BEAM_STAGES if s in one.seconds and s in two.seconds):
        rows += [row(f"{stage} {label}, 2 workers (speed-up)", one.seconds[stage],
                     two.seconds[stage], "s", "2.0 is linear"),
                 row(f"{stage} {label}, 2 workers (peak MiB)", two.peak_mib[stage],
                     one.peak_mib[stage], "MiB", "")]
    return rows


def import_rows(scratch: str, images: int, size: int) -> list[dict]:
    """`medtfx data import` of a Kermany-layout dataset against its floor: reading every
    image file and decoding it once (the check the import cannot skip)."""
    from pipeline.config import CONFIG_DIR, load_config
    from pipeline.data.importer import import_dataset
    from pipeline.sample.layouts import LayoutSpec, generate_layout

    root = os.path.join(scratch, "kermany")
    generate_layout(root, LayoutSpec("pneumonia", images=images, size=size))
    config = load_config(os.path.join(CONFIG_DIR, "pneumonia.yaml"))
    files = sorted(glob.glob(os.path.join(root, "chest_xray", "*", "*", "*.jpeg")))
    start = time.perf_counter()
    for path in files:
        tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
    floor = time.perf_counter() - start
    start = time.perf_counter()
    import_dataset(root, os.path.join(scratch, "kermany-shards"), config.source, config.task,
                   config.split_plan, config.limits, config.beam.pipeline_args())
    seconds = time.perf_counter() - start
    return [row(f"import Kermany {size} px (img/s)", len(files) / seconds, len(files) / floor,
                "img/s", "higher")]


def monitor_rows(run: PipelineRun, config, images: int = 10_000) -> list[dict]:
    """`medtfx monitor` on `images` logged requests, against reading the same logs alone:
    the served model's answers to the evaluation fold (serving_default, one request an
    image, as PredictionLogs), repeated."""
    from tensorflow_serving.apis import prediction_log_pb2

    from pipeline.core.workdir import WorkDir
    from pipeline.monitor.request_log import read_logs
    from pipeline.monitor.verdict import monitor
    from pipeline.serving.directory import serving_versions

    work = WorkDir(run.work)
    serve = tf.saved_model.load(os.path.join(work.serving, serving_versions(work.serving)[-1]))
    answer = serve.signatures["serving_default"]
    splits = config.split_plan.names(config.split_plan.evaluation)
    logs = []
    for records in record_dataset(examples_files(run, splits)).take(1000).batch(50):
        outputs = answer(examples=records)
        for i in range(int(records.shape[0])):
            log = prediction_log_pb2.PredictionLog()
            log.predict_log.request.inputs["examples"].CopyFrom(
                tf.make_tensor_proto(records[i:i + 1]))
            for name, value in outputs.items():
                log.predict_log.response.outputs[name].CopyFrom(
                    tf.make_tensor_proto(value[i:i + 1]))
            logs.append(log.SerializeToString())
    folder = os.path.join(run.work, "monitor-logs")
    os.makedirs(folder, exist_ok=True)
    with tf.io.TFRecordWriter(os.path.join(folder, "prediction_logs-0")) as writer:
        for i in range(images):
            writer.write(logs[i % len(logs)])
    start = time.perf_counter()
    read = sum(1 for _ in read_logs(folder, config.task))
    floor = time.perf_counter() - start
    start = time.perf_counter()
    verdict = monitor(folder, work, config, None)
    seconds = time.perf_counter() - start
    return [row(f"monitor, {read} logged requests (s)", seconds, floor, "s",
                checks=len(verdict.checks), drifted=[c.name for c in verdict.drifted])]
