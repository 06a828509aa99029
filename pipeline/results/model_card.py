"""The model card shipped with every pushed model, built from the run itself: what the model
is for, the data it saw, its metrics per slice with intervals, and its limitations."""

from __future__ import annotations

import datetime

from modules.task import TaskSpec
from pipeline.results.calibration import calibration_sentence, calibration_summary
from pipeline.results.classes import balanced_majority, confusion_markdown, per_class
from pipeline.results.gate import GATE_BOUNDS
from pipeline.results.packaging import PackagerSettings
from pipeline.results.eval_results import (NOT_VERIFIED, SliceResult, rate_intervals,
                                           unverified_slice)
from pipeline.results.report_ood import guard_card, guard_card_line
from pipeline.results.statistics import SplitStats


EXPLANATIONS = (
    "Grad-CAM heat maps: the model's `explain` signature answers, for an encoded image, "
    "where its last convolutional block saw what raised the score (`medtfx predict "
    "--explain DIR` writes them over the images). They show where the score came from, not "
    "why; a map may light up an artefact the model learned to rely on.")
EXPLANATIONS_NONE = "No heat maps: a hub backbone has no convolutional block to read."


def _share(part: float, whole: float) -> float | None:
    return round(part / whole, 4) if whole else None


def build_card(settings: PackagerSettings, slices: dict[str, SliceResult],
               threshold: float | None, statistics: dict[str, SplitStats],
               calibration: dict | None = None) -> dict:
    """`threshold`: None for a multi-class model without an operating rule. `calibration`:
    the map's record in the model's validation file."""
    task = settings.task
    data = {}
    for role, splits in settings.splits.items():
        examples = sum(statistics[s].examples for s in splits)
        counts = [sum(statistics[s].positives(task.label.key, code) for s in splits)
                  for code in range(len(task.label.classes))]
        data[role] = {"shards": splits, "examples": examples, "positives": counts[-1]}
        if not task.binary:
            data[role]["classes"] = dict(zip(task.label.classes, counts))
    rows = []
    for name, result in slices.items():
        matrix = result.at(threshold) if threshold is not None else None
        rates = rate_intervals(matrix) if matrix else {}
        rows.append({
            "slice": name, "examples": int(result.metrics.get("example_count") or 0),
            "positives": result.positives,
            "auc": result.metrics.get("auc"), "auc_ci": result.intervals.get("auc"),
            "sensitivity": matrix.sensitivity if matrix else None,
            "specificity": matrix.specificity if matrix else None,
            "sensitivity_ci": rates.get("sensitivity"),
            "specificity_ci": rates.get("specificity"),
            "precision": matrix.precision if matrix else None,
            # K classes: the top class's accuracy; the other rates are the urgent rule's
            "accuracy": (result.metrics.get("accuracy") if not task.binary
                         else matrix.accuracy if matrix else None),
            "f1": matrix.f1 if matrix else None,
            "majority_rate": result.majority_rate,
            "gated": result.gated})
    overall = slices["overall"].at(threshold) if threshold is not None else None
    point = None if overall is None else {
        "threshold": round(threshold, 4),
        "target_sensitivity": settings.target_sensitivity,
        "sensitivity": overall.sensitivity, "specificity": overall.specificity,
        "precision": overall.precision, "accuracy": overall.accuracy, "f1": overall.f1,
        "majority_rate": slices["overall"].majority_rate,
        "chosen_on": "the evaluation shards, which are also where the metrics come from"}
    card = {
        "model": {"pipeline": settings.pipeline_name, "backbone": settings.backbone,
                  "image_size": settings.image_size,
                  "created": datetime.datetime.now(datetime.timezone.utc).isoformat(
                      timespec="seconds")},
        "intended_use": settings.intended_use,
        "classes": {"names": task.label.classes, "positive": task.flagged,
                    "negative": task.negative if task.binary else "any other class"},
        "data": data,
        "operating_point": point,
        "calibration": calibration_summary(calibration, slices["overall"]),
        "gate": settings.gate.model_dump(include=set(GATE_BOUNDS)),
        "metrics": rows,
        "limitations": settings.limitations + _measured_limitations(
            rows, settings.target_sensitivity, task),
        "out_of_distribution": guard_card(settings.ood,
                                          slices["overall"].metrics.get("ood_flagged")),
        "explanations": EXPLANATIONS_NONE if settings.backbone.startswith("hub:")
        else EXPLANATIONS,
    }
    if not task.binary:
        result = slices["overall"]
        card["per_class"] = per_class(result, task)
        card["confusion"] = result.confusion
        card["baseline"] = {"accuracy": result.metrics.get("accuracy"),
                            "majority_rate": result.majority_rate,
                            "balanced_accuracy": result.metrics.get("balanced_accuracy"),
                            "balanced_majority_rate": balanced_majority(
                                len(task.label.classes))}
    return card


def _measured_limitations(rows: list[dict], target: float, task: TaskSpec) -> list[str]:
    notes = []
    small = [r["slice"] for r in _ungated(rows)]
    if small:
        notes.append(f"{NOT_VERIFIED.capitalize()}: " + ", ".join(small)
                     + f" (too few {task.label.positive} or {task.negative} examples to "
                     "judge).")
    short = [f"{r['slice']} ({r['sensitivity']:.2f})" for r in rows
             if r["gated"] and r["sensitivity"] is not None and r["sensitivity"] < target]
    if short:
        notes.append(f"At the operating threshold, sensitivity is below the target {target} "
                     "on: " + ", ".join(short) + ".")
    gated = [r for r in rows if r["gated"] and r["auc"] is not None]
    if gated:
        worst = min(gated, key=lambda r: r["auc"])
        notes.append(f"Lowest AUC among gated slices: {worst['slice']} ({worst['auc']:.3f}).")
    return notes


def _ungated(rows: list[dict]) -> list[dict]:
    """The slices the gate skipped; overall is always gated, on its own bound."""
    return [r for r in rows if not r["gated"] and r["slice"] != "overall"]


def _classes_markdown(card: dict) -> list[str]:
    """Three or more classes: the baseline line, each class's metrics, the confusion matrix."""
    if "per_class" not in card:
        return []
    base = card["baseline"]
    lines = ["", "## Classes", "",
             f"Accuracy {_number(base['accuracy'])}, where always answering the majority class "
             f"scores {_number(base['majority_rate'])}; balanced accuracy (mean recall) "
             f"{_number(base['balanced_accuracy'])}, where it scores "
             f"{_number(base['balanced_majority_rate'])}.", "",
             "| class | examples | recall | recall interval | precision | AUC one vs rest |",
             "|---|---|---|---|---|---|"]
    for r in card["per_class"]:
        ci = r.get("recall_ci")
        lines.append(f"| {r['class']} | {r['examples']} | {_number(r['recall'])} | "
                     f"{'n/a' if ci is None else f'{ci[0]:.3f}-{ci[1]:.3f}'} | "
                     f"{_number(r['precision'])} | {_number(r['auc'])} |")
    return lines + ["", "Confusion matrix of the top class:", "",
                    *confusion_markdown(card["confusion"], card["classes"]["names"])]


def _number(value, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _with_interval(value, interval) -> str:
    """'0.850 (0.620-0.950)': a rate with its Wilson interval, when it has one."""
    return _number(value) + ("" if interval is None else
                             f" ({interval[0]:.3f}-{interval[1]:.3f})")


def render_markdown(card: dict) -> str:
    model, point = card["model"], card["operating_point"]
    positive, negative = card["classes"]["positive"], card["classes"]["negative"]
    lines = [f"# Model card: {model['pipeline']}", "",
             f"{model['backbone']} at {model['image_size']} px, created {model['created']}.", "",
             "## Intended use", "", card["intended_use"], "", "## Data", ""]
    shown = card["classes"]["names"] if "per_class" in card else [positive]
    lines += ["| role | shards | examples | " + " | ".join(shown) + " |",
              "|---" * (3 + len(shown)) + "|"]
    for role, d in card["data"].items():
        counts = [d["classes"][c] for c in shown] if "per_class" in card else [d["positives"]]
        lines.append(f"| {role} | {', '.join(d['shards'])} | {d['examples']} | "
                     + " | ".join(map(str, counts)) + " |")
    lines += _classes_markdown(card)
    lines += ["", "## Operating point", ""]
    if point is None:
        lines += ["No operating rule: the model answers the class with the highest "
                  "probability."]
    else:
        lines += [
              f"A case is called {positive} when its probability is at least "
              f"{point['threshold']}: "
              "the threshold with the best specificity among those reaching sensitivity "
              f"{point['target_sensitivity']} on {point['chosen_on']}. There: sensitivity "
              f"{_number(point['sensitivity'])}, specificity {_number(point['specificity'])}, "
              f"precision {_number(point['precision'])}, F1 {_number(point['f1'])}; accuracy "
              f"{_number(point['accuracy'])}, where always answering the commoner class "
              f"scores {_number(point['majority_rate'])}."]
    if card.get("calibration"):
        lines += ["", f"Probabilities: {calibration_sentence(card['calibration'])}."]
    lines += guard_card_line(card)
    lines += ["",
              "## Metrics per slice (95% intervals)", "",
              f"| slice | examples | {positive} | AUC | AUC interval | sensitivity (95%) | "
              "specificity (95%) "
              "| precision | accuracy | F1 | gated |", "|---" * 11 + "|"]
    for r in card["metrics"]:
        interval = ("n/a" if r["auc_ci"] is None
                    else f"{r['auc_ci'][0]:.3f}-{r['auc_ci'][1]:.3f}")
        lines.append(f"| {r['slice']} | {r['examples']} | {r['positives']} | "
                     f"{_number(r['auc'])} | {interval} | "
                     f"{_with_interval(r['sensitivity'], r['sensitivity_ci'])} | "
                     f"{_with_interval(r['specificity'], r['specificity_ci'])} | "
                     f"{_number(r['precision'])} | "
                     f"{_number(r['accuracy'])} | {_number(r['f1'])} | "
                     f"{'yes' if r['gated'] else 'no'} |")
    small = _ungated(card["metrics"])
    if small:
        lines += ["", f"## {NOT_VERIFIED.capitalize()}", "",
                  f"Too few {positive} or {negative} examples to judge: these slices could "
                  "not block the model, and nothing here was checked.", ""]
        lines += ["- " + unverified_slice(r["slice"], r["examples"], r["positives"], positive,
                                          r["auc"], r["auc_ci"]) for r in small]
    if card.get("explanations"):
        lines += ["", "## Explanations", "", card["explanations"]]
    lines += ["", "## Limitations", ""] + [f"- {note}" for note in card["limitations"]]
    return "\n".join(lines) + "\n"
