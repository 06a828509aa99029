"""The out-of-distribution guard in a run's results: its entry in run_summary.json, its summary
line, its report section and its model card line.

The guard (modules/ood.py) is fitted by the Trainer (its numbers are in the Model's
validation file); the Evaluator counts what it flags on the evaluation fold (the
`ood_flagged` metric, per slice) and the SubmissionWriter on the test shards (the
Submission's `ood_flagged` property).
"""

from __future__ import annotations

import html

from modules.artifacts import OOD_FLAGGED
from modules.settings import OodSettings

DETECTOR = "Mahalanobis distance of the backbone's pooled features to the nearest class mean"


def _share(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def guard_summary(training: dict, metrics: dict, submissions: list) -> dict | None:
    """run_summary.json's `ood`: how the guard was fitted (the single model's, or the first
    ensemble member's), the share it flags on the evaluation fold and on the test shards;
    None when the model has no guard."""
    fitted = [recorded["ood"] for _, recorded in sorted(training.items())
              if recorded.get("ood")]
    if not fitted:
        return None
    overall = metrics.get("overall", {})
    written = [a for a in submissions if OOD_FLAGGED in a.custom_properties]
    test_images = written[0].custom_properties["examples"].int_value if written else 0
    return {**fitted[0], "detector": DETECTOR,
            "evaluation_flagged": overall.get("ood_flagged"),
            "evaluation_examples": overall.get("example_count"),
            "test_flagged": (round(written[0].custom_properties[OOD_FLAGGED].int_value
                                   / test_images, 4) if test_images else None),
            "test_images": test_images}


def guard_line(summary: dict) -> str | None:
    """One summary line: what the guard flags where."""
    guard = summary.get("ood")
    if not guard:
        return None
    test = (f", test shards {_share(guard['test_flagged'])} of {guard['test_images']}"
            if guard.get("test_images") else "")
    return (f"        out-of-distribution guard (threshold {guard['threshold']:.2f}, the "
            f"{guard['quantile']:g} quantile of validation): flags evaluation fold "
            f"{_share(guard['evaluation_flagged'])}{test}")


def guard_section(summary: dict) -> str:
    """The report's section: the detector, its threshold, and the shares it flags overall,
    on the test shards and on the slices it flags most."""
    guard = summary.get("ood")
    if not guard:
        return ("<p>No out-of-distribution guard: the model answers every image as one of "
                "its kind (trained with trainer.ood.enabled off, or before the guard "
                "existed).</p>")
    slices = sorted(((name, m) for name, m in summary["metrics"].items()
                     if name != "overall" and m.get("ood_flagged") is not None),
                    key=lambda item: -item[1]["ood_flagged"])[:5]
    rows = "".join(f"<tr><td>{html.escape(name)}</td><td>{_share(m['ood_flagged'])}</td>"
                   f"<td>{int(m.get('example_count') or 0)}</td></tr>" for name, m in slices)
    test = (f"{_share(guard['test_flagged'])} of the {guard['test_images']} test images"
            if guard.get("test_images") else "no test shards were scored")
    return (f"<p>Every answer carries <code>ood_score</code>, the {DETECTOR} (one covariance "
            "shared by the classes, Ledoit-Wolf shrinkage), fitted on "
            f"{guard['train_images']} training images ({guard['features']} features, "
            f"{guard['seconds']:.1f} s), and <code>in_distribution</code>: 0 when the score "
            f"is above {guard['threshold']:.3f}, the {guard['quantile']:g} quantile of "
            f"{guard['validation_images']} validation images. A flagged image is unlike "
            "what the model was trained on: its probability is not evidence.</p>"
            f"<p>Flagged: <b>{_share(guard['evaluation_flagged'])}</b> of the evaluation "
            f"fold (expected near {_share(1 - guard['quantile'])}); {test}.</p>"
            + (f"<table><tr><th>slice flagged most</th><th>flagged</th><th>examples</th>"
               f"</tr>{rows}</table>" if rows else ""))


def guard_card(ood: OodSettings | None, overall_flagged: float | None) -> dict | None:
    """The model card's `out_of_distribution` entry."""
    if ood is None or not ood.enabled:
        return None
    return {"detector": DETECTOR, "quantile": ood.quantile,
            "evaluation_flagged": overall_flagged}


def guard_card_line(card: dict) -> list[str]:
    """The model card's line on the guard (none without one)."""
    guard = card.get("out_of_distribution")
    if not guard:
        return []
    return ["", f"Out-of-distribution guard: every answer carries `in_distribution`, 0 when "
                f"the image's {guard['detector']} exceeds the {guard['quantile']:g} quantile "
                "of the validation fold's; such an image is unlike the training data and its "
                f"probability is not evidence. It flags {_share(guard['evaluation_flagged'])} "
                "of the evaluation fold."]
