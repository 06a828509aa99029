"""The run use case: the data root (the sample, generated on first use, or a published
layout imported first), the checks of the backbone and the data, the local run, and the
summary written and printed."""

from __future__ import annotations

import os

from modules.errors import MedtfxError
from pipeline.config import PipelineConfig
from pipeline.core.console import Console
from pipeline.core.exits import EXIT_NOT_PUSHED
from pipeline.core.lock import FolderLock
from pipeline.core.workdir import WorkDir

RUN_LOCK = ".medtfx-run.lock"


def run(config: PipelineConfig, data_root: str | None, work: WorkDir, console: Console,
        strict: bool = False) -> int:
    """`medtfx run`: on `data_root`, or the sample when None."""
    data_root = os.path.abspath(data_root or sample_data(work, console, config))
    if config.source.imported:
        from pipeline.data.importer import imported

        data_root = imported(data_root, work.imports, config, console.say)
    return run_pipeline(config, data_root, work, console, strict)


def run_pipeline(config: PipelineConfig, data_root: str, work: WorkDir, console: Console,
                 strict: bool = False) -> int:
    """Checks the backbone and the data (the newest span, with spans), runs every
    component, and writes and prints the summary; returns 0, or with `strict`
    EXIT_NOT_PUSHED when no model was pushed. A second run on the same work dir is
    refused while one is running."""
    with FolderLock(work.path(), RUN_LOCK, "run"):  # one run per work dir
        return _checked_run(config, data_root, work, console, strict)


def _checked_run(config: PipelineConfig, data_root: str, work: WorkDir, console: Console,
                 strict: bool) -> int:
    from modules.model import validate_backbone
    from pipeline.config import with_scoring_resolved
    from pipeline.data.input_checks import check_data_root, check_test_shards
    from pipeline.data.spans import latest_span_dir

    validate_backbone(config.trainer.backbone, config.trainer.weights)
    data_dir = latest_span_dir(data_root) if config.data.spans else data_root
    data = check_data_root(data_dir, config.data.train_shards, config.limits,
                           work.input_check_cache)
    console.say(f"medtfx: {len(data.shards)} train shards, {data.examples} examples in "
                f"{data.data_root}")
    console.say(f"medtfx: {config.split_plan.describe()}")
    tests = (check_test_shards(data_root, config.limits, work.input_check_cache)
             if config.scoring.test_shards is not False else ())
    config = with_scoring_resolved(config, len(tests))
    if config.scoring.test_shards:
        console.say(f"medtfx: a blessed model scores {len(tests)} test shards, "
                    f"{sum(s.count for s in tests)} examples")

    from pipeline.local_runner import run_local  # imports TFX: only for good input
    from pipeline.ops.summary import record_run, summary_lines

    run_local(config, data_root, work, console)
    summary = record_run(config, data.data_root, work)
    for line in summary_lines(summary):
        console.say(line)
    console.say(f"medtfx: summary in {work.summary}")
    return EXIT_NOT_PUSHED if strict and not summary["pushed_model"] else 0


def sample_data(work: WorkDir, console: Console, config: PipelineConfig) -> str:
    """The sample dataset under the work dir, generated on first use: melanoma shards, or
    for a task read from a published layout, a small dataset in that layout."""
    from pipeline.sample.synth import MANIFEST, SynthSpec, generate
    from pipeline.sample.layouts import TASKS, LayoutSpec, generate_layout

    if config.source.imported:
        if config.task.name not in TASKS:
            raise MedtfxError(f"no sample dataset for task {config.task.name!r}: give "
                              "--data-root")
        folder = work.path(f"sample-{config.task.name}")
        if not os.path.isdir(folder):
            console.say(f"medtfx: generating a sample {config.task.name} dataset in {folder}")
            generate_layout(folder, LayoutSpec(config.task.name))
        return folder
    if not os.path.exists(os.path.join(work.sample_data, MANIFEST)):
        spec = SynthSpec()
        console.say(f"medtfx: generating the sample dataset ({spec.images} images, "
                    f"{spec.size} px) in {work.sample_data}")
        generate(work.sample_data, spec)
    return work.sample_data
