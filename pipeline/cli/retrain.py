"""`medtfx retrain`: registers newly labelled files as the next span and retrains on it."""

from __future__ import annotations

import argparse
import os
import sys

from pipeline.cli import common
from pipeline.core.console import Console
from pipeline.core.workdir import WorkDir


def add_parser(commands: argparse._SubParsersAction) -> None:
    retrain = commands.add_parser(
        "retrain", help="register newly labelled files as the next span and retrain",
        description="Checks every file in the incoming folder (public layout, readable "
        "records and images, the curated schema, drift against the previous span), moves "
        "bad files to the quarantine folder with a report of why, copies the rest into the "
        "data root as the next span (data.window decides which arrivals it holds), and runs "
        "the pipeline on it: the Trainer warm-starts from the latest blessed model, the "
        "Evaluator compares with it, and only a blessed model is pushed. Exits 1 when "
        "files were quarantined and none registered.")
    retrain.add_argument("--incoming", required=True, help="folder where labelled "
                         "trainNN-COUNT.tfrec files arrive, or, for a config whose source is "
                         "a published layout (folders, csv), new images in that layout")
    retrain.add_argument("--data-root", required=True,
                         help="the folder of spans (span-N/) and arrivals")
    retrain.add_argument("--quarantine", help="where rejected files go (DATA_ROOT/quarantine)")
    common.add_work_dir(retrain, "artifacts, metadata, serving models and logs")
    common.add_config_options(retrain, "--set window=4 --set retrain.settle_seconds=120")
    retrain.add_argument("--watch", action="store_true", help="keep polling the incoming "
                         "folder; run once files stop changing (retrain.poll_seconds, "
                         "retrain.settle_seconds)")
    retrain.add_argument("--register-only", action="store_true", help="register the span "
                         "but do not run the pipeline (e.g. a scheduled Kubeflow run trains)")
    common.add_strict(retrain)
    common.add_verbose(retrain)
    retrain.set_defaults(command=command)


def command(args: argparse.Namespace) -> int:
    # Spans, and a warm start from the blessed model; --set can still turn it off.
    config = common.load_config_or_say(args, ("data.spans=true", "trainer.warm_start=true"))
    if config is None:
        return common.EXIT_USAGE
    if not os.path.isdir(args.incoming):
        print(f"error: {args.incoming}: incoming folder does not exist", file=sys.stderr)
        return common.EXIT_USAGE
    if args.watch and config.source.imported:
        print(f"error: --watch takes trainNN-COUNT.tfrec arrivals; the config's source is the "
              f"{config.source.layout} layout: run without --watch when images arrive",
              file=sys.stderr)
        return common.EXIT_USAGE
    data_root = os.path.abspath(args.data_root)
    quarantine = os.path.abspath(args.quarantine or os.path.join(data_root, "quarantine"))
    work = WorkDir(args.work_dir)

    def body(console: Console) -> int:
        from pipeline.ops.retrain import run_retrain  # loads TensorFlow: after the console

        return run_retrain(config, args.incoming, data_root, quarantine, work, console,
                           register_only=args.register_only, watch=args.watch,
                           strict=args.strict)

    return common.guarded(work.log_file("retrain", common.stamp()), args.verbose, body)
