"""A pipeline run's components against their floors: per component its seconds, the images
and MB of the shards it reads and how fast, its peak memory (PSS of the run's process tree
while it ran), what it wrote (its output artifacts on disk), and the same for its floor,
measured in one process on the files the pipeline wrote (tests/benchmarks/floors.py)."""

from __future__ import annotations

import json
import os

from pipeline.config import PipelineConfig
from pipeline.sample.synth import MANIFEST
from tests.benchmarks.floors import (Floor, copy_records, evaluate, measure_floors,
                                     parse_records, score_examples, split_files,
                                     transform_images)
from tests.benchmarks.measures import row
from tests.benchmarks.runs import PipelineRun

IN_PLACE = "Using the in-place Transform"  # TFX's log line when Transform reads no data


def shard_reads(release: str, config: PipelineConfig, transform_reads: bool) -> dict[str, dict]:
    """What each component reads: its source shards' files, images, MB and kind."""
    with open(os.path.join(release, MANIFEST)) as f:
        manifest = json.load(f)
    shards = {kind: [(os.path.join(release, s["file"]), s["images"]) for s in manifest[kind]]
              for kind in ("train", "test")}
    plan = config.split_plan

    def of(kind: str, indices=None) -> dict:
        chosen = [shards[kind][i] for i in indices] if indices is not None else shards[kind]
        return {"kind": kind, "files": [path for path, _ in chosen],
                "images": sum(n for _, n in chosen),
                "mb": sum(os.path.getsize(path) for path, _ in chosen) / 1e6}

    reads = {"ImportExampleGen": of("train"), "StatisticsGen": of("train"),
             # run_fn counts the training fold's labels, then takes its few steps
             "Trainer": of("train", plan.train), "Evaluator": of("train", plan.evaluation),
             "TestExampleGen": of("test"), "TestStatisticsGen": of("test"),
             "BulkInferrer": of("test")}
    if transform_reads:
        reads["Transform"] = of("train", plan.train)
    return reads


def floor_list(run: PipelineRun, release: str, config: PipelineConfig, work: str) -> list[Floor]:
    """The floors of the components that have one, on the files the pipeline wrote; none
    when the run stopped before the Trainer, the test shards' when it read them."""
    done = set(run.seconds) - set(run.failed)
    if not {"ImportExampleGen", "Transform", "Trainer"} <= done:
        return []
    examples = run.output_uri("ImportExampleGen", "Examples")
    graph = run.output_uri("Transform", "TransformGraph")
    serving = os.path.join(run.output_uri("Trainer", "Model"), "Format-Serving")
    plan, sources = config.split_plan, shard_reads(release, config, True)
    # The predict floors score batches of the size their component's model calls take.
    evaluator_batch, scoring_batch = config.evaluation.max_batch, config.scoring.max_batch
    floors = [
        ("ImportExampleGen", copy_records, (sources["ImportExampleGen"]["files"],
                                            os.path.join(work, "copy-train"))),
        ("StatisticsGen", parse_records, (split_files(examples), graph)),
        ("Transform", transform_images, (split_files(examples, plan.names(plan.train)),
                                         graph, scoring_batch)),
        ("Evaluator", evaluate, (serving, split_files(examples, plan.names(plan.evaluation)),
                                 evaluator_batch, config.task, config.evaluation.slices))]
    if "TestExampleGen" in done:
        test = split_files(run.output_uri("TestExampleGen", "Examples"))
        floors += [("TestExampleGen", copy_records, (sources["TestExampleGen"]["files"],
                                                     os.path.join(work, "copy-test"))),
                   ("TestStatisticsGen", parse_records, (test, graph)),
                   ("BulkInferrer", score_examples, (serving, test, scoring_batch))]
    return floors


def transform_reads_data(run: PipelineRun) -> bool:
    """False when TFX ran Transform in place: no analyzers, no statistics, nothing
    materialised, so it wrote the graph without reading an example."""
    with open(os.path.join(run.work, "pipeline.log"), errors="replace") as f:
        return not any(IN_PLACE in line for line in f)


def figures(run: PipelineRun, reads: dict[str, dict], floors: dict[str, dict]) -> dict:
    """Per component: seconds, what it read and how fast, peak memory, MB written, and its
    floor's seconds, peak and MB written."""
    out = {}
    for name, seconds in run.seconds.items():
        read = reads.get(name, {"kind": None, "images": 0, "mb": 0.0})
        floor = {key: value for key, value in floors.get(name, {}).items()
                 if key not in ("name", "start", "end", "written")}
        if "written" in floors.get(name, {}):
            floor["written_mb"] = floors[name]["written"] / 1e6
        rate = read["images"] and seconds
        out[name] = {
            "seconds": seconds, "kind": read["kind"], "images": read["images"],
            "mb": read["mb"], "images_per_s": read["images"] / seconds if rate else None,
            "mb_per_s": read["mb"] / seconds if rate else None,
            "peak_mib": run.peak_mib[name], "written_mb": run.written_bytes(name) / 1e6,
            "floor": floor or None, "failed": name in run.failed}
    return out


def component_report(run: PipelineRun, release: str, config: PipelineConfig, label: str,
                     work: str) -> dict:
    """A pipeline run on `release`: its floors measured (in `work`), and every component's
    figures against its floor. The normal bench reports its 64 and 512 px runs so too."""
    floors = floor_list(run, release, config, os.path.join(work, "out"))
    floors = measure_floors(floors, work) if floors else {}
    reads_data = transform_reads_data(run)
    if not reads_data and "Transform" in floors:  # the decode is kept; the floor is nothing
        floors["Transform"].update(decode_seconds=floors["Transform"]["seconds"],
                                   seconds=0.0, note="Transform reads no data (in-place)")
    reads = shard_reads(release, config, reads_data)
    return {"label": label, "release": release, "wall": run.wall,
            "train_images": reads["ImportExampleGen"]["images"],
            "test_images": reads["TestExampleGen"]["images"],
            "components": figures(run, reads, floors)}


def size_rows(size: dict) -> list[dict]:
    """Each component with a floor: its seconds (until it failed, if it did) against the
    floor's."""
    return [row(f"{name} {size['label']} (s{', FAILED' if c['failed'] else ''})",
                c["seconds"], c["floor"]["seconds"], "s", "lower")
            for name, c in size["components"].items() if c["floor"]]
