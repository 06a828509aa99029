"""`medtfx rollback`: serves an earlier pushed model again, deleting nothing."""

from __future__ import annotations

import argparse
import os

from pipeline.cli import common
from pipeline.core.console import Console
from pipeline.core.workdir import WorkDir


def add_parser(commands: argparse._SubParsersAction) -> None:
    rollback = commands.add_parser(
        "rollback", help="serve an earlier pushed model again",
        description="Makes an earlier version of the serving directory the one TF Serving "
        "serves (the highest number) by copying it to a new version; deletes nothing. "
        "medtfx-rollback.json in the new version records what it rolled back.")
    where = rollback.add_mutually_exclusive_group()
    where.add_argument("--work-dir", default="work", help="the work dir whose serving/ "
                       "directory to use (default: ./work)")
    where.add_argument("--serving-dir", help="a serving directory elsewhere")
    rollback.add_argument("--to", metavar="VERSION", help="the version to serve (default: "
                          "the one before the newest)")
    common.add_verbose(rollback)
    rollback.set_defaults(command=command)


def command(args: argparse.Namespace) -> int:
    serving = os.path.abspath(args.serving_dir or WorkDir(args.work_dir).serving)

    def body(console: Console) -> int:
        from pipeline.core.files import remove_stale_staging
        from pipeline.serving.directory import rollback, serving_versions

        for line in remove_stale_staging(serving):  # rollback's own staging would, silently
            console.say(f"medtfx: removed {line}")
        new, source = rollback(serving, args.to)
        console.say(f"medtfx: version {new} now serves the model of version {source} "
                    f"(versions: {', '.join(serving_versions(serving))})")
        return 0

    return common.guarded(common.temp_log("rollback"), args.verbose, body)
