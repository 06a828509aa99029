"""`medtfx report`: a self-contained HTML page on the last run."""

from __future__ import annotations

import argparse
import json

from pipeline.cli import common
from pipeline.ops.console import Console
from pipeline.ops.workdir import WorkDir


def add_parser(commands: argparse._SubParsersAction) -> None:
    report = commands.add_parser(
        "report", help="write an HTML report of the last run",
        description="Writes a self-contained HTML page on the run recorded in "
        "WORK/run_summary.json: verdict and failed checks, ROC/PR curves overall and per "
        "slice, calibration, the confusion matrix at the operating threshold, the worst "
        "misses there with their heat maps (evaluation.gallery_cases), the slice "
        "table with intervals, the comparison with the last blessed model, and the data's "
        "statistics and anomalies.")
    report.add_argument("--work-dir", default="work", help="the run's work dir (./work)")
    report.add_argument("--out", help="where to write the page (WORK/report.html)")
    report.add_argument("--logs", metavar="DIR", help="also check the requests logged under "
                        "DIR for drift, as `medtfx monitor` does, in a section of its own")
    common.add_verbose(report)
    report.set_defaults(command=command)


def command(args: argparse.Namespace) -> int:
    work = WorkDir(args.work_dir)
    if common.missing(work.summary, "no finished run to report on"):
        return common.EXIT_FAILED

    def body(console: Console) -> int:
        from pipeline.results.report import write_report

        extra = () if args.logs is None else (("Monitoring", _monitoring(work, args.logs)),)
        console.say(f"medtfx: report written to {write_report(work, args.out, extra)}")
        return 0

    return common.guarded(work.log_file("report", common.stamp()), args.verbose, body)


def _monitoring(work: WorkDir, logs: str) -> str:
    """The monitoring section, judged with the config the reported run used."""
    from pipeline.config import load_config_dict
    from pipeline.monitor.verdict import monitor, verdict_html

    with open(work.summary) as f:
        config = load_config_dict(json.load(f)["config"])
    return verdict_html(monitor(logs, work, config, None), config.monitor.min_requests)
