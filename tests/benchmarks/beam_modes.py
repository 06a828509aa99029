"""Seconds per Beam stage on each Beam runner, on one generated dataset.

    .venv/bin/python -m tests.benchmarks.beam_modes [--images N] [--size PX]

Runs the whole pipeline (as tests/benchmarks/runs.py runs pipelines) with the test shards
scored and a short training that is blessed whatever it scores, so that every Beam stage
runs: ImportExampleGen, StatisticsGen, Transform, the Evaluator and BulkInferrer. Then
`medtfx data import` of the same number of images in the Kermany layout. Once per runner:
the DirectRunner in one process and in two worker processes, Beam's portable job service
(LOOPBACK) and Dask on two worker processes, the last two started here. Prints each stage's
wall time (the pipeline's from ML Metadata). The pipeline stages do not run on Dask
(pipeline/core/beam.py says why): its column holds the import alone.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import tempfile
import time

from pipeline.core.beam import DATA_IMPORT, PIPELINE_STAGES
from pipeline.config import CONFIG_DIR, load_config
from pipeline.data.importer import import_dataset
from pipeline.sample.synth import SynthSpec
from pipeline.sample.layouts import LayoutSpec, generate_layout
from tests.benchmarks.data import make_data
from tests.benchmarks.runs import run_pipeline
from tests.helpers import dask_cluster, dask_settings, local_job_service, portable_settings

DIRECT = {"direct x1": ["beam.direct_running_mode=in_memory", "beam.direct_num_workers=1"],
          "direct x2": ["beam.direct_running_mode=multi_processing",
                        "beam.direct_num_workers=2"]}
IMPORT_SETTINGS = ["train_shards=5", "folds=5", "eval_fold=4", "validation_fold=3"]
# Training is not what is timed: a few steps of the small CNN, blessed whatever it scores,
# so that BulkInferrer scores the test shards.
PIPELINE_SETTINGS = ["backbone=pneumonia_cnn", "epochs=1", "train_steps=10",
                     "scoring.test_shards=true", "auc_threshold=0", "slice_auc_threshold=0",
                     "max_auc_drop=1", "max_slice_auc_drop=1", "min_specificity=null"]


def import_seconds(root: str, out: str, overrides: list[str]) -> float:
    """Wall time of `medtfx data import` of the Kermany-layout release at `root`."""
    config = load_config(os.path.join(CONFIG_DIR, "pneumonia.yaml"),
                         [*IMPORT_SETTINGS, *overrides])
    start = time.time()
    import_dataset(root, out, config.source, config.task, config.split_plan, config.limits,
                   config.beam.pipeline_args(DATA_IMPORT))
    return time.time() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=4000)
    parser.add_argument("--size", type=int, default=64)
    args = parser.parse_args()
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as services:
        data = make_data(tmp, SynthSpec(images=args.images, size=args.size))
        release = os.path.join(tmp, "kermany")
        generate_layout(release, LayoutSpec("pneumonia", images=args.images, size=args.size))
        runners = {**DIRECT, "portable": portable_settings(
            services.enter_context(local_job_service()))}
        dask = dask_settings(services.enter_context(dask_cluster(workers=2)))
        for i, (runner, overrides) in enumerate(runners.items()):
            seconds = run_pipeline(data, os.path.join(tmp, str(i)),
                                   [*PIPELINE_SETTINGS, *overrides]).seconds
            results[runner] = {stage: seconds[stage] for stage in PIPELINE_STAGES}
        for i, (runner, overrides) in enumerate({**runners, "dask x2": dask}.items()):
            results.setdefault(runner, {})[DATA_IMPORT] = import_seconds(
                release, os.path.join(tmp, f"import{i}"), overrides)
    print(f"{args.images} images of {args.size} px, {os.cpu_count()} cores; seconds:")
    stages = list(results["direct x1"])
    print(f"{'stage':<20}" + "".join(f"{runner:>12}" for runner in results))
    for name in stages:
        print(f"{name:<20}" + "".join(f"{r[name]:>12.1f}" if name in r else f"{'-':>12}"
                                      for r in results.values()))


if __name__ == "__main__":
    main()
