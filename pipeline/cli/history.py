"""`medtfx history`: the pipeline runs, or a served model's lineage, from ML Metadata."""

from __future__ import annotations

import argparse
import dataclasses
import json

from pipeline.cli import common
from pipeline.core.console import Console
from pipeline.core.workdir import WorkDir


def add_parser(commands: argparse._SubParsersAction) -> None:
    history = commands.add_parser(
        "history", help="list the pipeline runs, or trace a served model back to its data",
        description="Reads WORK/metadata.sqlite (ML Metadata). Without --version: one line "
        "per pipeline run, oldest first: the data span, the model and whether it was trained "
        "in that run or taken from the cache, the verdict, the serving version pushed, the "
        "overall AUC and the operating threshold; then each drift alert `medtfx monitor` "
        "recorded. With --version: that serving version's "
        "lineage, from the push through packaging and training to the Examples, the files "
        "ImportExampleGen read them from, the Transform graph and the baseline model.")
    history.add_argument("--work-dir", default="work", help="the runs' work dir (./work)")
    history.add_argument("--version", help="a pushed serving version (a directory name "
                         "under WORK/serving): show its lineage")
    history.add_argument("--data-root", help="the runs' data root with spans: also list "
                         "the spans registered there that no run trained a model on")
    history.add_argument("--json", action="store_true", help="print JSON, for scripts")
    common.add_verbose(history)
    history.set_defaults(command=command)


def command(args: argparse.Namespace) -> int:
    work = WorkDir(args.work_dir)
    if common.missing(work.metadata, "no ML Metadata store"):
        return common.EXIT_FAILED

    def body(console: Console) -> int:
        from pipeline.data.spans import list_spans
        from pipeline.monitor.alerts import alert_lines, list_alerts
        from pipeline.results.history import list_runs, trace_version, untrained_spans
        from pipeline.results.history_text import lineage_lines, run_lines
        from pipeline.results.mlmd import open_store

        store = open_store(work.metadata)
        if args.version is None:
            runs, alerts = list_runs(store), list_alerts(store)
            listing = {"runs": [dataclasses.asdict(r) for r in runs],
                       "drift_alerts": [dataclasses.asdict(a) for a in alerts]}
            lines = [] if args.json else run_lines(runs) + alert_lines(alerts)
            if args.data_root:
                untrained = untrained_spans(runs, list_spans(args.data_root))
                listing["untrained_spans"] = untrained
                lines.append(f"medtfx: registered in {args.data_root} but never trained: "
                             + (", ".join(f"span {s}" for s in untrained) or "none"))
            if args.json:
                lines = [json.dumps(listing, indent=2)]
        else:
            lineage = trace_version(store, args.version)
            lines = ([json.dumps(dataclasses.asdict(lineage), indent=2)] if args.json
                     else lineage_lines(lineage))
        for line in lines:
            console.say(line)
        return 0

    return common.guarded(work.log_file("history", common.stamp()), args.verbose, body)
