"""`make bench`: how close each stage of medtfx comes to the floor of the work it does.

    python -m tests.benchmarks.bench [--quick] [--images N] [--epochs E] [--out FILE]

Every number is measured in one run on one machine and reported as a ratio against a floor
(the bare work the stage cannot avoid), so a gap is visible whatever the hardware. A ratio
is always measured / floor: for a throughput higher is better, for a time lower is better;
the goal column says which. Prints a table and writes work/bench.json (with the machine).

Pipelines run in a spawned child process (logs in its work dir), so this process can watch
their memory. Peak memory is the proportional set size (PSS, from /proc/PID/smaps_rollup
through psutil) of the child and all its descendants, summed, sampled every second (one
read of a TensorFlow process's smaps_rollup costs ~60 ms of CPU) and attributed to the
component whose ML Metadata execution window holds the sample (LocalDagRunner runs one
component at a time). PSS counts a page shared between Beam's
worker processes once; summed RSS would count TensorFlow's libraries once per worker, and
RUSAGE_CHILDREN reports only the largest single process. What the runner process still
holds from earlier components counts towards later ones: these are peaks of the run, not
of a component alone. Component seconds are ML Metadata's execution times.
"""

from __future__ import annotations

import argparse
import dataclasses
import glob
import json
import multiprocessing
import os
import platform
import shutil
import statistics
import time

import numpy as np
import psutil
import tensorflow as tf
import tensorflow_transform as tft
import tf_keras as keras
from sklearn.metrics import roc_auc_score
from tfx import v1 as tfx
from tfx.components.util import examples_utils, tfxio_utils
from tfx.orchestration.pipeline import RunOptions
from tfx.proto import example_gen_pb2
from tfx.types import standard_artifacts

from modules import features as F
from modules.export import keras_path
from modules.inputs import input_fn
from modules.model import build_model
from modules.settings import AugmentSettings, TrainerSettings
from modules.trainer import compile_model
from pipeline.config import CONFIG_DIR, load_config
from pipeline.data.synth import SynthSpec, generate
from pipeline.local_runner import build_local_pipeline
from pipeline.ops.workdir import WorkDir
from pipeline.results.mlmd import find_run, node_name, open_store, outputs_by_type
from tests.helpers import BLESS_ANY, run_transform, shard_records

CONFIG_512 = os.path.join(CONFIG_DIR, "siim-isic-512.yaml")
SAMPLE_SECONDS = 1.0  # reading smaps_rollup of a TensorFlow process takes ~60 ms
MIB = 2 ** 20


@dataclasses.dataclass(frozen=True)
class Sizes:
    """How much each measurement does; --quick only smoke-checks that all of it runs."""
    images: int = 5000  # the 64 px pipeline run (orchestration, StatisticsGen, Evaluator)
    # Settings of that run on top of default.yaml; `epochs` passes over the training shards.
    epochs: int = 2
    overrides_64: tuple[str, ...] = ()
    images_512: int = 75
    # siim-isic-512.yaml on a CPU: its EfficientNet-B6 took over 6 minutes for two training
    # steps of 4 images here (batch 32 would not fit in memory), so the Trainer's and
    # Evaluator's peaks at 512 px are B0's at batch 4; the Beam components' are the config's.
    overrides_512: tuple[str, ...] = ("weights=none", "backbone=efficientnet_b0",
                                      "batch_size=4", "train_steps=2", "epochs=1",
                                      "eval_steps=2")
    input_images: int = 2048  # per input-pipeline measurement at 64 px (1/16 at 512 px)
    train_batches: int = 30
    serving_calls: int = 50


# A pipeline's start-up and EfficientNet's tracing and export dominate tiny runs: the
# pipelines train a small CNN and skip the Evaluator's confidence intervals, and the 512 px
# run keeps Beam in one process (worker start-up took ~60 s there).
_SMOKE = ("backbone=pneumonia_cnn", "weights=none", "train_steps=2", "epochs=1",
          "eval_steps=1", "confidence_intervals=false")
QUICK = Sizes(images=300, epochs=1, overrides_64=_SMOKE, images_512=45,
              overrides_512=(*_SMOKE, "tta=1", "batch_size=2",
                   "direct_running_mode=in_memory", "direct_num_workers=1"),
              input_images=256, train_batches=4, serving_calls=10)


@dataclasses.dataclass
class PipelineRun:
    """One pipeline run: wall time, each component's seconds and peak memory (MiB)."""
    work: str
    pipeline_name: str
    wall: float  # LocalDagRunner.run
    process_wall: float  # the child process, with Python's and TensorFlow's start-up
    seconds: dict[str, float]
    peak_mib: dict[str, float]

    def output_uri(self, component: str, type_name: str) -> str:
        store = open_store(WorkDir(self.work).metadata)
        executions = [e for e in _executions(store, self.pipeline_name)
                      if node_name(store, e.id)[1] == component]
        return outputs_by_type(store, executions)[type_name][0].uri


def machine() -> dict:
    with open("/proc/cpuinfo") as f:
        models = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
    return {"cores": os.cpu_count(), "usable_cores": len(os.sched_getaffinity(0)),
            "cpu_model": models[0] if models else platform.processor(),
            "memory_gib": round(psutil.virtual_memory().total / 2 ** 30, 1),
            "python": platform.python_version(), "tensorflow": tf.__version__}


def make_data(root: str, images: int, size: int,
              malignant_share: float = SynthSpec.malignant_share) -> str:
    path = os.path.join(root, f"data-{size}px")
    generate(path, SynthSpec(images=images, size=size, malignant_share=malignant_share))
    return path


# ---------------------------------------------------------------- pipeline runs


def _pipeline_child(config_path: str | None, overrides: list[str], data_root: str,
                    work: str, to_nodes: list[str] | None) -> None:
    """In the spawned child: the pipeline as `medtfx run` builds it, output to a log file."""
    log = os.open(os.path.join(work, "pipeline.log"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    os.dup2(log, 1)
    os.dup2(log, 2)
    config = load_config(config_path, [*overrides, "enable_cache=false"])
    pipeline = build_local_pipeline(config, data_root, WorkDir(work))
    start = time.time()
    tfx.orchestration.LocalDagRunner().run(
        pipeline, run_options=RunOptions(to_nodes=to_nodes) if to_nodes else None)
    with open(os.path.join(work, "wall.json"), "w") as f:
        json.dump({"wall": time.time() - start, "pipeline_name": config.pipeline_name}, f)


def _tree_pss(process: psutil.Process) -> int:
    """PSS of a process and its descendants, in bytes; those that exit meanwhile count 0."""
    total = 0
    for member in [process, *process.children(recursive=True)]:
        try:
            total += member.memory_full_info().pss
        except psutil.NoSuchProcess:
            pass
    return total


def run_pipeline(data_root: str, work: str, overrides: list[str] = (),
                 config_path: str | None = None,
                 to_nodes: list[str] | None = None) -> PipelineRun:
    """Runs the pipeline (up to `to_nodes`) in a child, sampling its memory."""
    os.makedirs(work)
    child = multiprocessing.get_context("spawn").Process(
        target=_pipeline_child, args=(config_path, list(overrides), data_root, work, to_nodes))
    started = time.time()
    child.start()
    samples = []
    try:
        watched = psutil.Process(child.pid)
        while child.is_alive():
            samples.append((time.time(), _tree_pss(watched)))
            time.sleep(SAMPLE_SECONDS)
    except psutil.NoSuchProcess:  # the child ended between is_alive and the sample
        pass
    child.join()
    process_wall = time.time() - started
    if child.exitcode:
        raise RuntimeError(f"pipeline run failed (exit {child.exitcode}); see "
                           f"{os.path.join(work, 'pipeline.log')}")
    with open(os.path.join(work, "wall.json")) as f:
        result = json.load(f)
    windows = component_windows(WorkDir(work).metadata, result["pipeline_name"])
    # A component shorter than the sampling interval gets the samples either side of it.
    peaks = {name: max(pss for t, pss in samples
                       if start - SAMPLE_SECONDS <= t <= end + SAMPLE_SECONDS) / MIB
             for name, (start, end) in windows.items()}
    return PipelineRun(work, result["pipeline_name"], result["wall"], process_wall,
                       {name: end - start for name, (start, end) in windows.items()}, peaks)


def _executions(store, pipeline_name: str) -> list:
    return store.get_executions_by_context(find_run(store, pipeline_name).id)


def component_windows(metadata: str, pipeline_name: str) -> dict[str, tuple[float, float]]:
    """(start, end) in epoch seconds of each component of the newest run, from ML Metadata."""
    store = open_store(metadata)
    executions = sorted(_executions(store, pipeline_name), key=lambda e: e.create_time_since_epoch)
    return {node_name(store, e.id)[1]: (e.create_time_since_epoch / 1000,
                                        e.last_update_time_since_epoch / 1000)
            for e in executions}


# ---------------------------------------------------------------- measurements


def row(name: str, value: float, floor: float, unit: str, goal: str = "", **extra) -> dict:
    """One line of the table: the measured value, its floor and their ratio."""
    return {"name": name, "value": value, "floor": floor, "unit": unit,
            "ratio": value / floor, "goal": goal, **extra}


def transform_output(data_root: str, size: int, out_dir: str) -> tft.TFTransformOutput:
    """The Transform graph at `size` px, built by tf.Transform's Beam implementation; the
    graph has no analyzers, so a few records make the same graph as all of them."""
    run_transform(shard_records(data_root, "train*.tfrec", limit=8), size, out_dir)
    return tft.TFTransformOutput(out_dir)


def trainer_batches(files: list[str], tf_transform_output: tft.TFTransformOutput,
                    cfg: TrainerSettings) -> tf.data.Dataset:
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
               scratch: str, cfg: TrainerSettings) -> list[dict]:
    """Item 1: the Trainer's input pipeline against a bare read + decode + resize."""
    files = sorted(glob.glob(os.path.join(data_root, "train*.tfrec")))
    graph = transform_output(data_root, size, os.path.join(scratch, f"transform-{size}"))
    settings = cfg.model_copy(update={"augment": augment})
    ours = images_per_second(trainer_batches(files, graph, settings), images)
    floor = images_per_second(bare_batches(files, size, cfg.batch_size), images)
    cores = len(os.sched_getaffinity(0))
    label = f"input pipeline {size} px" + (" augmented" if augment.enabled else "")
    return [row(f"{label} (img/s)", ours, floor, "img/s", ">= 0.8"),
            row(f"{label} (img/s/core)", ours / cores, floor / cores, "img/s/core")]


class _StepTimes(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.times: list[float] = []

    def on_train_batch_end(self, batch, logs=None):
        self.times.append(time.perf_counter())


def training_rows(data_root: str, scratch: str, cfg: TrainerSettings,
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
    """ImportExampleGen's gzipped records of `splits` (default: every split)."""
    uri = run.output_uri("ImportExampleGen", "Examples")
    return sorted(f for split in (splits or ["*"])
                  for f in glob.glob(os.path.join(uri, f"Split-{split}", "*.gz")))


def read_seconds(files: list[str], spec: dict) -> float:
    """StatisticsGen's floor: read and parse every record."""
    start = time.perf_counter()
    for _ in tf.data.TFRecordDataset(files, "GZIP", num_parallel_reads=tf.data.AUTOTUNE) \
            .batch(256).map(lambda r: tf.io.parse_example(r, spec)):
        pass
    return time.perf_counter() - start


def slice_aucs(columns: dict[str, np.ndarray], scores: np.ndarray, slices: list[list[str]],
               age_buckets: list[int]) -> dict[str, float]:
    """AUC overall and on every slice with both classes, as the Evaluator slices."""
    labels = columns[F.LABEL_KEY]
    ages = columns[F.AGE_KEY]
    keys = {**columns, F.AGE_BUCKET_KEY: np.where(
        ages < 0, F.MISSING, np.searchsorted(sorted(age_buckets), ages, side="right"))}
    aucs = {"overall": roc_auc_score(labels, scores)}
    for family in slices:
        values = np.stack([keys[key] for key in family], axis=1)
        for value in np.unique(values, axis=0):
            mask = (values == value).all(axis=1)
            if 0 < labels[mask].sum() < mask.sum():
                aucs[f"{family}={value.tolist()}"] = roc_auc_score(labels[mask], scores[mask])
    return aucs


def evaluator_floor_seconds(run: PipelineRun, files: list[str], config) -> float:
    """The Evaluator's floor: load the model, read, transform, predict, AUC per slice."""
    start = time.perf_counter()
    graph = tft.TFTransformOutput(run.output_uri("Transform", "TransformGraph"))
    layer = graph.transform_features_layer()
    network = keras.models.load_model(keras_path(os.path.join(
        run.output_uri("Trainer", "Model"), "Format-Serving")))
    raw = tf.data.TFRecordDataset(files, "GZIP").batch(256) \
        .map(lambda r: tf.io.parse_example(r, graph.raw_feature_spec()))
    scores = network.predict(raw.map(layer), verbose=0).ravel()
    keys = [F.LABEL_KEY, F.AGE_KEY, *F.METADATA_RAW_KEYS]
    columns = {key: np.concatenate([batch[key].numpy().ravel() for batch in raw])
               for key in keys}
    slice_aucs(columns, scores, config.evaluation.slices, config.evaluation.age_buckets)
    return time.perf_counter() - start


def component_rows(run: PipelineRun, config) -> list[dict]:
    """Item 3: StatisticsGen and the Evaluator (ML Metadata seconds) against their floors."""
    graph = tft.TFTransformOutput(run.output_uri("Transform", "TransformGraph"))
    evaluation = examples_files(run, config.split_plan.names(config.split_plan.evaluation))
    return [row("StatisticsGen vs read+parse (s)", run.seconds["StatisticsGen"],
                read_seconds(examples_files(run), graph.raw_feature_spec()), "s"),
            row("Evaluator vs predict+AUCs (s)", run.seconds["Evaluator"],
                evaluator_floor_seconds(run, evaluation, config), "s")]


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
    records = tf.stack(list(tf.data.TFRecordDataset(examples_files(run), "GZIP").take(32)))
    encoded = tf.io.parse_example(records, {F.IMAGE_KEY: tf.io.FixedLenFeature(
        [], tf.string)})[F.IMAGE_KEY]
    images = loaded.signatures["transform_features"](examples=records)[F.IMAGE_KEY]
    calls_by_name = {
        "serving_default": lambda n: loaded.signatures["serving_default"](
            examples=records[:n]),
        "serving_image": lambda n: loaded.signatures["serving_image"](image=encoded[:n]),
        "keras": lambda n: bare(images[:n])}
    latency = {name: median_seconds(lambda: call(1), calls) * 1000
               for name, call in calls_by_name.items()}
    rate = {name: 32 / median_seconds(lambda: call(32), max(3, calls // 5))
            for name, call in calls_by_name.items()}
    return [row(f"{name} batch-1 latency (ms)", latency[name], latency["keras"], "ms",
                "<= 1.2") for name in ("serving_default", "serving_image")] + [
            row(f"{name} batch-32 throughput (img/s)", rate[name], rate["keras"], "img/s")
            for name in ("serving_default", "serving_image")]


def beam_rows(runs: dict[int, PipelineRun]) -> list[dict]:
    """Item 6: Beam components on 1 and 2 DirectRunner worker processes (speed-up as
    seconds on 1 over seconds on 2; 2.0 is linear)."""
    return [row(f"{component} s, 1 vs 2 workers (speed-up)", runs[1].seconds[component],
                runs[2].seconds[component], "s", "2.0 is linear")
            for component in ("ImportExampleGen", "StatisticsGen")]


# ---------------------------------------------------------------- the run


def measure(sizes: Sizes, scratch: str) -> dict:
    """Every measurement, in the order that keeps each one alone on the machine."""
    data_64 = make_data(scratch, sizes.images, 64)
    # A few dozen images: at 10% malignant the evaluation fold can hold none, and
    # ModelPackager then (rightly) fails the run.
    data_512 = make_data(scratch, sizes.images_512, 512, malignant_share=0.3)
    config = load_config(None)
    cfg = config.trainer
    rows = [*input_rows(data_64, 64, AugmentSettings(enabled=False),
                        sizes.input_images, scratch, cfg),
            *input_rows(data_512, 512, AugmentSettings(),
                        max(32, sizes.input_images // 16), scratch, cfg),
            *training_rows(data_64, scratch, cfg, sizes.train_batches)]
    run_64 = run_pipeline(data_64, os.path.join(scratch, "run-64"),
                          [f"epochs={sizes.epochs}", *sizes.overrides_64, *BLESS_ANY[1::2]])
    rows += [*component_rows(run_64, config), orchestration_row(run_64, sizes.images),
             *serving_rows(run_64, sizes.serving_calls)]
    beam = {workers: run_pipeline(
        data_64, os.path.join(scratch, f"beam-{workers}"),
        ["direct_running_mode=multi_processing", f"direct_num_workers={workers}"],
        to_nodes=["DataGate"]) for workers in (1, 2)}
    rows += beam_rows(beam)
    run_512 = run_pipeline(data_512, os.path.join(scratch, "run-512"),
                           [*sizes.overrides_512, *BLESS_ANY[1::2]], CONFIG_512)
    runs = {"64 px": run_64, "512 px": run_512,
            **{f"64 px, Beam x{n}": run for n, run in beam.items()}}
    return {"rows": rows,
            "components": {name: {"wall": run.wall, "seconds": run.seconds,
                                  "peak_mib": run.peak_mib} for name, run in runs.items()}}


def print_report(report: dict) -> None:
    m = report["machine"]
    print(f"medtfx bench ({report['mode']}): {m['usable_cores']} of {m['cores']} cores, "
          f"{m['cpu_model']}, {m['memory_gib']} GiB; {report['seconds']:.0f} s")
    print(f"{'measure':<48}{'measured':>11}{'against':>11}{'ratio':>8}  goal")
    for r in report["rows"]:
        print(f"{r['name']:<48}{r['value']:>11.4g}{r['floor']:>11.4g}{r['ratio']:>8.2f}"
              f"  {r['goal']}")
    runs = report["components"]
    print(f"\n{'component: seconds / peak PSS MiB':<34}"
          + "".join(f"{name:>22}" for name in runs))
    for component in dict.fromkeys(c for run in runs.values() for c in run["seconds"]):
        cells = [f"{run['seconds'][component]:.1f} / {run['peak_mib'][component]:.0f}"
                 if component in run["seconds"] else "-" for run in runs.values()]
        print(f"{component:<34}" + "".join(f"{cell:>22}" for cell in cells))
    print(f"{'pipeline wall (s)':<34}" + "".join(f"{run['wall']:>22.1f}"
                                               for run in runs.values()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="tiny sizes: checks that every measurement runs (~3 min)")
    parser.add_argument("--images", type=int, default=Sizes.images,
                        help="images of the 64 px pipeline run (not with --quick)")
    parser.add_argument("--epochs", type=int, default=Sizes.epochs,
                        help="training epochs of that run (not with --quick)")
    parser.add_argument("--out", default=os.path.join("work", "bench.json"))
    args = parser.parse_args()
    sizes = QUICK if args.quick else Sizes(images=args.images, epochs=args.epochs)
    # Kept after the run: each pipeline's log and artifacts, for a number that looks wrong.
    scratch = os.path.abspath(os.path.join(os.path.dirname(args.out) or ".", "bench"))
    if os.path.isdir(scratch):
        shutil.rmtree(scratch)
    os.makedirs(scratch)
    start = time.time()
    report = {"mode": "quick" if args.quick else "full", "machine": machine(),
              "sizes": dataclasses.asdict(sizes), **measure(sizes, scratch),
              "scratch": scratch}
    report["seconds"] = time.time() - start
    print_report(report)
    with open(args.out, "w") as f:
        json.dump(report, f, indent=2)
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
