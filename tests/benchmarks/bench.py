"""`make bench`: how close each stage of medtfx comes to the floor of the work it does.

    python -m tests.benchmarks.bench [--quick] [--images N] [--epochs E] [--out FILE]
    python -m tests.benchmarks.bench --scale [--per-shard N] [--out FILE]

`--scale` is its own mode: the siim-isic-512 pipeline at two sizes of a release shaped like
the 2020 one, and the EfficientNet-B6 Evaluator (tests/benchmarks/scale.py).

Every number is measured in one run on one machine and reported as a ratio against a floor
(the bare work the stage cannot avoid), so a gap is visible whatever the hardware. A ratio
is always measured / floor: for a throughput higher is better, for a time lower is better;
the goal column says which. Prints a table and writes work/bench.json (with the machine, its load and the date);
`make bench` then renders the tables of docs/performance.md from it
(tests/benchmarks/doc_tables.py).

Pipelines run in a spawned child process (logs in its work dir), so this process can watch
their memory. Peak memory is the proportional set size (PSS, from /proc/PID/smaps_rollup
through psutil) of the child and all its descendants, summed, sampled every second (one
read of a TensorFlow process's smaps_rollup costs ~60 ms of CPU) and attributed to the
component whose ML Metadata execution window holds the sample (LocalDagRunner runs one
component at a time). PSS counts a page shared between Beam's
worker processes once; summed RSS would count TensorFlow's libraries once per worker, and
RUSAGE_CHILDREN reports only the largest single process. What the runner process still
holds from earlier components counts towards later ones: these are peaks of the run, not
of a component alone. Component seconds are ML Metadata's execution times.

A line per step is printed as the bench goes (data generated, each component as ML Metadata
records it finished, each floor); library output goes to work/bench/bench.log and each
child's own log.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import shutil
import time

# Nothing here imports TensorFlow: the measuring modules are imported once the console
# sends library output to the log, TensorFlow's start-up lines included.
from pipeline.core.console import Console

PER_SHARD = 200  # --scale: train images per shard; the 2020 release has ~2,208
# siim-isic-512.yaml with a short training: on a CPU its EfficientNet-B6 took over 6 minutes
# for two training steps of 4 images here (batch 32 would not fit in memory), so the 512 px
# runs train B0 at batch 4; everything else (TTA, Beam, the test shards) is the config's.
SHORT_512 = ("weights=none", "backbone=efficientnet_b0", "batch_size=4", "train_steps=2",
             "epochs=1", "eval_steps=2")


@dataclasses.dataclass(frozen=True)
class Sizes:
    """How much each measurement does; --quick only smoke-checks that all of it runs."""
    images: int = 5000  # the 64 px pipeline run (orchestration, StatisticsGen, Evaluator)
    # Settings of that run on top of default.yaml; `epochs` passes over the training shards.
    epochs: int = 2
    overrides_64: tuple[str, ...] = ()
    images_512: int = 75
    # The Trainer's and Evaluator's peaks at 512 px are B0's at batch 4.
    overrides_512: tuple[str, ...] = SHORT_512
    input_images: int = 2048  # per input-pipeline measurement at 64 px
    # At 512 px: fewer batches than this are mostly the pipeline's ramp-up (128 images read
    # 0.45 of the floor where 512 read 0.75).
    input_images_512: int = 512
    train_batches: int = 30
    serving_calls: int = 200  # batch-1 latency medians: 50 calls left one row 2x off
    import_images: int = 2000  # a Kermany-layout dataset at 256 px, through the import


# A pipeline's start-up and EfficientNet's tracing and export dominate tiny runs: the
# pipelines train a small CNN, and the 512 px run keeps Beam in one process (worker
# start-up took ~60 s there).
_SMOKE = ("backbone=pneumonia_cnn", "weights=none", "train_steps=2", "epochs=1",
          "eval_steps=1")
QUICK = Sizes(images=300, epochs=1, overrides_64=_SMOKE, images_512=45,
              overrides_512=(*_SMOKE, "tta=1", "batch_size=2",
                   "direct_running_mode=in_memory", "direct_num_workers=1"),
              input_images=256, input_images_512=64, train_batches=4, serving_calls=10,
              import_images=100)


def measure(sizes: Sizes, scratch: str) -> dict:
    """Every measurement, in the order that keeps each one alone on the machine."""
    from modules.settings import AugmentSettings
    from pipeline.config import load_config
    from pipeline.sample.synth import SynthSpec
    from pipeline.pipeline import run_settings
    from tests.benchmarks.data import make_data
    from pipeline.data.shards import SplitPlan
    from tests.benchmarks.measures import (TWO_WORKERS, beam_rows, import_rows, input_rows,
                                           monitor_rows, orchestration_row, serving_rows,
                                           training_rows, tta_rows)
    from tests.benchmarks.runs import CONFIG_512, run_pipeline
    from tests.benchmarks.figures import component_report, size_rows
    from tests.helpers import BLESS_ANY

    data_64 = make_data(scratch, SynthSpec(images=sizes.images, size=64))
    # A few dozen images: at 10% malignant the evaluation fold can hold none, and
    # ModelPackager then (rightly) fails the run.
    data_512 = make_data(scratch, SynthSpec(images=sizes.images_512, size=512,
                                            malignant_share=0.3))
    config = load_config(None)
    cfg = run_settings(config)  # what the Trainer's run_fn reads
    print("input pipeline at 64 and 512 px, training steps, `medtfx data import`")
    rows = [*input_rows(data_64, 64, AugmentSettings(enabled=False),
                        sizes.input_images, scratch, cfg),
            *input_rows(data_512, 512, AugmentSettings(),
                        sizes.input_images_512, scratch, cfg),
            *training_rows(data_64, scratch, cfg, sizes.train_batches),
            *import_rows(scratch, sizes.import_images, 256)]
    run_64 = run_pipeline(data_64, os.path.join(scratch, "run-64"),
                          [f"epochs={sizes.epochs}", *sizes.overrides_64, *BLESS_ANY[1::2]])
    # Every component against its floor, as --scale measures them.
    rows += size_rows(component_report(run_64, data_64, config, "64 px",
                                       os.path.join(scratch, "floors-64")))
    print("serving signatures")
    rows += [orchestration_row(run_64, sizes.images), *serving_rows(run_64, sizes.serving_calls)]
    print("test-time augmentation: AUC and cost by orientations")
    rows += tta_rows(run_64, config.task, SplitPlan.names(config.split_plan.evaluation))
    print("monitor: logged requests against the served model's reference")
    rows += monitor_rows(run_64, config)
    two_workers = run_pipeline(data_64, os.path.join(scratch, "beam-2"),
                               [f"epochs={sizes.epochs}", *sizes.overrides_64, *TWO_WORKERS],
                               to_nodes=["DataGate"])
    rows += beam_rows(run_64, two_workers, "64 px")
    overrides_512 = [*sizes.overrides_512, *BLESS_ANY[1::2]]
    run_512 = run_pipeline(data_512, os.path.join(scratch, "run-512"), overrides_512,
                           CONFIG_512)
    rows += size_rows(component_report(run_512, data_512, load_config(
        CONFIG_512, overrides_512), "512 px", os.path.join(scratch, "floors-512")))
    runs = {"64 px": run_64, "512 px": run_512, "64 px, 2 Beam workers": two_workers}
    return {"rows": rows, "components": {name: run.summary() for name, run in runs.items()}}


def _number(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def print_report(report: dict) -> None:
    m = report["machine"]
    print(f"\nmedtfx bench ({report['mode']}): {m['usable_cores']} of {m['cores']} cores, "
          f"{m['cpu_model']}, {m['memory_gib']} GiB; {report['seconds']:.0f} s")
    print(f"{'measure':<48}{'measured':>11}{'against':>11}{'ratio':>8}  goal")
    for r in report["rows"]:
        print(f"{r['name']:<48}{r['value']:>11.4g}{_number(r['floor'], '>11.4g'):>11}"
              f"{_number(r['ratio'], '>8.2f'):>8}  {r['goal']}")
    runs = report["components"]
    print(f"\n{'component: seconds / peak PSS MiB':<34}"
          + "".join(f"{name:>22}" for name in runs))
    for component in dict.fromkeys(c for run in runs.values() for c in run["seconds"]):
        cells = [f"{run['seconds'][component]:.1f} / {run['peak_mib'][component]:.0f}"
                 if component in run["seconds"] else "-" for run in runs.values()]
        print(f"{component:<34}" + "".join(f"{cell:>22}" for cell in cells))
    print(f"{'pipeline wall (s)':<34}" + "".join(f"{run['wall']:>22.1f}"
                                               for run in runs.values()))
    if "scale" in report:
        from tests.benchmarks.scale import print_scale
        print_scale(report["scale"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="tiny sizes: checks that every measurement runs (~3 min)")
    parser.add_argument("--images", type=int, default=Sizes.images,
                        help="images of the 64 px pipeline run (not with --quick)")
    parser.add_argument("--epochs", type=int, default=Sizes.epochs,
                        help="training epochs of that run (not with --quick)")
    parser.add_argument("--scale", action="store_true",
                        help="the siim-isic-512 pipeline on a release shaped like the 2020 "
                        "one, at two sizes, and the B6 Evaluator (tests/benchmarks/scale.py)")
    parser.add_argument("--per-shard", type=int, default=PER_SHARD,
                        help=f"with --scale: train images per shard ({PER_SHARD}; the 2020 "
                        "release has 2208); test shards get 0.31 of it")
    parser.add_argument("--out", default=os.path.join("work", "bench.json"))
    args = parser.parse_args()
    sizes = QUICK if args.quick else Sizes(images=args.images, epochs=args.epochs)
    mode = "scale" if args.scale else "quick" if args.quick else "full"
    work = os.path.abspath(os.path.dirname(args.out) or ".")
    # Kept after the run: each pipeline's log and artifacts, for a number that looks wrong.
    # The scale releases stay in bench-data/ for the next run.
    scratch = os.path.join(work, "bench")
    if os.path.isdir(scratch):
        shutil.rmtree(scratch)
    os.makedirs(scratch)
    log = os.path.join(scratch, "bench.log")
    with Console(log, verbose=False) as console, contextlib.redirect_stdout(console.out):
        print(f"medtfx bench ({mode}); library output in {log}")
        start, load_start = time.time(), os.getloadavg()
        from tests.benchmarks.runs import machine
        from tests.benchmarks.scale import measure_scale
        measured = (measure_scale(args.per_shard, SHORT_512, scratch,
                                  os.path.join(work, "bench-data"))
                    if args.scale else measure(sizes, scratch))
        report = {"mode": mode, "machine": machine(),
                  "date": time.strftime("%Y-%m-%d", time.gmtime(start)),
                  # how busy the machine was: other work skews every figure
                  "load_average": {"start": load_start, "end": os.getloadavg()},
                  "sizes": {"per_shard": args.per_shard} if args.scale
                  else dataclasses.asdict(sizes), **measured, "scratch": scratch,
                  "seconds": time.time() - start}
        print_report(report)
        with open(args.out, "w") as f:
            json.dump(report, f, indent=2)
        print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
