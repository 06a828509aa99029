"""Runs the pipeline with LocalDagRunner: adds the work-dir paths and SQLite ML Metadata,
and writes the run summary last."""

from __future__ import annotations

import os

from tfx import v1 as tfx

from pipeline.config import PipelineConfig
from pipeline.input_checks import DataSummary
from pipeline.console import ComponentProgress, Console
from pipeline.pipeline import create_pipeline, split_plan
from pipeline.summary import summarize_run
from pipeline.workdir import WorkDir, write_json


def build_local_pipeline(config: PipelineConfig, data_root: str,
                         work: WorkDir) -> tfx.dsl.Pipeline:
    return create_pipeline(
        config, data_root=os.path.abspath(data_root), pipeline_root=work.pipeline_root,
        serving_dir=work.serving,
        metadata_connection_config=tfx.orchestration.metadata
        .sqlite_metadata_connection_config(work.metadata))


def run_local(config: PipelineConfig, data: DataSummary, work: WorkDir,
              console: Console) -> int:
    """Runs every component on checked data and writes WORK/run_summary.json; returns 0."""
    data_root = data.data_root
    plan = split_plan(config)
    console.say(f"medtfx: {len(data.shards)} train shards, {data.examples} examples in "
                f"{data_root}")
    console.say(f"medtfx: {plan.describe()}")

    pipeline = build_local_pipeline(config, data_root, work)
    with ComponentProgress(console, len(pipeline.components)) as progress:
        try:
            tfx.orchestration.LocalDagRunner().run(pipeline)
        except BaseException:
            progress.interrupt()
            raise
    summary = summarize_run(work.metadata, config.pipeline_name, config.evaluation.age_buckets)
    summary = {**summary, "data_root": data_root,
               "splits": {role: plan.names(getattr(plan, role))
                          for role in ("train", "validation", "evaluation")}}
    write_json(work.summary, summary)
    print_summary(console, summary, config)
    console.say(f"medtfx: summary in {work.summary}")
    return 0


def print_summary(console: Console, summary: dict, config: PipelineConfig) -> None:
    overall = summary["metrics"].get("overall", {})
    auc = overall.get("auc")
    console.say(f"medtfx: AUC {auc:.3f} overall on {int(overall.get('example_count', 0))} "
                "held-out examples" if auc is not None else "medtfx: no evaluation metrics")
    slices = [(name, m) for name, m in summary["metrics"].items()
              if name != "overall" and m.get("auc") is not None]
    gated = [s for s in slices if _gated(s[1])]
    if gated:
        name, m = min(gated, key=lambda s: s[1]["auc"])
        console.say(f"        lowest gated slice: {name} AUC {m['auc']:.3f} "
                    f"({int(m.get('example_count', 0))} examples)")
    if summary["blessed"]:
        where = summary["pushed_model"] or "(already pushed by an earlier run)"
        console.say(f"medtfx: BLESSED; serving model: {where}")
    else:
        console.say("medtfx: NOT BLESSED; nothing pushed. Failed checks:")
        for check in summary["failed_checks"]:
            bound = ", ".join(f"{k.replace('_', ' ')} {v:g}" for k, v in check["bound"].items())
            console.say(f"        {check['metric']} on {check['slice']}: {check['value']:.3f} "
                        f"({bound})")


def _gated(metrics: dict) -> bool:
    """A slice was gated when its gate value is its AUC (small slices pass with 1.0)."""
    return metrics.get("auc_gate") == metrics.get("auc")
