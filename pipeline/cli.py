"""The `medtfx` command line."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
import tempfile
import time
import traceback
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # hints only: pipeline.history loads TensorFlow, which few commands need
    from pipeline.history import Lineage, RunRecord, Step

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

EXIT_FAILED = 1  # the run or the data failed
EXIT_USAGE = 2  # the command line or the config is wrong


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.command(args)
    except KeyboardInterrupt:
        print("medtfx: interrupted", file=sys.stderr)
        return 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="medtfx", description="A production TFX pipeline for medical image "
        "classification.")
    commands = parser.add_subparsers(metavar="COMMAND", required=True)

    run = commands.add_parser(
        "run", help="run the pipeline locally (LocalDagRunner, SQLite ML Metadata)",
        description="Runs the full pipeline on the local machine. Without --data-root it "
        "uses the sample dataset under the work dir, generating it when missing. Writes "
        "WORK/run_summary.json at the end.")
    _config_options(run, "--set image_size=64 --set train_steps=20")
    run.add_argument("--data-root", help="directory of trainNN-COUNT.tfrec shards "
                     "(default: WORK/sample-data, generated when missing)")
    run.add_argument("--work-dir", default="work", help="artifacts, metadata, serving "
                     "models and logs (default: ./work)")
    _verbose(run)
    run.set_defaults(command=_run)

    report = commands.add_parser(
        "report", help="write an HTML report of the last run",
        description="Writes a self-contained HTML page on the run recorded in "
        "WORK/run_summary.json: verdict and failed checks, ROC/PR curves overall and per "
        "slice, calibration, the confusion matrix at the operating threshold, the slice "
        "table with intervals, the comparison with the last blessed model, and the data's "
        "statistics and anomalies.")
    report.add_argument("--work-dir", default="work", help="the run's work dir (./work)")
    report.add_argument("--out", help="where to write the page (WORK/report.html)")
    _verbose(report)
    report.set_defaults(command=_report)

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
                         "trainNN-COUNT.tfrec files arrive")
    retrain.add_argument("--data-root", required=True,
                         help="the folder of spans (span-N/) and arrivals")
    retrain.add_argument("--quarantine", help="where rejected files go (DATA_ROOT/quarantine)")
    retrain.add_argument("--work-dir", default="work", help="artifacts, metadata, serving "
                         "models and logs (default: ./work)")
    _config_options(retrain, "--set window=4 --set retrain.settle_seconds=120")
    retrain.add_argument("--watch", action="store_true", help="keep polling the incoming "
                         "folder; run once files stop changing (retrain.poll_seconds, "
                         "retrain.settle_seconds)")
    retrain.add_argument("--register-only", action="store_true", help="register the span "
                         "but do not run the pipeline (e.g. a scheduled Kubeflow run trains)")
    _verbose(retrain)
    retrain.set_defaults(command=_retrain)

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
    _verbose(rollback)
    rollback.set_defaults(command=_rollback)

    history = commands.add_parser(
        "history", help="list the pipeline runs, or trace a served model back to its data",
        description="Reads WORK/metadata.sqlite (ML Metadata). Without --version: one line "
        "per pipeline run, oldest first: the data span, the model and whether it was trained "
        "in that run or taken from the cache, the verdict, the serving version pushed, the "
        "overall AUC and the operating threshold. With --version: that serving version's "
        "lineage, from the push through packaging and training to the Examples, the files "
        "ImportExampleGen read them from, the Transform graph and the baseline model.")
    history.add_argument("--work-dir", default="work", help="the runs' work dir (./work)")
    history.add_argument("--version", help="a pushed serving version (a directory name "
                         "under WORK/serving): show its lineage")
    history.add_argument("--json", action="store_true", help="print JSON, for scripts")
    _verbose(history)
    history.set_defaults(command=_history)

    kfp = commands.add_parser(
        "compile-kfp", help="compile the pipeline for Kubeflow Pipelines / Vertex AI Pipelines",
        description="Compiles the pipeline with KubeflowV2DagRunner into a PipelineSpec YAML "
        "file for the kfp client or Vertex AI Pipelines. The image, the pipeline root, the "
        "data and serving locations, Beam arguments, per-task resources and optional Vertex "
        "AI training come from the config's kubeflow: section. Needs no network and no "
        "credentials. See kubeflow/README.md.")
    _config_options(kfp, "--set kubeflow.image=REGISTRY/medtfx:TAG")
    kfp.add_argument("--output", help="the file to write, ending in .yaml "
                     "(default: PIPELINE_NAME.yaml)")
    _verbose(kfp)
    kfp.set_defaults(command=_compile_kfp)

    data = commands.add_parser("data", help="dataset tools",
                               description="Dataset tools.")
    data_commands = data.add_subparsers(metavar="COMMAND", required=True)
    synth = data_commands.add_parser(
        "synth", help="write a synthetic melanoma dataset in the public SIIM-ISIC layout",
        description="Writes trainNN-COUNT.tfrec and testNN-COUNT.tfrec shards with the keys "
        "and types of the public melanoma TFRecords, triple-stratified, with a learnable "
        "lesion signal. Deterministic for a seed.")
    _synth_arguments(synth)
    _verbose(synth)
    synth.set_defaults(command=_synth)
    return parser


def _verbose(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--verbose", action="store_true",
                        help="show TensorFlow, absl and Beam output instead of logging it")


def _synth_arguments(parser: argparse.ArgumentParser) -> None:
    from pipeline.synth import SynthSpec

    d = SynthSpec()
    parser.add_argument("--out", required=True, help="directory to write (must not hold shards)")
    parser.add_argument("--images", type=int, default=d.images, help=f"train images ({d.images})")
    parser.add_argument("--size", type=int, default=d.size, help=f"image side in px ({d.size})")
    parser.add_argument("--seed", type=int, default=d.seed, help=f"random seed ({d.seed})")
    parser.add_argument("--test-images", type=int, help="unlabelled test images (images/4)")
    parser.add_argument("--malignant-share", type=float, default=d.malignant_share,
                        help=f"share of malignant labels ({d.malignant_share}; the 2020 "
                        "challenge had 0.018)")
    parser.add_argument("--label-noise", type=float, default=d.label_noise,
                        help=f"share of labels drawn at random ({d.label_noise})")
    parser.add_argument("--signal", type=float, default=d.signal,
                        help=f"separation of each lesion attribute in SDs ({d.signal})")
    parser.add_argument("--site-signal", action="append", metavar="SITE=STRENGTH",
                        help="scale the signal on one anatomic site, e.g. "
                        "'lower extremity=0' removes it (default: lower extremity=0.7)")
    parser.add_argument("--grayscale-share", type=float, default=d.grayscale_share,
                        help="share of images stored as grayscale JPEG (0)")
    parser.add_argument("--release", choices=("2020", "70k"), default=d.release,
                        help="2020: with diagnosis; 70k: with source, without diagnosis")


def _config_options(parser: argparse.ArgumentParser, example: str) -> None:
    parser.add_argument("--config",
                        help="YAML config (default: pipeline/configs/default.yaml)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help=f"override a config field, e.g. {example} (repeatable)")


def _stamp() -> str:
    return time.strftime("%Y%m%d-%H%M%S")


def _temp_log(command: str) -> str:
    """The log of a command that has no work dir."""
    return os.path.join(tempfile.gettempdir(), "medtfx-logs", f"{command}-{_stamp()}.log")


def _fail(console, err: BaseException, log_path: str | None, where: str = "") -> int:
    """One line for the person, the traceback for the log."""
    logging.getLogger("medtfx").error("%s", "".join(traceback.format_exception(err)))
    message = _one_line(err)
    from pipeline.errors import MedtfxError

    prefix = "" if isinstance(err, MedtfxError) else f"{type(err).__name__}: "
    console.say(f"error: {where}{prefix}{message}")
    if log_path and not console.verbose:
        console.say(f"       full log: {log_path}")
    return EXIT_FAILED


def _one_line(err: BaseException) -> str:
    """The line of an error message that names the cause. Beam re-raises worker failures
    as RuntimeError('Traceback ...'), whose cause is the last line."""
    lines = [line.strip() for line in str(err).strip().splitlines() if line.strip()]
    if not lines:
        return type(err).__name__
    return lines[-1] if lines[0].startswith("Traceback") else lines[0]


def _load(args: argparse.Namespace, defaults: list[str] = ()):
    """The config from --config and --set, after `defaults`; None (and a message) when it is
    wrong."""
    from pipeline.config import load_config
    from pipeline.errors import ConfigError

    try:
        return load_config(args.config, [*defaults, *args.set])
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return None


def _run(args: argparse.Namespace) -> int:
    from pipeline.console import Console
    from pipeline.workdir import WorkDir

    config = _load(args)
    if config is None:
        return EXIT_USAGE
    work = WorkDir(args.work_dir)
    log_path = work.log_file("run", _stamp())
    with Console(log_path, args.verbose) as console:
        try:
            data_root = os.path.abspath(args.data_root or _sample_data(work, console))
            return _run_pipeline(config, data_root, work, console)
        except Exception as err:  # reported in one line, traceback in the log
            return _fail(console, err, log_path)


def _run_pipeline(config, data_root: str, work, console) -> int:
    """Checks the backbone and the data (the newest span, with spans), then runs."""
    from modules.model import validate_backbone
    from pipeline.input_checks import check_data_root
    from pipeline.spans import latest_span_dir

    validate_backbone(config.trainer.backbone, config.trainer.weights)
    data_dir = latest_span_dir(data_root) if config.data.spans else data_root
    data = check_data_root(data_dir, config.data.train_shards, work.input_check_cache)
    from pipeline.local_runner import run_local  # imports TFX: only for good input

    return run_local(config, data, work, console, input_base=data_root)


def _retrain(args: argparse.Namespace) -> int:
    from pipeline.console import Console
    from pipeline.workdir import WorkDir

    # Spans, and a warm start from the blessed model; --set can still turn it off.
    config = _load(args, ["data.spans=true", "trainer.warm_start=true"])
    if config is None:
        return EXIT_USAGE
    if not os.path.isdir(args.incoming):
        print(f"error: {args.incoming}: incoming folder does not exist", file=sys.stderr)
        return EXIT_USAGE
    data_root = os.path.abspath(args.data_root)
    quarantine = os.path.abspath(args.quarantine or os.path.join(data_root, "quarantine"))
    work = WorkDir(args.work_dir)
    log_path = work.log_file("retrain", _stamp())
    with Console(log_path, args.verbose) as console:
        try:
            from pipeline.pipeline import schema_path  # imports TFX: inside the console
            from pipeline.retrain import RetrainLock, register, wait_until_settled

            with RetrainLock(data_root):
                while True:
                    if args.watch:
                        console.say(f"medtfx: watching {args.incoming} (Ctrl-C stops)")
                        wait_until_settled(args.incoming, config.retrain.poll_seconds,
                                           config.retrain.settle_seconds)
                    done = register(args.incoming, data_root, quarantine, config,
                                    schema_path(config), console)
                    if done.quarantine_dir:
                        console.say(f"medtfx: {len(done.quarantined)} files quarantined in "
                                    f"{done.quarantine_dir} (report: quarantine-report.json)")
                    if done.span is None:
                        console.say("medtfx: no new span registered")
                        if not args.watch:
                            return EXIT_FAILED if done.quarantined else 0
                        continue
                    console.say(f"medtfx: registered span {done.span} "
                                f"({len(done.accepted)} files) in {data_root}")
                    code = 0 if args.register_only else _run_pipeline(
                        config, data_root, work, console)
                    if not args.watch:
                        return code
        except KeyboardInterrupt:
            console.say("medtfx: stopped; incoming files not yet registered are untouched")
            return 130
        except Exception as err:  # reported in one line, traceback in the log
            return _fail(console, err, log_path)


def _missing(path: str, what: str) -> bool:
    """True, after one line on stderr, when a file only `medtfx run` writes is missing."""
    if os.path.exists(path):
        return False
    print(f"error: {path}: {what} (run `medtfx run` first)", file=sys.stderr)
    return True


def _report(args: argparse.Namespace) -> int:
    from pipeline.console import Console
    from pipeline.workdir import WorkDir

    work = WorkDir(args.work_dir)
    if _missing(work.summary, "no finished run to report on"):
        return EXIT_FAILED
    log_path = work.log_file("report", _stamp())
    with Console(log_path, args.verbose) as console:
        try:
            from pipeline.report import write_report

            console.say(f"medtfx: report written to {write_report(work, args.out)}")
            return 0
        except Exception as err:  # reported in one line, traceback in the log
            return _fail(console, err, log_path)


def _rollback(args: argparse.Namespace) -> int:
    from pipeline.console import Console
    from pipeline.workdir import WorkDir

    serving = os.path.abspath(args.serving_dir or WorkDir(args.work_dir).serving)
    with Console(_temp_log("rollback"), args.verbose) as console:
        from pipeline.serving_dir import ServingDirError, rollback, serving_versions

        try:
            new, source = rollback(serving, args.to)
        except ServingDirError as err:
            console.say(f"error: {err}")
            return EXIT_FAILED
        console.say(f"medtfx: version {new} now serves the model of version {source} "
                    f"(versions: {', '.join(serving_versions(serving))})")
        return 0


def _history(args: argparse.Namespace) -> int:
    from pipeline.console import Console
    from pipeline.errors import MedtfxError
    from pipeline.workdir import WorkDir

    work = WorkDir(args.work_dir)
    if _missing(work.metadata, "no ML Metadata store"):
        return EXIT_FAILED
    log_path = work.log_file("history", _stamp())
    with Console(log_path, args.verbose) as console:
        try:
            from pipeline.history import list_runs, trace_version
            from pipeline.mlmd import open_store

            store = open_store(work.metadata)
            found = list_runs(store) if args.version is None else trace_version(store,
                                                                                 args.version)
        except MedtfxError as err:  # a version no push recorded
            console.say(f"error: {err}")
            return EXIT_FAILED
        except Exception as err:
            return _fail(console, err, log_path)
        if args.json:
            console.say(json.dumps({"runs": [dataclasses.asdict(r) for r in found]}
                                   if args.version is None else dataclasses.asdict(found),
                                   indent=2))
        else:
            for line in run_lines(found) if args.version is None else lineage_lines(found):
                console.say(line)
        return 0


def _yes_no(value: bool | None) -> str:
    return "-" if value is None else "yes" if value else "no"


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def run_lines(runs: list[RunRecord]) -> list[str]:
    """A header and one line per run, in columns."""
    if not runs:
        return ["medtfx: no pipeline runs recorded"]
    rows = [["run", "span", "model", "blessed", "pushed", "AUC", "threshold"]]
    notes = [""]
    for run in runs:
        model = ("-" if run.model_id is None else
                 f"{run.model_id} ({'cached' if run.model_cached else 'trained'})")
        rows.append([run.run_id, ",".join(str(s) for s in run.spans) or "-", model,
                     _yes_no(run.blessed), run.pushed_version or "-", _number(run.auc),
                     _number(run.operating_threshold)])
        notes.append(f"failed: {', '.join(run.failed)}" if run.failed else "")
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join([*(cell.ljust(width) for cell, width in zip(row, widths)), note]).rstrip()
            for row, note in zip(rows, notes)]


def _step_lines(label: str, step: Step) -> list[str]:
    """An artifact and the execution that produced it."""
    return [f"  {label}{step.artifact_type} {step.artifact_id} {step.uri}",
            f"    <- {step.component} (execution {step.execution_id}, run {step.run_id})"]


def lineage_lines(lineage: Lineage) -> list[str]:
    """A serving version's lineage, from the push to the data files."""
    first, *later = lineage.recorded_by
    lines = [f"medtfx: serving version {lineage.version} ({lineage.destination})",
             f"        pushed by run {first}"
             + (f"; found serving by run {', '.join(later)}" if later else ""),
             *_step_lines("", lineage.pushed), *_step_lines("packaged ", lineage.packaged),
             f"    operating threshold {_number(lineage.operating_threshold)}"]
    for step in lineage.trained:
        lines += _step_lines("trained ", step)
    if lineage.transform:
        lines += _step_lines("", lineage.transform)
    for data in lineage.data:
        lines += _step_lines("", data.examples)
        lines.append(f"    span {data.span}"
                     + (f", version {data.version}" if data.version is not None else "")
                     + f", splits {' '.join(data.split_names)}; read from {data.input_base}")
        for split in data.splits:
            files = ", ".join(split.files) or "no file matches now"
            if split.unchanged is False:
                files += " (changed since ImportExampleGen read them)"
            lines.append(f"      {split.name} {split.pattern}: {files}")
    lines += (_step_lines("baseline ", lineage.baseline) if lineage.baseline else
              ["  baseline: none (no blessed model before it)"])
    return lines


def _compile_kfp(args: argparse.Namespace) -> int:
    from pipeline.console import Console
    from pipeline.errors import ConfigError
    from pipeline.kubeflow_checks import check_kubeflow_config

    config = _load(args)
    if config is None:
        return EXIT_USAGE
    try:
        check_kubeflow_config(config)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USAGE
    output = args.output or f"{config.pipeline_name}.yaml"
    if not output.endswith((".yaml", ".yml")):
        print(f"error: --output {output}: must end in .yaml, the format the kfp client and "
              "Vertex AI read", file=sys.stderr)
        return EXIT_USAGE
    log_path = _temp_log("compile-kfp")
    with Console(log_path, args.verbose) as console:
        started = time.monotonic()
        try:
            from pipeline.kubeflow_runner import compile_pipeline  # imports TFX

            compiled = compile_pipeline(config, output)
        except ConfigError as err:
            console.say(f"error: {err}")
            return EXIT_USAGE
        except Exception as err:
            return _fail(console, err, log_path)
        tasks = compiled.spec["root"]["dag"]["tasks"]
        console.say(f"medtfx: compiled {len(tasks)} tasks to {output} in "
                    f"{time.monotonic() - started:.1f} s")
        console.say(f"        image {config.kubeflow.image}; pipeline root "
                    f"{config.kubeflow.pipeline_root}")
        for name, default in compiled.parameters.items():
            console.say(f"        runtime parameter {name}, default: {default}")
        return 0


def _sample_data(work, console) -> str:
    """The sample dataset under the work dir, generated on first use."""
    from pipeline.synth import MANIFEST, SynthSpec, generate

    if not os.path.exists(os.path.join(work.sample_data, MANIFEST)):
        spec = SynthSpec()
        console.say(f"medtfx: generating the sample dataset ({spec.images} images, "
                    f"{spec.size} px) in {work.sample_data}")
        generate(work.sample_data, spec)
    return work.sample_data


def _synth(args: argparse.Namespace) -> int:
    from pipeline.console import Console

    log_path = _temp_log("synth")
    with Console(log_path, args.verbose) as console:
        try:
            from pipeline.synth import SynthSpec, generate

            site_signal = SynthSpec.site_signal
            if args.site_signal:
                site_signal = tuple(_site_strength(s) for s in args.site_signal)
            spec = SynthSpec(
                images=args.images, size=args.size, seed=args.seed,
                test_images=args.test_images, malignant_share=args.malignant_share,
                label_noise=args.label_noise, signal=args.signal, site_signal=site_signal,
                grayscale_share=args.grayscale_share, release=args.release)
        except ValueError as err:
            console.say(f"error: {err}")
            return EXIT_USAGE
        try:
            manifest = generate(args.out, spec)
        except Exception as err:
            return _fail(console, err, log_path)
        train = manifest["train"]
        best = manifest["best_auc"]
        console.say(
            f"wrote {len(train)} train shards ({sum(s['images'] for s in train)} images) and "
            f"{len(manifest['test'])} test shards ({sum(s['images'] for s in manifest['test'])}"
            f" images) to {args.out}")
        console.say(f"best attainable AUC: {best['image']:.3f} from the image, "
                    f"{best['image_and_metadata']:.3f} with age and site")
        return 0


def _site_strength(text: str) -> tuple[str, float]:
    site, sep, strength = text.rpartition("=")
    if not sep:
        raise ValueError(f"--site-signal {text!r}: expected SITE=STRENGTH")
    try:
        return site, float(strength)
    except ValueError:
        raise ValueError(f"--site-signal {text!r}: strength must be a number") from None


if __name__ == "__main__":
    sys.exit(main())
