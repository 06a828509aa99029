"""A multi-class model's results class by class: recall, precision and one-vs-rest AUC with
their intervals and the last blessed model's values, and the confusion matrix of the top
class. The summary, the model card and the report all show them from here."""

from __future__ import annotations

from modules.task import TaskSpec
from pipeline.results.eval_results import CLASS_OF, SliceResult

CLASS_METRICS = ("recall", "precision", "auc")


def per_class(result: SliceResult, task: TaskSpec) -> list[dict]:
    """One row per class, in code order: its examples and CLASS_METRICS (None where the
    slice cannot say), with `_ci` intervals and `baseline_` values where there are any."""
    counts = result.class_counts
    rows = []
    for code, name in enumerate(task.label.classes):
        row: dict = {"class": name, "examples": counts[code] if counts else 0}
        for metric in CLASS_METRICS:
            key = f"{metric}{CLASS_OF}{name}"
            row[metric] = result.metrics.get(key)
            if key in result.intervals:
                row[f"{metric}_ci"] = list(result.intervals[key])
            if key in result.baseline:
                row[f"baseline_{metric}"] = result.baseline[key]
        rows.append(row)
    return rows


def balanced_majority(classes: int) -> float:
    """The balanced accuracy of always answering one class: the baseline to beat."""
    return 1.0 / classes


def confusion_markdown(confusion: list[list[float]], classes: list[str]) -> list[str]:
    """The confusion matrix as a markdown table: a row per actual class."""
    lines = ["| actual \\ predicted | " + " | ".join(classes) + " |",
             "|---" * (len(classes) + 1) + "|"]
    lines += [f"| {name} | " + " | ".join(f"{int(v)}" for v in row) + " |"
              for name, row in zip(classes, confusion)]
    return lines
