"""Seconds per Beam component in each DirectRunner mode, on a generated dataset.

    .venv/bin/python -m tests.benchmarks.beam_modes [--images N] [--size PX]

Runs the pipeline's own ImportExampleGen, ImportSchemaGen, StatisticsGen, ExampleValidator
and DataGate (a partial run) once per mode and prints each component's wall time from ML
Metadata. Decides what pipeline/configs/*.yaml set for `beam`.
"""

from __future__ import annotations

import argparse
import os
import tempfile

from tfx import v1 as tfx
from tfx.orchestration.pipeline import RunOptions

from pipeline.config import load_config
from pipeline.data.synth import SynthSpec, generate
from pipeline.pipeline import create_pipeline
from pipeline.results.mlmd import find_run, node_name, open_store

MODES = {"in_memory x1": ["direct_running_mode=in_memory", "direct_num_workers=1"],
         "multi_processing x all cores": ["direct_running_mode=multi_processing",
                                          "direct_num_workers=0"]}


def time_mode(data_root: str, work: str, overrides: list[str]) -> dict[str, float]:
    config = load_config(None, overrides + ["enable_cache=false"])
    metadata = os.path.join(work, "metadata.sqlite")
    pipeline = create_pipeline(
        config, data_root=data_root, pipeline_root=os.path.join(work, "root"),
        serving_dir=os.path.join(work, "serving"),
        metadata_connection_config=tfx.orchestration.metadata
        .sqlite_metadata_connection_config(metadata))
    tfx.orchestration.LocalDagRunner().run(pipeline, run_options=RunOptions(
        to_nodes=["DataGate"]))
    store = open_store(metadata)
    executions = store.get_executions_by_context(find_run(store, config.pipeline_name).id)
    return {node_name(store, e.id)[1]: (e.last_update_time_since_epoch
                                        - e.create_time_since_epoch) / 1000
            for e in executions}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=4000)
    parser.add_argument("--size", type=int, default=64)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = os.path.join(tmp, "data")
        generate(data, SynthSpec(images=args.images, size=args.size))
        results = {mode: time_mode(data, os.path.join(tmp, str(i)), overrides)
                   for i, (mode, overrides) in enumerate(MODES.items())}
    print(f"{args.images} images of {args.size} px, {os.cpu_count()} cores; seconds:")
    components = list(next(iter(results.values())))
    print(f"{'component':<20}" + "".join(f"{mode:>30}" for mode in results))
    for name in components:
        print(f"{name:<20}" + "".join(f"{r.get(name, 0):>30.1f}" for r in results.values()))


if __name__ == "__main__":
    main()
