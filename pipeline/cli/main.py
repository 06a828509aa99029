"""The `medtfx` entry point: a small parser; each command lives in a module of its own."""

from __future__ import annotations

import argparse
import atexit
import os
import sys

from pipeline.cli import (compile_kfp, data, history, monitor, predict, report, retrain,
                          rollback, run)
from pipeline.core.process_exit import end_process

COMMANDS = (run, report, retrain, rollback, history, predict, monitor, compile_kfp, data)
# Patients' images and what is derived from them (spans, quarantine, artifacts, logs,
# serving copies) are readable by their owner and group, never by every user.
PRIVATE_UMASK = 0o027


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="medtfx", description="A production TFX pipeline for medical image "
        "classification.")
    commands = parser.add_subparsers(metavar="COMMAND", required=True)
    for command in COMMANDS:
        command.add_parser(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    os.umask(PRIVATE_UMASK)
    try:
        return args.command(args)
    except KeyboardInterrupt:
        print("medtfx: interrupted", file=sys.stderr)
        return 130


def entry() -> None:
    """The console script. Once the command has finished and the exit handlers have run,
    the process ends without the interpreter's teardown of TensorFlow and Beam, which
    takes 4-7 s after every run and does no work for the user."""
    status = main()
    atexit._run_exitfuncs()
    end_process(status)


if __name__ == "__main__":
    entry()
