"""Pipeline runs for the benchmark: each in a spawned child process whose memory this
process samples (see tests/benchmarks/bench.py for how peaks are measured)."""

from __future__ import annotations

import dataclasses
import json
import multiprocessing
import os
import platform
import time

import psutil
import tensorflow as tf
from tfx import v1 as tfx
from tfx.orchestration.pipeline import RunOptions

from pipeline.config import load_config
from pipeline.data.synth import SynthSpec, generate
from pipeline.local_runner import build_local_pipeline
from pipeline.ops.workdir import WorkDir
from pipeline.results.mlmd import find_run, node_name, open_store, outputs_by_type

SAMPLE_SECONDS = 1.0  # reading smaps_rollup of a TensorFlow process takes ~60 ms
MIB = 2 ** 20


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
