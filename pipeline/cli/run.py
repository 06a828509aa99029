"""`medtfx run`: the command line of the run use case (pipeline/ops/run.py)."""

from __future__ import annotations

import argparse

from pipeline.cli import common
from pipeline.core.console import Console
from pipeline.core.workdir import WorkDir


def add_parser(commands: argparse._SubParsersAction) -> None:
    run = commands.add_parser(
        "run", help="run the pipeline locally (LocalDagRunner, SQLite ML Metadata)",
        description="Runs the full pipeline on the local machine. Without --data-root it "
        "uses the sample dataset under the work dir, generating it when missing. Writes "
        "WORK/run_summary.json at the end.")
    common.add_config_options(run, "--set image_size=64 --set train_steps=20")
    run.add_argument("--data-root", help="directory of trainNN-COUNT.tfrec shards, or of a "
                     "dataset in the layout the config's source section names, imported "
                     "into WORK/imports first (default: a sample, generated when missing: "
                     "WORK/sample-data, or WORK/sample-TASK in the task's published layout)")
    common.add_work_dir(run, "artifacts, metadata, serving models and logs")
    common.add_strict(run)
    common.add_verbose(run)
    run.set_defaults(command=command)


def command(args: argparse.Namespace) -> int:
    config = common.load_config_or_say(args)
    if config is None:
        return common.EXIT_USAGE
    work = WorkDir(args.work_dir)

    def body(console: Console) -> int:
        from pipeline.ops.run import run  # may load TensorFlow: after the console

        return run(config, args.data_root, work, console, args.strict)

    return common.guarded(work.log_file("run", common.stamp()), args.verbose, body)
