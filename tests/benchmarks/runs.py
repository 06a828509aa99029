"""Pipeline runs (and other measured work) for the benchmark: each in a spawned child process
whose memory this process samples, with a line as each step finishes (see
tests/benchmarks/bench.py for how peaks are measured)."""

from __future__ import annotations

import dataclasses
import json
import multiprocessing
import os
import platform
import shutil
import time
from typing import Callable

import psutil
import tensorflow as tf
from ml_metadata import errors as mlmd_errors
from ml_metadata.proto import metadata_store_pb2
from tfx import v1 as tfx
from tfx.orchestration.pipeline import Pipeline, RunOptions

from pipeline.config import CONFIG_DIR, PipelineConfig, load_config
from pipeline.local_runner import build_local_pipeline
from pipeline.core.workdir import WorkDir
from pipeline.results.mlmd import find_run, node_name, open_store, outputs_by_type

SAMPLE_SECONDS = 1.0  # reading smaps_rollup of a TensorFlow process takes ~60 ms
POLL_SAMPLES = 5  # how often (in samples) the parent asks what has finished
MIB = 2 ** 20
RUN_FILE = "run.json"  # the child's pipeline name, and its wall time once it is done
FINISHED = (metadata_store_pb2.Execution.COMPLETE, metadata_store_pb2.Execution.CACHED)
Builder = Callable[[PipelineConfig, str, WorkDir], Pipeline]

CONFIG_512 = os.path.join(CONFIG_DIR, "siim-isic-512.yaml")


@dataclasses.dataclass
class PipelineRun:
    """One pipeline run: wall time, each component's seconds and peak memory (MiB)."""
    work: str
    pipeline_name: str
    wall: float  # LocalDagRunner.run
    process_wall: float  # the child process, with Python's and TensorFlow's start-up
    seconds: dict[str, float]
    peak_mib: dict[str, float]
    failed: list[str] = dataclasses.field(default_factory=list)  # seconds: until it stopped

    def outputs(self, component: str) -> dict[str, list]:
        """The component's output artifacts (ML Metadata's), by artifact type name."""
        store = open_store(WorkDir(self.work).metadata)
        executions = [e for e in _executions(store, self.pipeline_name)
                      if node_name(store, e.id)[1] == component]
        return outputs_by_type(store, executions)

    def summary(self) -> dict:
        return {"wall": self.wall, "seconds": self.seconds, "peak_mib": self.peak_mib,
                "failed": self.failed}

    def output_uri(self, component: str, type_name: str) -> str:
        return self.outputs(component)[type_name][0].uri

    def written_bytes(self, component: str) -> int:
        """Size on disk of everything in the component's output artifacts."""
        return sum(tree_bytes(a.uri) for artifacts in self.outputs(component).values()
                   for a in artifacts)


def tree_bytes(path: str) -> int:
    """Bytes of the files under `path` (or of `path` itself)."""
    if os.path.isfile(path):
        return os.path.getsize(path)
    return sum(os.path.getsize(os.path.join(d, name))
               for d, _, names in os.walk(path) for name in names)


def machine() -> dict:
    with open("/proc/cpuinfo") as f:
        models = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
    return {"cores": os.cpu_count(), "usable_cores": len(os.sched_getaffinity(0)),
            "cpu_model": models[0] if models else platform.processor(),
            "memory_gib": round(psutil.virtual_memory().total / 2 ** 30, 1),
            "python": platform.python_version(), "tensorflow": tf.__version__}


# ---------------------------------------------------------------- watched children


@dataclasses.dataclass
class Watched:
    """A child's wall time, exit code and the PSS of its process tree, sampled: (epoch s,
    bytes)."""
    wall: float
    exitcode: int
    samples: list[tuple[float, int]]

    def check(self, label: str, log: str) -> None:
        if self.exitcode:
            raise RuntimeError(f"{label} failed (exit {self.exitcode}); see {log}")

    def peak_mib(self, start: float, end: float) -> float:
        """The peak within a step's window; a step shorter than the sampling interval gets
        the samples either side of it."""
        return max((pss for t, pss in self.samples
                    if start - SAMPLE_SECONDS <= t <= end + SAMPLE_SECONDS), default=0) / MIB


Windows = Callable[[], dict[str, tuple[float, float]]]


def _child(log: str, target: Callable, args: tuple) -> None:
    """In the spawned child: library output to `log`, then the work. The child and what it
    starts are the kernel's first choice when memory runs out: a run that outgrows a shared
    machine ends itself, not a neighbour's process."""
    with open("/proc/self/oom_score_adj", "w") as f:
        f.write("1000")
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    target(*args)


def _tree_pss(process: psutil.Process) -> int:
    """PSS of a process and its descendants, in bytes; those that exit meanwhile count 0."""
    total = 0
    for member in [process, *process.children(recursive=True)]:
        try:
            total += member.memory_full_info().pss
        except psutil.NoSuchProcess:
            pass
    return total


def watch(label: str, log: str, target: Callable, args: tuple, finished: Windows) -> Watched:
    """Runs target(*args) in a spawned child, sampling its memory every second; prints a
    line for each step that `finished` (polled every few seconds) reports done. The caller
    checks the exit code."""
    child = multiprocessing.get_context("spawn").Process(target=_child,
                                                         args=(log, target, args))
    started = time.time()
    child.start()
    watched, told = Watched(0.0, 0, []), set()
    try:
        process = psutil.Process(child.pid)
        while child.is_alive():
            watched.samples.append((time.time(), _tree_pss(process)))
            if len(watched.samples) % POLL_SAMPLES == 0:
                _tell(label, finished(), watched, told)
            time.sleep(SAMPLE_SECONDS)
    except psutil.NoSuchProcess:  # the child ended between is_alive and the sample
        pass
    child.join()
    watched.wall, watched.exitcode = time.time() - started, child.exitcode
    _tell(label, finished(), watched, told)
    return watched


def _tell(label: str, windows: dict[str, tuple[float, float]], watched: Watched,
          told: set[str]) -> None:
    for name, (start, end) in windows.items():
        if name not in told:
            told.add(name)
            print(_step_line(label, name, end - start, watched.peak_mib(start, end)))


def _step_line(label: str, name: str, seconds: float, peak_mib: float) -> str:
    return f"  {label}: {name:<30} {seconds:8.1f} s  peak {peak_mib:8,.0f} MiB"


# ---------------------------------------------------------------- pipeline runs


def _pipeline_child(config_path: str | None, overrides: list[str], data_root: str,
                    work: str, to_nodes: list[str] | None, build: Builder) -> None:
    """In the spawned child: the pipeline `build` makes (by default as `medtfx run` does)."""
    config = load_config(config_path, [*overrides, "enable_cache=false"])
    pipeline = build(config, data_root, WorkDir(work))
    result = {"pipeline_name": pipeline.pipeline_info.pipeline_name}
    with open(os.path.join(work, RUN_FILE), "w") as f:
        json.dump(result, f)
    start = time.time()
    tfx.orchestration.LocalDagRunner().run(
        pipeline, run_options=RunOptions(to_nodes=to_nodes) if to_nodes else None)
    with open(os.path.join(work, RUN_FILE), "w") as f:
        json.dump({**result, "wall": time.time() - start}, f)


def run_pipeline(data_root: str, work: str, overrides: list[str] = (),
                 config_path: str | None = None, to_nodes: list[str] | None = None,
                 build: Builder = build_local_pipeline, metadata_from: str | None = None,
                 keep_failed: bool = False) -> PipelineRun:
    """Runs the pipeline (up to `to_nodes`) in a child, sampling its memory, with a line per
    component as it finishes. `metadata_from`: a work dir whose ML Metadata store this run
    starts from (a copy), so that its artifacts resolve. `keep_failed`: a run that stops at
    a component (out of memory, say) is returned as far as it got, that component in
    `failed`, rather than raised."""
    os.makedirs(work)
    metadata = WorkDir(work).metadata
    if metadata_from:
        shutil.copyfile(WorkDir(metadata_from).metadata, metadata)
    label, since, log = os.path.basename(work), time.time(), os.path.join(work, "pipeline.log")
    print(f"{label}: pipeline running (log in {log})")
    watched = watch(label, log, _pipeline_child,
                    (config_path, list(overrides), data_root, work, to_nodes, build),
                    lambda: finished_components(metadata, since))
    run_file = os.path.join(work, RUN_FILE)
    if not (keep_failed and os.path.exists(run_file) and os.path.exists(metadata)):
        watched.check(label, log)
    with open(run_file) as f:
        result = json.load(f)
    windows, failed = component_windows(metadata, result["pipeline_name"], time.time())
    if watched.exitcode and not failed:  # it failed outside any component
        watched.check(label, log)
    seconds = {name: end - start for name, (start, end) in windows.items()}
    peaks = {name: watched.peak_mib(start, end) for name, (start, end) in windows.items()}
    for name in failed:
        print(_step_line(label, name, seconds[name], peaks[name])
              + f"  FAILED (exit {watched.exitcode}); see {log}")
    wall = result.get("wall", watched.wall)
    print(f"{label}: pipeline {'stopped' if failed else 'done'} after {wall:.0f} s")
    return PipelineRun(work, result["pipeline_name"], wall, watched.wall, seconds, peaks,
                       failed)


def _executions(store, pipeline_name: str) -> list:
    return store.get_executions_by_context(find_run(store, pipeline_name).id)


def component_windows(metadata: str, pipeline_name: str,
                      stopped: float) -> tuple[dict[str, tuple[float, float]], list[str]]:
    """(start, end) in epoch seconds of each component of the newest run, from ML Metadata,
    and the components that did not finish (their window ends at `stopped`)."""
    store = open_store(metadata)
    executions = _executions(store, pipeline_name)
    windows = _windows(store, executions)
    failed = [node_name(store, e.id)[1] for e in executions
              if e.last_known_state not in FINISHED]
    windows.update({name: (windows[name][0], stopped) for name in failed})
    return windows, failed


def finished_components(metadata: str, since: float) -> dict[str, tuple[float, float]]:
    """Windows of the executions started after `since` and finished so far, in a store
    another process is writing; none while the store is being created or is busy."""
    if not os.path.exists(metadata):
        return {}
    try:
        store = open_store(metadata)
        return _windows(store, [e for e in store.get_executions()
                                if e.last_known_state in FINISHED
                                and e.create_time_since_epoch / 1000 >= since])
    except mlmd_errors.StatusError:
        return {}


def _windows(store, executions: list) -> dict[str, tuple[float, float]]:
    executions = sorted(executions, key=lambda e: e.create_time_since_epoch)
    return {node_name(store, e.id)[1]: (e.create_time_since_epoch / 1000,
                                        e.last_update_time_since_epoch / 1000)
            for e in executions}
