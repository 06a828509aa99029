"""`medtfx data import`: a dataset in its published layout (class folders, images and CSV
tables, or DICOM files and a label CSV) to the shards the pipeline reads."""

from __future__ import annotations

import argparse
import sys

from pipeline.core.beam import DATA_IMPORT
from pipeline.cli import common
from pipeline.data.sources import ON_BAD
from pipeline.core.console import Console


def add_parser(data_commands: argparse._SubParsersAction) -> None:
    parser = data_commands.add_parser(
        "import", help="import a dataset in its published layout into TFRecord shards",
        description="Reads the dataset under --data-root as the config's source section "
        "describes it (class folders, images joined to CSV tables, or DICOM files joined "
        "to a label CSV and stored as 8-bit PNGs), and writes "
        "trainNN-COUNT.tfrec shards (testNN-COUNT.tfrec for unlabelled images) to --out: "
        "whole patients per shard, each shard with the same label mix, the published test "
        "split in the evaluation fold. Deterministic: the same files give the same shards.")
    common.add_config_options(parser, "--set source.on_bad=quarantine")
    parser.add_argument("--data-root", required=True, help="the dataset as published")
    parser.add_argument("--out", required=True, help="folder to write (new or empty)")
    parser.add_argument("--on-bad", choices=ON_BAD,
                        help="on an unusable image or row: stop and name them (default), or "
                        "import the rest and list them in OUT/quarantine.csv")
    common.add_verbose(parser)
    parser.set_defaults(command=command)


def command(args: argparse.Namespace) -> int:
    config = common.load_config_or_say(
        args, (f"source.on_bad={args.on_bad}",) if args.on_bad else ())
    if config is None:
        return common.EXIT_USAGE
    if not config.source.imported:
        print(f"error: the config's source layout is {config.source.layout!r}: its data is "
              "already in shards", file=sys.stderr)
        return common.EXIT_USAGE

    def body(console: Console) -> int:
        from pipeline.data.importer import describe, import_dataset

        manifest = import_dataset(args.data_root, args.out, config.source, config.task,
                                  config.split_plan, config.limits,
                                  config.beam.pipeline_args(DATA_IMPORT))
        console.say(describe(manifest, args.out))
        return 0

    return common.guarded(common.temp_log("import"), args.verbose, body)
