"""Seconds per Beam component in each DirectRunner mode, on a generated dataset.

    .venv/bin/python -m tests.benchmarks.beam_modes [--images N] [--size PX]

Runs the pipeline's own ImportExampleGen, TaskSchema, StatisticsGen, ExampleValidator
and DataGate (a partial run, as tests/benchmarks/runs.py runs pipelines) once per mode and
prints each component's wall time from ML Metadata. Decides what pipeline/configs/*.yaml
set for `beam`; bench.py compares 1 and 2 worker processes.
"""

from __future__ import annotations

import argparse
import os
import tempfile

from tests.benchmarks.runs import make_data, run_pipeline

MODES = {"in_memory x1": ["direct_running_mode=in_memory", "direct_num_workers=1"],
         "multi_processing x all cores": ["direct_running_mode=multi_processing",
                                          "direct_num_workers=0"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=4000)
    parser.add_argument("--size", type=int, default=64)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = make_data(tmp, args.images, args.size)
        results = {mode: run_pipeline(data, os.path.join(tmp, str(i)), overrides,
                                      to_nodes=["DataGate"]).seconds
                   for i, (mode, overrides) in enumerate(MODES.items())}
    print(f"{args.images} images of {args.size} px, {os.cpu_count()} cores; seconds:")
    components = list(next(iter(results.values())))
    print(f"{'component':<20}" + "".join(f"{mode:>30}" for mode in results))
    for name in components:
        print(f"{name:<20}" + "".join(f"{r.get(name, 0):>30.1f}" for r in results.values()))


if __name__ == "__main__":
    main()
