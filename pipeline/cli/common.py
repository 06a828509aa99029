"""What every command shares: exit codes, common options, and the one wrapper that sends
library chatter to a log file and turns an exception into one line."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
import traceback
from typing import TYPE_CHECKING, Callable

from modules.errors import MedtfxError
from pipeline.core.errors import ConfigError
from pipeline.core.exits import EXIT_FAILED, EXIT_NOT_PUSHED, EXIT_USAGE  # noqa: F401
from pipeline.core.console import Console

if TYPE_CHECKING:  # hints only: the config module is cheap, but commands load it lazily
    from pipeline.config import PipelineConfig

SHOWN_DETAILS = 10  # lines of an error's details on the terminal; all go to the log


def add_strict(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--strict", action="store_true",
                        help=f"exit {EXIT_NOT_PUSHED} when the run finishes without "
                        "pushing its model: not blessed, or failed the load check "
                        "(default: 0, as for a pushed one)")


def add_verbose(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--verbose", action="store_true",
                        help="show TensorFlow, absl and Beam output instead of logging it")


def add_config_options(parser: argparse.ArgumentParser, example: str) -> None:
    parser.add_argument("--config",
                        help="YAML config (default: pipeline/configs/default.yaml)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help=f"override a config field, e.g. {example} (repeatable)")


def add_work_dir(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--work-dir", default="work", help=f"{what} (default: ./work)")


def stamp() -> str:
    return time.strftime("%Y%m%d-%H%M%S")


def temp_log(command: str) -> str:
    """The log of a command that has no work dir."""
    return os.path.join(tempfile.gettempdir(), "medtfx-logs", f"{command}-{stamp()}.log")


def load_config_or_say(args: argparse.Namespace,
                       defaults: tuple[str, ...] = ()) -> PipelineConfig | None:
    """The config from --config and --set, after `defaults`; None (and a message) when it is
    wrong."""
    from pipeline.config import load_config

    try:
        return load_config(args.config, [*defaults, *args.set])
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return None


def missing(path: str, what: str) -> bool:
    """True, after one line on stderr, when a file only `medtfx run` writes is missing."""
    if os.path.exists(path):
        return False
    print(f"error: {path}: {what} (run `medtfx run` first)", file=sys.stderr)
    return True


def one_line(err: BaseException) -> str:
    """The line of an error message that names the cause. Beam re-raises worker failures
    as RuntimeError('Traceback ...'), whose cause is the last line."""
    lines = [line.strip() for line in str(err).strip().splitlines() if line.strip()]
    if not lines:
        return type(err).__name__
    return lines[-1] if lines[0].startswith("Traceback") else lines[0]


def report_failure(console: Console, err: BaseException, log_path: str) -> int:
    """One line for the person, the traceback for the log. A MedtfxError's message is the
    whole story; anything else also points at the log."""
    logging.getLogger("medtfx").error("%s%s", "".join(traceback.format_exception(err)),
                                      "".join(f"\n{d}" for d in getattr(err, "details", [])))
    if isinstance(err, MedtfxError):
        console.say(f"error: {one_line(err)}")
        details = getattr(err, "details", [])  # every problem of the input, one a line
        for line in details[:SHOWN_DETAILS]:
            console.say(f"       {line}")
        if len(details) > SHOWN_DETAILS:
            console.say(f"       ... {len(details) - SHOWN_DETAILS} more in {log_path}")
        return EXIT_FAILED
    console.say(f"error: {type(err).__name__}: {one_line(err)}")
    if not console.verbose:
        console.say(f"       full log: {log_path}")
    return EXIT_FAILED


def guarded(log_path: str, verbose: bool, body: Callable[[Console], int]) -> int:
    """Runs a command's body with chatter in `log_path` (unless verbose) and every failure
    reported in one line; returns the exit status."""
    with Console(log_path, verbose) as console:
        try:
            return body(console)
        except Exception as err:  # reported in one line, traceback in the log
            return report_failure(console, err, log_path)
