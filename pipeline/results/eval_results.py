"""The Evaluator's output, read back: metrics with intervals, baseline and change per slice,
the curves, the checks that failed, and the operating point picked from the curves.
The intervals are computed here, from the counts and curves (pipeline/results/intervals.py).

The summary, the model card (in the packaging component) and the report all read the
evaluation through this module, so they cannot disagree.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable

import numpy as np
import tensorflow as tf
from tensorflow_model_analysis.proto import metrics_for_slice_pb2, validation_result_pb2

from modules.calibration_metrics import BRIER_NAME, ECE_NAME, LOWER, UPPER
from modules.metrics import GATED_AUC_NAME
from modules.operating_point import (Matrix, curve_from_proto, majority_class_rate,
                                     operating_point)
from modules.task import TaskSpec
from pipeline.results.intervals import (auc_interval, auc_pr_interval,
                                        balanced_accuracy_interval, histogram, wilson)

CANDIDATE_NAMES = ("", "candidate")  # TFX names the models only when a baseline exists
BASELINE_NAME = "baseline"
# Ranking metrics mean nothing on a slice without both classes (TFMA reports 0 there).
NEED_BOTH_CLASSES = ("auc", "auc_pr", "specificity_at_sensitivity",
                     "sensitivity_at_specificity")


@dataclasses.dataclass(frozen=True)
class Bucket:
    """One calibration bucket: predictions in [low, high)."""

    low: float
    high: float
    count: float
    labels: float
    predictions: float


@dataclasses.dataclass
class SliceResult:
    metrics: dict[str, float | None] = dataclasses.field(default_factory=dict)
    intervals: dict[str, tuple[float, float]] = dataclasses.field(default_factory=dict)
    baseline: dict[str, float | None] = dataclasses.field(default_factory=dict)
    changes: dict[str, float | None] = dataclasses.field(default_factory=dict)
    curve: list[Matrix] = dataclasses.field(default_factory=list)
    baseline_curve: list[Matrix] = dataclasses.field(default_factory=list)
    calibration: list[Bucket] = dataclasses.field(default_factory=list)
    positives: int = 0
    negatives: int = 0
    gated: bool = False  # enough examples of both classes for the slice gate
    family: tuple[str, ...] = ()  # the features sliced on: ("sex",); () overall
    # Three or more classes: examples by actual (rows) and top predicted class (columns),
    # and each class's one-vs-rest curve; `curve` is then the urgent classes' curve.
    confusion: list[list[float]] = dataclasses.field(default_factory=list)
    class_curves: dict[str, list[Matrix]] = dataclasses.field(default_factory=dict)

    @property
    def majority_rate(self) -> float | None:
        """The accuracy to beat: always answering the slice's commoner class."""
        if self.confusion:
            total = sum(map(sum, self.confusion))
            return max(map(sum, self.confusion)) / total if total else None
        share = self.metrics.get("mean_label")
        return None if share is None else majority_class_rate(share)

    @property
    def class_counts(self) -> list[int]:
        return [round(sum(row)) for row in self.confusion]

    def at(self, threshold: float) -> Matrix | None:
        """The confusion matrix at the curve threshold nearest `threshold`."""
        if not self.curve:
            return None
        return min(self.curve, key=lambda m: abs(m.threshold - threshold))


def _number(value: float) -> float | None:
    return None if math.isnan(value) else value


def _metric(value: metrics_for_slice_pb2.MetricValue) -> float | None:
    """A metric's number; None (missing, never 0.0) when it is NaN or TFMA could not
    compute it (it then writes a debug message or an unknown type where the number goes)."""
    if value.WhichOneof("type") != "double_value":
        return None
    return _number(value.double_value.value)


def _records(pattern: str):
    for path in sorted(tf.io.gfile.glob(pattern)):
        for record in tf.data.TFRecordDataset(path):
            yield record.numpy()


SLICE_AND, SLICE_IS = " & ", " = "
CLASS_OF = "/"  # a per-class metric's name in SliceResult: "recall/malignant_mass"
MACRO = "macro "


def slice_name(slice_key: metrics_for_slice_pb2.SliceKey, task: TaskSpec) -> str:
    """'overall', or 'feature = value' joined by ' & ', as people read them: 'anatomic site
    = lower extremity & sex = female', 'age = 45-59'."""
    parts = []
    for single in slice_key.single_slice_keys:
        value = getattr(single, single.WhichOneof("kind"))
        if isinstance(value, bytes):
            value = value.decode()
        parts.append(SLICE_IS.join(task.slice_value(single.column, value)))
    return SLICE_AND.join(parts) or "overall"


def load_evaluation(evaluation_uri: str, task: TaskSpec, min_positives: int,
                    min_negatives: int) -> dict[str, SliceResult]:
    """Every slice of an evaluation, overall first; the minimum counts are the gate's."""
    results: dict[str, SliceResult] = {}
    for record in _records(f"{evaluation_uri}/metrics-*"):
        sliced = metrics_for_slice_pb2.MetricsForSlice.FromString(record)
        result = results.setdefault(slice_name(sliced.slice_key, task), SliceResult())
        result.family = tuple(k.column for k in sliced.slice_key.single_slice_keys)
        for kv in sliced.metric_keys_and_values:
            if kv.value.HasField("multi_class_confusion_matrix_at_thresholds"):
                result.confusion = _confusion(kv.value, len(task.label.classes))
                continue
            value = _metric(kv.value)
            name = _metric_name(kv.key, task)
            if kv.key.is_diff:
                result.changes[name] = value
            elif kv.key.model_name == BASELINE_NAME:
                result.baseline[name] = value
            elif kv.key.model_name in CANDIDATE_NAMES:
                result.metrics[name] = value
    for record in _records(f"{evaluation_uri}/plots-*"):
        sliced = metrics_for_slice_pb2.PlotsForSlice.FromString(record)
        result = results.setdefault(slice_name(sliced.slice_key, task), SliceResult())
        for kv in sliced.plot_keys_and_values:
            baseline = kv.key.model_name == BASELINE_NAME
            matrices = curve_from_proto(kv.value.confusion_matrix_at_thresholds)
            _, _, cls = _metric_name(kv.key, task).partition(CLASS_OF)
            if matrices and cls:
                if not baseline:
                    result.class_curves[cls] = matrices
            elif matrices:
                setattr(result, "baseline_curve" if baseline else "curve", matrices)
            if kv.value.calibration_histogram_buckets.buckets and not baseline:
                result.calibration = [
                    Bucket(b.lower_threshold_inclusive, b.upper_threshold_exclusive,
                           b.num_weighted_examples.value, b.total_weighted_label.value,
                           b.total_weighted_refined_prediction.value)
                    for b in kv.value.calibration_histogram_buckets.buckets
                    if b.num_weighted_examples.value]
    for result in results.values():
        if task.binary:
            _count_classes(result, min_positives, min_negatives)
        else:  # the urgent classes are the operating rule's positives
            counts = result.class_counts
            result.positives = sum(counts[k] for k in task.urgent_ids) if counts else 0
            result.negatives = sum(counts) - result.positives
        result.intervals = {**_intervals(result, task), **_metric_intervals(result.metrics)}
    return dict(sorted(results.items(), key=lambda kv: (kv[0] != "overall", kv[0])))


def rate_intervals(matrix: Matrix) -> dict[str, tuple[float, float]]:
    """Wilson intervals of the sensitivity and specificity at one threshold, from its
    counts (none where a class is absent)."""
    found = {"sensitivity": wilson(matrix.sensitivity, matrix.tp + matrix.fn)
             if matrix.sensitivity is not None else None,
             "specificity": wilson(matrix.specificity, matrix.tn + matrix.fp)
             if matrix.specificity is not None else None}
    return {name: ci for name, ci in found.items() if ci is not None}


def _metric_name(key, task: TaskSpec) -> str:
    """`key.name`, or "NAME/CLASS" for a class's metric of a multi-class model (recall,
    precision, one-vs-rest AUC). A macro-averaged AUC is the multi-class model's "auc"."""
    if key.HasField("sub_key") and key.sub_key.HasField("class_id"):
        return f"{key.name}{CLASS_OF}{task.label.classes[key.sub_key.class_id.value]}"
    return key.name


def _confusion(value: metrics_for_slice_pb2.MetricValue, classes: int) -> list[list[float]]:
    """The K x K counts of the top class, from TFMA's matrix at threshold 0."""
    counts = [[0.0] * classes for _ in range(classes)]
    for matrix in value.multi_class_confusion_matrix_at_thresholds.matrices[:1]:
        for entry in matrix.entries:
            if 0 <= entry.predicted_class_id < classes:
                counts[entry.actual_class_id][entry.predicted_class_id] += \
                    entry.num_weighted_examples
    return counts


def _count_classes(result: SliceResult, min_positives: int, min_negatives: int) -> None:
    examples = result.metrics.get("example_count") or 0
    result.positives = round(examples * (result.metrics.get("mean_label") or 0))
    result.negatives = round(examples) - result.positives
    result.gated = result.positives >= min_positives and result.negatives >= min_negatives
    if not (result.positives and result.negatives):
        for name in NEED_BOTH_CLASSES:
            for values in (result.metrics, result.baseline, result.changes):
                if name in values:
                    values[name] = None


def _intervals(result: SliceResult, task: TaskSpec) -> dict[str, tuple[float, float]]:
    """95% intervals of the metrics that have one in closed form, from the slice's counts
    and curves. None for the calibration ratio, the example count, accuracy over the
    majority class and the macro AUC (its one-vs-rest AUCs share examples)."""
    if task.binary:
        rules = {"auc": _auc_rule(result.curve),
                 "mean_label": functools.partial(
                     wilson, n=result.metrics.get("example_count") or 0),
                 "sensitivity_at_specificity": functools.partial(wilson, n=result.positives),
                 "specificity_at_sensitivity": functools.partial(wilson, n=result.negatives),
                 "auc_pr": functools.partial(auc_pr_interval, positives=result.positives)}
    else:
        classes = len(task.label.classes)
        counts = np.asarray(result.confusion or np.zeros((classes, classes)), float)
        rules = {"accuracy": functools.partial(wilson, n=counts.sum()),
                 "balanced_accuracy": functools.partial(balanced_accuracy_interval,
                                                        confusion=counts)}
        for k, name in enumerate(task.label.classes):
            rules[f"recall{CLASS_OF}{name}"] = functools.partial(wilson, n=counts[k].sum())
            rules[f"precision{CLASS_OF}{name}"] = functools.partial(wilson,
                                                                    n=counts[:, k].sum())
            rules[f"auc{CLASS_OF}{name}"] = _auc_rule(result.class_curves.get(name, []))
    found = {name: rule(result.metrics[name]) for name, rule in rules.items()
             if result.metrics.get(name) is not None}
    return {name: interval for name, interval in found.items() if interval is not None}


def _metric_intervals(metrics: dict[str, float | None]) -> dict[str, tuple[float, float]]:
    """The intervals a metric computes itself (ECE and Brier score: modules/
    calibration_metrics.py), their ends moved out of `metrics`."""
    found = {}
    for name in (ECE_NAME, BRIER_NAME):
        low, high = metrics.pop(name + LOWER, None), metrics.pop(name + UPPER, None)
        if low is not None and high is not None:
            found[name] = (low, high)
    return found


def _auc_rule(curve: list[Matrix]) -> Callable[[float], tuple[float, float] | None]:
    """DeLong's interval around TFMA's AUC, from the curve's histogram of scores per bin."""
    positives, negatives = score_histograms(curve)
    return functools.partial(auc_interval, positives=positives, negatives=negatives)


def score_histograms(curve: list[Matrix]) -> tuple[np.ndarray, np.ndarray]:
    """Positives and negatives per score bin between the curve's thresholds, lowest first."""
    ordered = sorted(curve, key=lambda m: m.threshold)
    first = ordered[0] if ordered else Matrix(0.0, 0.0, 0.0, 0.0, 0.0)
    return (histogram([m.tp for m in ordered], first.tp + first.fn),
            histogram([m.fp for m in ordered], first.fp + first.tn))


def shown(value: float | None) -> str:
    """A metric as the summary and the report print it: "missing" rather than a number
    it does not have."""
    return "missing" if value is None else f"{value:.3f}"


NOT_VERIFIED = "not verified (too small to gate)"


def unverified_slice(name: str, examples: int, positives: int, positive: str,
                     auc: float | None,
                     interval: list[float] | tuple[float, float] | None) -> str:
    """A slice the gate skipped, as the summary and the model card list it under
    NOT_VERIFIED: its size, and its AUC with the interval when it has them."""
    text = f"{name}: {examples} example{'' if examples == 1 else 's'}, {positives} {positive}"
    if auc is not None:
        text += f", AUC {auc:.3f}"
        if interval is not None:
            text += f" [{interval[0]:.3f}, {interval[1]:.3f}]"
    return text


def operating_threshold(curve: list[Matrix], target_sensitivity: float) -> float | None:
    """The threshold shipped with the model: among those reaching the target sensitivity,
    the best specificity (modules/operating_point.py). None: no positives."""
    point = operating_point(curve, target_sensitivity)
    return None if point is None else point.threshold


def failed_checks(evaluation_uri: str, task: TaskSpec) -> list[dict]:
    """Every threshold the candidate missed: metric (with its class, for a class's recall),
    slice, value and bound. The slice gate is reported as the slice's AUC."""
    failed = []
    for record in _records(f"{evaluation_uri}/validations*"):
        result = validation_result_pb2.ValidationResult.FromString(record)
        for spec in result.missing_slices:  # a gated family the data does not carry
            failed.append({"metric": "slices", "slice": "*".join(spec.feature_keys),
                           "value": 0, "bound": {"at_least": 1}})
        for per_slice in result.metric_validations_per_slice:
            where = slice_name(per_slice.slice_key, task)
            for failure in per_slice.failures:
                threshold = failure.metric_threshold
                key = failure.metric_key
                metric, _, cls = _metric_name(key, task).partition(CLASS_OF)
                metric = "auc" if metric == GATED_AUC_NAME else metric
                if key.HasField("aggregation_type"):
                    metric = MACRO + metric
                if cls:
                    metric += f" on class {cls}"
                if failure.metric_key.is_diff:
                    metric += " change vs baseline"
                    bound = {"at_least": threshold.change_threshold.absolute.value}
                elif threshold.value_threshold.HasField("upper_bound"):
                    bound = {"at_most": threshold.value_threshold.upper_bound.value}
                else:
                    bound = {"at_least": threshold.value_threshold.lower_bound.value}
                value = _metric(failure.metric_value)
                failed.append({"metric": metric, "slice": where,
                               "value": None if value is None else round(value, 4),
                               "bound": bound})
    return failed
