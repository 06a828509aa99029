"""`medtfx predict`: scores image files with the served model (pipeline/serving)."""

from __future__ import annotations

import argparse
import os

from pipeline.cli import common
from pipeline.ops.console import Console
from pipeline.ops.workdir import WorkDir

DEFAULT_BATCH = 32


def add_parser(commands: argparse._SubParsersAction) -> None:
    predict = commands.add_parser(
        "predict", help="score image files with the served model",
        description="Scores image files (JPEG, PNG including 16-bit, DICOM) and the images "
        "in folders (recursively) with the served model: the newest version in the serving "
        "directory, or --model. Each request goes through the model's own serving_image "
        "signature, so images are decoded as served; a DICOM file is first converted as "
        "`medtfx data import` converts it (the config's source.dicom settings), and the "
        "header attributes source.dicom.columns names are sent as its metadata, mapped as "
        "import maps them; other metadata is sent as missing. Prints one line per file and a "
        "summary; a model with an out-of-distribution guard adds each image's ood_score and "
        "in_distribution (0: unlike the images it was trained on, whatever its probability).",
        epilog=f"exit status: 0 when every file was scored; {common.EXIT_FAILED} when a file "
        "could not be read, converted or decoded (its line names it and why; the others are "
        f"still scored), or nothing was found to score; {common.EXIT_USAGE} for a wrong "
        "command line or config.")
    predict.add_argument("paths", nargs="+", metavar="PATH",
                         help="an image file, or a folder searched recursively (files that "
                         "are neither images nor DICOM, and the config's source.skip "
                         "litter such as .DS_Store, are passed over)")
    where = predict.add_mutually_exclusive_group()
    common.add_work_dir(where, "the work dir whose serving/ directory holds the model")
    where.add_argument("--model", metavar="DIR", help="a SavedModel directory, or a serving "
                       "directory whose newest version to use")
    predict.add_argument("--out", type=_out_file, metavar="FILE.csv|FILE.json",
                         help="also write one record per file, with every class's "
                         "probability, as CSV or JSON (by the suffix)")
    predict.add_argument("--log", metavar="DIR", help="also record each request and its "
                         "answer in a new JSON-lines file in DIR, as a logging proxy in front "
                         "of TF Serving records them, for `medtfx monitor`")
    predict.add_argument("--explain", metavar="DIR",
                         help="also write each file's Grad-CAM heat map over the image, as "
                         "FILE-explained.png in DIR (the model's explain signature)")
    predict.add_argument("--overwrite", action="store_true",
                         help="with --explain: replace overlays already in DIR")
    predict.add_argument("--batch", type=_positive, default=DEFAULT_BATCH, metavar="N",
                         help=f"images per request (default: {DEFAULT_BATCH}; never more "
                         "than the model accepts)")
    common.add_config_options(predict, "--set source.dicom.window=[40,400]")
    common.add_verbose(predict)
    predict.set_defaults(command=command)


def _out_file(path: str) -> str:
    if not path.lower().endswith((".csv", ".json")):
        raise argparse.ArgumentTypeError(f"{path}: name a .csv or .json file")
    return path


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text}: a number of images, at least 1")
    return int(text)


def command(args: argparse.Namespace) -> int:
    config = common.load_config_or_say(args)
    if config is None:
        return common.EXIT_USAGE
    serving = os.path.abspath(WorkDir(args.work_dir).serving)

    def body(console: Console) -> int:
        from pipeline.monitor.request_log import JsonLinesLog
        from pipeline.serving.model import find_model, load_model
        from pipeline.serving.output import Table, record, summary, write_records
        from pipeline.serving.predict import find_images, predict

        files, passed_over = find_images(args.paths, config.source.skip)
        model = load_model(find_model(args.model, serving), config.task)
        overlays = explain_targets(model, files, args)
        table, records = Table(model, files), []
        log = (JsonLinesLog(args.log, "serving_image", model.image_input,
                            os.path.basename(model.path.rstrip("/"))) if args.log else None)
        console.say(table.header())
        try:
            for prediction in predict(model, files, config.source.dicom, config.task,
                                      args.batch, overlays, log.write if log else None):
                records.append(record(prediction, model))
                console.say(table.line(records[-1]))
        finally:
            if log:
                log.close()
        if args.out:
            write_records(args.out, model, records)
        console.say(summary(records, passed_over, model, args.out))
        if overlays:
            written = sum(1 for r in records if not r["error"])
            console.say(f"medtfx: {written} heat map overlays written to {args.explain}")
        if log:
            console.say(f"medtfx: requests and answers logged in {log.path}")
        return common.EXIT_FAILED if any(r["error"] for r in records) else 0

    return common.guarded(common.temp_log("predict"), args.verbose, body)


def explain_targets(model, files: list[str], args: argparse.Namespace) -> dict | None:
    """Each file's overlay path with --explain (checked before anything is scored: the
    model explains, no overlay would replace a file unasked), else None."""
    if not args.explain:
        return None
    from pipeline.serving.overlay import overlay_paths

    model.require_explainer()
    return overlay_paths(files, args.explain, args.overwrite)
