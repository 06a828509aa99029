"""Runs the pipeline with LocalDagRunner: adds the work-dir paths and SQLite ML Metadata,
and writes the run summary last."""

from __future__ import annotations

import os

from tfx import v1 as tfx

from pipeline.config import PipelineConfig, to_dict
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


def run_local(config: PipelineConfig, data: DataSummary, work: WorkDir, console: Console,
              input_base: str | None = None) -> int:
    """Runs every component on checked data and writes WORK/run_summary.json; returns 0.

    `input_base` is the root holding the spans when `data` is the newest span."""
    data_root = data.data_root
    plan = split_plan(config)
    console.say(f"medtfx: {len(data.shards)} train shards, {data.examples} examples in "
                f"{data_root}")
    console.say(f"medtfx: {plan.describe()}")

    pipeline = build_local_pipeline(config, input_base or data_root, work)
    with ComponentProgress(console, len(pipeline.components)) as progress:
        try:
            tfx.orchestration.LocalDagRunner().run(pipeline)
        except BaseException:
            progress.interrupt()
            raise
    summary = summarize_run(work.metadata, config.pipeline_name, config.evaluation)
    summary = {**summary, "data_root": data_root,
               "splits": {role: plan.names(getattr(plan, role))
                          for role in ("train", "validation", "evaluation")},
               "config": to_dict(config)}
    write_json(work.summary, summary)
    print_summary(console, summary)
    console.say(f"medtfx: summary in {work.summary}")
    return 0


def _interval(metrics: dict, name: str) -> str:
    ci = metrics.get(f"{name}_ci")
    return f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else ""


def print_summary(console: Console, summary: dict) -> None:
    """A few lines: the headline metric, the operating point, the weakest slice, the verdict
    and, when not blessed, every failed check."""
    overall = summary["metrics"].get("overall", {})
    if overall.get("auc") is None:
        console.say("medtfx: no evaluation metrics")
    else:
        console.say(f"medtfx: AUC {overall['auc']:.3f}{_interval(overall, 'auc')} overall on "
                    f"{int(overall['example_count'])} held-out examples")
    if overall.get("sensitivity") is not None:
        console.say(f"        operating threshold {summary['operating_threshold']:.3f}: "
                    f"sensitivity {overall['sensitivity']:.3f}, specificity "
                    f"{overall['specificity']:.3f}")
    gated = [(name, m) for name, m in summary["metrics"].items()
             if name != "overall" and m.get("gated") and m.get("auc") is not None]
    if gated:
        name, m = min(gated, key=lambda s: s[1]["auc"])
        console.say(f"        lowest gated slice: {name} AUC {m['auc']:.3f}"
                    f"{_interval(m, 'auc')} ({int(m['example_count'])} examples)")
    for name, recorded in summary.get("training", {}).items():
        if recorded.get("oof_auc") is not None:
            console.say(f"        {name}: out-of-fold AUC {recorded['oof_auc']:.3f} over "
                        f"{recorded['examples']} examples of {len(recorded['fold_aucs'])} folds")
    if summary["blessed"]:
        console.say(f"medtfx: BLESSED; serving model: {summary['pushed_model']}")
        return
    console.say("medtfx: NOT BLESSED; nothing pushed. Failed checks:")
    for check in summary["failed_checks"]:
        console.say(f"        {check['metric']} on {check['slice']}: {check['value']:.3f} "
                    f"(must be at least {check['bound']['at_least']:g})")
