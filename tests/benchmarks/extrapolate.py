"""What the scale benchmark's two sizes say about the real releases: each component's time
and peak memory for the full 2020 release at 512 px and the 70k release at 768 px, both with
EfficientNet-B6. Pure arithmetic on the measured figures; every assumption is stated in the
output (ASSUMPTIONS)."""

from __future__ import annotations

import dataclasses

INFERENCE = ("Evaluator", "BulkInferrer")  # per-image cost is the model's forward passes
FLAT = 1.2  # peak memory within 20% between the sizes counts as flat


@dataclasses.dataclass(frozen=True)
class Release:
    name: str
    train: int
    test: int
    pixels: float  # per image, against 512 x 512


RELEASES = (Release("2020 release, 512 px, B6", 33_126, 10_982, 1.0),
            Release("70k release, 768 px, B6", 70_000, 10_982, (768 / 512) ** 2))

ASSUMPTIONS = [
    "seconds = fixed + per-image x images, both through the two measured sizes (a negative "
    "slope counts as none; a component that reads no images takes the larger of its two "
    "times); images as the component reads them (every train shard, a fold, or the test "
    "shards), scaled to the release",
    "the 70k release: 70,000 train images in 15 shards and the 2020 test set (10,982); every "
    "per-image cost x2.25 (pixels; JPEG bytes taken to grow with pixels too)",
    "B6: the Evaluator's and BulkInferrer's per-image cost x r, r = B6 Evaluator seconds "
    "per image (its seconds less B0's fixed Evaluator seconds, per image) / B0 Evaluator "
    "seconds per image; their peak + the B6 Evaluator's peak over B0's at the quarter size "
    "(x2.25 at 768 px)",
    "peak memory: the larger of the two sizes when within 20% (flat), else linear in images",
    "Trainer: the measured two-step Trainer (its label count grows with the training fold), "
    "and separately training: siim-isic-512.yaml's epochs x training-fold images x 3 "
    "forward passes (forward and backward) of B6, a forward pass being B6's Evaluator "
    "seconds per image (as above) / TTA; its peak is B6's at batch 2 (the config's batch 32 "
    "is not measured)",
    "the measuring machine's cores, Beam in one process (the default); the stages run one "
    "after another",
]


def fit(small: dict, large: dict) -> tuple[float, float]:
    """(fixed seconds, seconds per image) through the two sizes; a negative slope (noise)
    counts as none."""
    if not large["images"] or large["images"] == small["images"]:
        return max(small["seconds"], large["seconds"]), 0.0
    slope = max(0.0, (large["seconds"] - small["seconds"]) / (large["images"] - small["images"]))
    return max(0.0, large["seconds"] - slope * large["images"]), slope


def peak(small: dict, large: dict, images: float) -> float:
    """Peak MiB at `images`: flat, or the line through the two sizes."""
    low, high = small["peak_mib"], large["peak_mib"]
    if high <= FLAT * low or not large["images"] or large["images"] == small["images"]:
        return max(low, high)
    return high + (high - low) * (images - large["images"]) / (large["images"]
                                                               - small["images"])


@dataclasses.dataclass(frozen=True)
class B6Costs:
    forward: float  # seconds of one forward pass of one image at 512 px
    speed: float  # B6's seconds per evaluated image against B0's
    extra_mib: float  # B6's Evaluator peak over B0's
    trainer_peak_mib: float  # at batch 2


def b6_costs(small: dict, large: dict, b6: dict) -> B6Costs:
    """From B6's Evaluator seconds per image beyond B0's fixed Evaluator seconds, and its
    peak against B0's Evaluator at the smaller size."""
    fixed, b0 = fit(small, large)
    per_image = max(b6["seconds"] - fixed, 0.0) / b6["images"]
    b0 = b0 or large["seconds"] / large["images"]  # no growth between the sizes: noise
    return B6Costs(per_image / b6["tta"], per_image / b0,
                   max(0.0, b6["peak_mib"] - small["peak_mib"]), b6["trainer_peak_mib"])


def component(name: str, small: dict, large: dict, release: Release, totals: dict,
              b6: B6Costs | None) -> dict:
    """One component's estimate for `release`."""
    kind = large["kind"]
    images = large["images"] * getattr(release, kind) / totals[kind] if kind else 0
    fixed, per_image = fit(small, large)
    speed, extra_mib = (b6.speed, b6.extra_mib) if name in INFERENCE else (1.0, 0.0)
    return {"images": round(images),
            "seconds": fixed + per_image * speed * release.pixels * images,
            "peak_mib": peak(small, large, images) + extra_mib * release.pixels}


def training(fold: float, release: Release, forward: float, peak_mib: float,
             epochs: int) -> dict:
    """Training for `epochs` on a training fold of `fold` images, one B6 forward pass at
    512 px taking `forward` seconds (ASSUMPTIONS)."""
    return {"images": round(fold),
            "seconds": epochs * fold * 3 * forward * release.pixels,
            "peak_mib": peak_mib * release.pixels}


def unmeasured(name: str, sizes: list[dict]) -> str | None:
    """Why a component has no estimate (it did not run, or failed, at a size), else None."""
    for size in sizes:
        c = size["components"].get(name)
        if c is None:
            return f"did not run at {size['label']}"
        if c["failed"]:
            return (f"failed at {size['label']} after {c['seconds']:.0f} s, peak "
                    f"{c['peak_mib']:,.0f} MiB")
    return None


def estimate_release(release: Release, sizes: list[dict], b6: B6Costs | None, epochs: int,
                     why: dict[str, str]) -> dict:
    """Every stage's estimate for `release`; a stage that cannot be estimated says why."""
    small, large = sizes[0], sizes[-1]
    totals = {"train": large["train_images"], "test": large["test_images"]}
    stages = {}
    for name in dict.fromkeys([*small["components"], *large["components"]]):
        note = why.get(name) or (why["B6"] if name in INFERENCE and not b6 else None)
        stages[name] = {"note": note} if note else component(
            name, small["components"][name], large["components"][name], release, totals, b6)
    training_note = why.get("Trainer") or why["B6"]
    if training_note:
        stages[f"Trainer, {epochs} epochs"] = {"note": training_note}
    else:
        fold = large["components"]["Trainer"]["images"] * release.train / totals["train"]
        stages[f"Trainer, {epochs} epochs"] = training(fold, release, b6.forward,
                                                       b6.trainer_peak_mib, epochs)
    known = [s for s in stages.values() if "seconds" in s]
    return {"train_images": release.train, "test_images": release.test, "stages": stages,
            "seconds": sum(s["seconds"] for s in known),
            "peak_mib": max(s["peak_mib"] for s in known),
            "unknown": [name for name, s in stages.items() if "note" in s]}


def estimate(sizes: list[dict], b6: dict, epochs: int) -> dict:
    """Every component's seconds and peak MiB for each of RELEASES, training for `epochs`,
    with ASSUMPTIONS; the whole run's seconds and largest peak leave out the stages without
    an estimate."""
    why = {name: note for name in sizes[-1]["components"] | sizes[0]["components"]
           if (note := unmeasured(name, sizes))}
    why["B6"] = (f"B6 {', '.join(b6['failed'])} failed" if b6["failed"] else
                 "Evaluator" in why and f"no B0 Evaluator to compare B6 with: {why['Evaluator']}")
    costs = None if why["B6"] else b6_costs(sizes[0]["components"]["Evaluator"],
                                            sizes[-1]["components"]["Evaluator"], b6)
    return {"assumptions": ASSUMPTIONS, "b6": costs and dataclasses.asdict(costs),
            "releases": {release.name: estimate_release(release, sizes, costs, epochs, why)
                         for release in RELEASES}}
