"""`medtfx monitor`: logged requests against what the served model was trained on."""

from __future__ import annotations

import argparse
import json

from pipeline.cli import common
from pipeline.core.console import Console
from pipeline.core.exits import EXIT_DRIFT
from pipeline.core.workdir import WorkDir


def add_parser(commands: argparse._SubParsersAction) -> None:
    monitor = commands.add_parser(
        "monitor", help="check logged requests for drift from what the model was trained on",
        description="Reads the requests logged under --logs (PredictionLog TFRecords, as the "
        "BulkInferrer or a TF Serving log collector writes them, or JSON lines of TF Serving "
        "REST predict requests and responses, as a logging proxy records them; see "
        "docs/monitoring.md) and compares them with what the served model was trained and "
        "evaluated on, found in ML Metadata: image statistics and metadata codes against "
        "the training fold, scores and the share of positive decisions against the "
        "evaluation fold, and the share its out-of-distribution guard flags. One line per "
        "check; a drift is recorded in ML Metadata (`medtfx history` lists it). Drift never "
        "retrains or pushes by itself: see docs/monitoring.md for a schedule that retrains "
        "when labels are waiting.",
        epilog=f"exit status: 0 when every check is within its bound (or the window is too "
        f"small to judge); {EXIT_DRIFT} on drift; {common.EXIT_FAILED} when the logs or the "
        f"model's records cannot be read; {common.EXIT_USAGE} for a wrong command line or "
        "config.")
    monitor.add_argument("--logs", required=True, metavar="DIR",
                         help="a log file, or a folder of them searched recursively")
    common.add_work_dir(monitor, "the work dir of the served model and its ML Metadata")
    monitor.add_argument("--model", metavar="VERSION", help="the serving version to "
                         "compare with (default: the newest, which TF Serving serves)")
    monitor.add_argument("--json", action="store_true", help="print JSON, for scripts")
    common.add_config_options(monitor, "--set monitor.max_psi=0.2")
    common.add_verbose(monitor)
    monitor.set_defaults(command=command)


def command(args: argparse.Namespace) -> int:
    config = common.load_config_or_say(args)
    if config is None:
        return common.EXIT_USAGE
    work = WorkDir(args.work_dir)

    def body(console: Console) -> int:
        from pipeline.monitor.alerts import Alert, now, record_alert
        from pipeline.monitor.verdict import (check_line, monitor, verdict_json,
                                              verdict_lines)

        verdict = monitor(args.logs, work, config, args.model)
        lines = ([json.dumps(verdict_json(verdict), indent=2)] if args.json
                 else verdict_lines(verdict, config.monitor.min_requests))
        for line in lines:
            console.say(line)
        if not verdict.drifted:
            return 0
        record_alert(work.metadata, Alert(now(), verdict.version, verdict.window,
                                          [check_line(c).strip() for c in verdict.drifted]))
        return EXIT_DRIFT

    return common.guarded(work.log_file("monitor", common.stamp()), args.verbose, body)
