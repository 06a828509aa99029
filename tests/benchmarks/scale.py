"""`make bench ARGS=--scale`: the siim-isic-512 pipeline on a synthetic release shaped like the
2020 one (15 train shards, 16 test shards, 512 px), at a quarter of the per-shard size and at
the full one, each component against its floor; the Evaluator on EfficientNet-B6; and what
the per-image costs say about the real releases (tests/benchmarks/extrapolate.py).

Training is a few steps of EfficientNet-B0 at batch 4 (training speed is measured by the
normal bench); everything else runs as siim-isic-512.yaml sets it: TTA 8, Beam in one
process (the default; the full size runs again on two worker processes, to show what a
second worker gains), the test shards scored. Each component's figures and floor: tests/benchmarks/figures.py."""

from __future__ import annotations

import dataclasses
import os

from pipeline.config import PipelineConfig, load_config
from pipeline.sample.synth import SynthSpec
from tests.benchmarks import b6, extrapolate
from tests.benchmarks.data import make_data
from tests.benchmarks.figures import component_report, size_rows
from tests.benchmarks.measures import TWO_WORKERS, beam_rows, row
from tests.benchmarks.runs import CONFIG_512, PipelineRun, run_pipeline
from tests.helpers import BLESS_ANY

TEST_SHARDS = 16
TEST_PER_TRAIN = (10_982 / 16) / (33_126 / 15)  # images per test shard, per train shard
MIN_EVAL_POSITIVES = 10  # the evaluation fold needs positives (ModelPackager checks)


def scale_spec(per_shard: int, train_shards: int, eval_shards: int) -> SynthSpec:
    """The 2020 release's shape at `per_shard` train images per shard, malignant often
    enough that the evaluation fold holds positives."""
    share = min(0.5, max(SynthSpec.malignant_share,
                         MIN_EVAL_POSITIVES / (eval_shards * per_shard)))
    return SynthSpec(images=per_shard * train_shards, size=512, train_shards=train_shards,
                     test_shards=TEST_SHARDS, malignant_share=round(share, 3),
                     test_images=TEST_SHARDS * max(2, round(per_shard * TEST_PER_TRAIN)))


def measure_size(per_shard: int, config: PipelineConfig, overrides: list[str],
                 data_root: str, scratch: str) -> tuple[dict, PipelineRun]:
    """One size: the release (generated once), the pipeline run (kept as far as it got
    when a component fails: that it fails is a result), the floors."""
    spec = scale_spec(per_shard, config.data.train_shards, len(config.split_plan.evaluation))
    release = make_data(data_root, spec)
    run = run_pipeline(release, os.path.join(scratch, f"scale-{per_shard}"), overrides,
                       CONFIG_512, keep_failed=True)
    report = component_report(run, release, config, f"{per_shard}/shard",
                              os.path.join(scratch, f"floors-{per_shard}"))
    return {**report, "per_shard": per_shard, "spec": dataclasses.asdict(spec)}, run


def growth_rows(small: dict, large: dict) -> list[dict]:
    """Per component that reads images and ran at both sizes: seconds per image and peak
    memory, large size against small (1.0: the cost per image does not grow; the goal for
    memory: flat)."""
    rows, label = [], f"{large['label']} vs {small['label']}"
    for name, big in large["components"].items():
        little = small["components"].get(name)
        if not big["images"] or not little or big["failed"] or little["failed"]:
            continue
        rows += [row(f"{name} s/image, {label}", big["seconds"] / big["images"],
                     little["seconds"] / little["images"], "s/img", "<= 1.0"),
                 row(f"{name} peak, {label} (MiB)", big["peak_mib"], little["peak_mib"],
                     "MiB", "<= 1.2")]
    return rows


def measure_scale(per_shard: int, training: tuple[str, ...], scratch: str,
                  data_root: str) -> dict:
    """The pipeline with a short `training` (overrides) at a quarter of `per_shard` and at
    `per_shard`, against floors; the B6 Evaluator; the estimates. Releases are kept in
    `data_root`. Returns the report's rows, runs and `scale` section."""
    overrides = [*training, *BLESS_ANY[1::2]]
    config = load_config(CONFIG_512, overrides)
    measured = [measure_size(n, config, overrides, data_root, scratch)
                for n in (max(4, per_shard // 4), per_shard)]
    sizes = [size for size, _ in measured]
    # The default's one process against two worker processes, at the full size.
    full, one = sizes[-1], measured[-1][1]
    two = run_pipeline(full["release"], os.path.join(scratch, f"scale-{per_shard}-x2"),
                       [*overrides, *TWO_WORKERS], CONFIG_512, keep_failed=True)
    evaluator_b6 = b6.measure_b6(full["release"], config, scratch)
    runs = {size["label"]: run for size, run in measured}
    runs[f"{full['label']}, 2 Beam workers"] = two
    runs.update(evaluator_b6.pop("runs"))
    rows = ([r for s in sizes for r in size_rows(s)] + growth_rows(*sizes)
            + beam_rows(one, two, full["label"]))
    if evaluator_b6["peak_mib"] is not None:
        failed = ", FAILED" if evaluator_b6["failed"] else ""
        rows.append(row(f"Evaluator B6 512 px TTA {evaluator_b6['tta']} (peak MiB{failed})",
                        evaluator_b6["peak_mib"], 8 * 1024, "MiB", "< 1.0 (8 GiB)"))
    scale = {"sizes": sizes, "b6": evaluator_b6,
             "extrapolation": extrapolate.estimate(  # the config's epochs, not the short run's
                 sizes, evaluator_b6, load_config(CONFIG_512).trainer.epochs)}
    return {"rows": rows, "scale": scale,
            "components": {name: run.summary() for name, run in runs.items()}}


# ---------------------------------------------------------------- the printed report

_COLUMNS = (("images", "images", ",.0f"), ("s", "seconds", ".1f"),
            ("img/s", "images_per_s", ".1f"), ("MB/s", "mb_per_s", ".2f"),
            ("peak MiB", "peak_mib", ",.0f"), ("wrote MB", "written_mb", ",.1f"))
_FLOOR_COLUMNS = (("floor s", "seconds", ".1f"), ("floor MiB", "peak_mib", ",.0f"),
                  ("floor MB", "written_mb", ",.1f"))


def _cell(values: dict | None, key: str, spec: str) -> str:
    value = (values or {}).get(key)
    return f"{'-' if value is None else format(value, spec):>10}"


def _estimate(stage: dict) -> str:
    if "seconds" not in stage:
        return f"{'-':>20} / {'-':>5}"
    return f"{stage['seconds'] / 3600:>20.2f} / {stage['peak_mib'] / 1024:5.1f}"


def _print_size(size: dict) -> None:
    print(f"\n512 px, {size['label']} ({size['train_images']:,} train, "
          f"{size['test_images']:,} test images); pipeline {size['wall']:.0f} s")
    print(f"{'component':<30}" + "".join(f"{title:>10}" for title, _, _ in
                                          _COLUMNS + _FLOOR_COLUMNS))
    for name, c in size["components"].items():
        notes = ["FAILED"] if c["failed"] else []
        notes += [c["floor"]["note"]] if c["floor"] and "note" in c["floor"] else []
        print(f"{name:<30}" + "".join(_cell(c, key, spec) for _, key, spec in _COLUMNS)
              + "".join(_cell(c["floor"], key, spec) for _, key, spec in _FLOOR_COLUMNS)
              + "".join(f"  {note}" for note in notes))


def _print_b6(b6: dict) -> None:
    if b6["peak_mib"] is None:
        print(f"\nEfficientNet-B6: the run to the Trainer failed at {', '.join(b6['failed'])}")
        return
    state = f"FAILED after {b6['seconds']:.0f} s" if b6["failed"] else (
        f"{b6['seconds']:.0f} s ({b6['seconds_per_image']:.2f} s/image)")
    print(f"\nEvaluator, EfficientNet-B6 at 512 px, TTA {b6['tta']}, {b6['images']} images: "
          f"{state}, peak {b6['peak_mib']:,.0f} MiB (goal under 8 GiB); its Trainer at "
          f"batch 2: peak {b6['trainer_peak_mib']:,.0f} MiB")


def _print_estimates(extrapolation: dict) -> None:
    releases = extrapolation["releases"]
    print(f"\n{'estimate: hours / peak GiB':<30}" + "".join(f"{name:>28}" for name in releases))
    for stage in dict.fromkeys(s for r in releases.values() for s in r["stages"]):
        print(f"{stage:<30}" + "".join(_estimate(r["stages"][stage]) for r in releases.values()))
    print(f"{'whole run / largest peak':<30}" + "".join(
        _estimate(r) for r in releases.values()))
    notes = {stage: s["note"] for r in releases.values() for stage, s in r["stages"].items()
             if "note" in s}
    for stage, note in notes.items():
        print(f"  no estimate for {stage}: {note} (left out of the whole run)")
    print("assumptions:")
    for assumption in extrapolation["assumptions"]:
        print(f"  - {assumption}")


def print_scale(scale: dict) -> None:
    """Per size, each component's figures and its floor's; the B6 Evaluator; the estimates
    for the real releases with their assumptions."""
    for size in scale["sizes"]:
        _print_size(size)
    _print_b6(scale["b6"])
    _print_estimates(scale["extrapolation"])
