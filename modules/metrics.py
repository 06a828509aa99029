"""TFMA metrics that exist for the gate.

`auc_gate`: AUC where a slice is big enough to judge a model by. TFMA applies a metric
threshold to every slice it computes, and a slice with two malignant cases has an AUC that
says nothing. It is the slice's AUC when it holds at least `min_positives` malignant and
`min_negatives` benign examples, and 1.0 (passes any lower bound) otherwise. Reports show the
plain `auc` of every slice; only blessing reads this one.

`accuracy_over_majority`: accuracy at the operating threshold minus the majority-class rate.
The threshold is chosen after evaluation, so no TFMA threshold can name it; this metric
chooses it from the ConfusionMatrixPlot's own curve (the same computation, which TFMA runs
once) by the packager's rule (modules/operating_point.py), so the gate judges the threshold
that is shipped.

For three or more classes, `TopClassRate` reads accuracy, balanced accuracy (over the
majority-class answer) and each class's recall and precision off TFMA's K x K confusion
matrix of the top class, so they are gated in TFMA like the AUCs; `UrgentConfusionMatrixPlot`
is the operating rule's curve: the urgent classes' summed probability against "the case is
in an urgent class", at the ConfusionMatrixPlot's thresholds, so the packager picks its
threshold (and the summary its rates) exactly as for a binary model.
"""

from __future__ import annotations

import math

import apache_beam as beam
import numpy as np

from tensorflow_model_analysis.metrics import (
    binary_confusion_matrices,
    confusion_matrix_metrics,
    confusion_matrix_plot,
    metric_types,
    metric_util,
    multi_class_confusion_matrix_metrics,
)

from modules.operating_point import curve_from_proto, majority_class_rate, operating_point

GATED_AUC_NAME = "auc_gate"
ACCURACY_OVER_MAJORITY_NAME = "accuracy_over_majority"
BALANCED_OVER_MAJORITY_NAME = "balanced_accuracy_over_majority"
URGENT_PLOT_NAME = "urgent_confusion_matrix_plot"
# The rates TopClassRate computes; recall and precision are per class (sub key class_id).
RATES = ("accuracy", "balanced_accuracy", BALANCED_OVER_MAJORITY_NAME, "recall", "precision")
PER_CLASS_RATES = ("recall", "precision")


class GatedAUC(confusion_matrix_metrics.AUC):
    def __init__(self, min_positives: int = 10, min_negatives: int = 10,
                 name: str = GATED_AUC_NAME, num_thresholds: int | None = None,
                 code: str = ""):
        """`code`: the fingerprint of the Evaluator's project code, for TFX's cache (see
        pipeline/eval_config.py); it changes nothing here."""
        confusion_matrix_metrics.ConfusionMatrixMetricBase.__init__(
            self, num_thresholds=num_thresholds, name=name, curve="ROC",
            summation_method="interpolation", min_positives=min_positives,
            min_negatives=min_negatives)

    def _default_name(self) -> str:
        return GATED_AUC_NAME

    def _metric_value(self, curve: str, summation_method: str, key: metric_types.MetricKey,
                      matrices: binary_confusion_matrices.Matrices, min_positives: int,
                      min_negatives: int) -> float:
        # At the lowest threshold every example is predicted positive: tp + fn counts the
        # malignant examples, tn + fp the benign ones.
        positives = matrices.tp[0] + matrices.fn[0]
        negatives = matrices.tn[0] + matrices.fp[0]
        if positives < min_positives or negatives < min_negatives:
            return 1.0
        return super()._metric_value(curve, summation_method, key, matrices)


class AccuracyOverMajority(metric_types.Metric):
    def __init__(self, target_sensitivity: float = 0.9,
                 num_thresholds: int = confusion_matrix_plot.DEFAULT_NUM_THRESHOLDS,
                 name: str = ACCURACY_OVER_MAJORITY_NAME):
        """Above 0 when the model at its operating point beats always answering the
        commoner class. `num_thresholds` must be the ConfusionMatrixPlot's. Each slice is
        judged at its own operating point (only the overall one is shipped, and gated); NaN
        without a malignant example, which fails any bound."""
        super().__init__(metric_util.merge_per_key_computations(_accuracy_over_majority),
                         target_sensitivity=target_sensitivity, num_thresholds=num_thresholds,
                         name=name)


def _accuracy_over_majority(
        target_sensitivity: float, num_thresholds: int, name: str, eval_config=None,
        model_name: str = "", output_name: str = "",
        sub_key: metric_types.SubKey | None = None,
        aggregation_type: metric_types.AggregationType | None = None,
        class_weights: dict[int, float] | None = None,
        example_weighted: bool = False) -> metric_types.MetricComputations:
    computations = confusion_matrix_plot.ConfusionMatrixPlot(num_thresholds).computations(
        eval_config=eval_config, model_names=[model_name], output_names=[output_name],
        sub_keys=[sub_key], aggregation_type=aggregation_type, class_weights=class_weights,
        example_weighted=example_weighted)
    plot_key = computations[-1].keys[-1]
    key = metric_types.MetricKey(name=name, model_name=model_name, output_name=output_name,
                                 sub_key=sub_key, example_weighted=example_weighted)

    def result(metrics: dict) -> dict:
        point = operating_point(curve_from_proto(metrics[plot_key]), target_sensitivity)
        if point is None:
            return {key: math.nan}
        return {key: point.accuracy - majority_class_rate(point.positive_share)}

    computations.append(metric_types.DerivedMetricComputation(keys=[key], result=result))
    return computations


class TopClassRate(metric_types.Metric):
    def __init__(self, rate: str = "accuracy", name: str = "", code: str = ""):
        """One of RATES, for the top class as the prediction. `balanced_accuracy_over_majority`
        is the balanced accuracy minus 1/K, that of always answering one class, over the K
        classes the slice holds. A class without examples has no recall: NaN, which fails any
        bound. `code`: the project code's fingerprint, for TFX's cache, as in GatedAUC."""
        if rate not in RATES:
            raise ValueError(f"rate {rate!r} is not one of {RATES}")
        super().__init__(metric_util.merge_per_key_computations(_top_class_rate), rate=rate,
                         name=name or rate)


def _rates(counts: np.ndarray, rate: str, class_id: int | None) -> float:
    """`rate` of the K x K counts (rows: actual class, columns: predicted)."""
    actual, predicted, correct = counts.sum(1), counts.sum(0), np.diag(counts)
    with np.errstate(invalid="ignore", divide="ignore"):
        if rate == "recall":
            return float(correct[class_id] / actual[class_id])
        if rate == "precision":
            return float(correct[class_id] / predicted[class_id])
        if rate == "accuracy":
            return float(correct.sum() / counts.sum())
        present = actual > 0
        balanced = float(np.mean(correct[present] / actual[present])) if present.any() \
            else math.nan
    if rate == "balanced_accuracy":
        return balanced
    return balanced - 1.0 / max(int(present.sum()), 1)


def _top_class_rate(
        rate: str, name: str, eval_config=None, model_name: str = "", output_name: str = "",
        sub_key: metric_types.SubKey | None = None,
        aggregation_type: metric_types.AggregationType | None = None,
        class_weights: dict[int, float] | None = None,
        example_weighted: bool = False) -> metric_types.MetricComputations:
    class_id = sub_key.class_id if sub_key is not None else None
    if (rate in PER_CLASS_RATES) != (class_id is not None):
        raise ValueError(f"{rate}: recall and precision need a class id (binarize class_ids), "
                         "the other rates none")
    # The MultiClassConfusionMatrixAtThresholds metric at threshold 0: the top class always
    # counts (a softmax output is never 0), and TFMA computes the matrices once for both.
    computations = multi_class_confusion_matrix_metrics.multi_class_confusion_matrices(
        thresholds=[0.0], eval_config=eval_config, model_name=model_name,
        output_name=output_name, example_weighted=example_weighted)
    matrices_key = computations[-1].keys[-1]
    key = metric_types.MetricKey(name=name, model_name=model_name, output_name=output_name,
                                 sub_key=sub_key, example_weighted=example_weighted)

    def result(metrics: dict) -> dict:
        entries = metrics[matrices_key].get(0.0, {})
        size = 1 + max([class_id or 0] + [max(e.actual_class_id, e.predicted_class_id)
                                          for e in entries])
        counts = np.zeros((size, size))
        for entry, weight in entries.items():
            if entry.predicted_class_id >= 0:
                counts[entry.actual_class_id, entry.predicted_class_id] += weight
        return {key: _rates(counts, rate, class_id)}

    computations.append(metric_types.DerivedMetricComputation(keys=[key], result=result))
    return computations


class UrgentConfusionMatrixPlot(metric_types.Metric):
    def __init__(self, urgent: list[int] | None = None,
                 num_thresholds: int = confusion_matrix_plot.DEFAULT_NUM_THRESHOLDS,
                 name: str = URGENT_PLOT_NAME):
        """Binary confusion matrices of the urgent classes (codes `urgent`) against the
        rest, scored by their summed probability, at the ConfusionMatrixPlot's thresholds."""
        super().__init__(metric_util.merge_per_key_computations(_urgent_plot),
                         urgent=list(urgent or []), num_thresholds=num_thresholds, name=name)


def _urgent_plot(
        urgent: list[int], num_thresholds: int, name: str, eval_config=None,
        model_name: str = "", output_name: str = "",
        sub_key: metric_types.SubKey | None = None,
        aggregation_type: metric_types.AggregationType | None = None,
        class_weights: dict[int, float] | None = None,
        example_weighted: bool = False) -> metric_types.MetricComputations:
    key = metric_types.PlotKey(name=name, model_name=model_name, output_name=output_name,
                               example_weighted=example_weighted)
    return [metric_types.MetricComputation(
        keys=[key], preprocessors=None,
        combiner=_UrgentCurveCombiner(key, eval_config, urgent, num_thresholds,
                                      example_weighted))]


class _UrgentCurveCombiner(beam.CombineFn):
    """Histograms of the urgent score for urgent and other cases; the matrices at each
    threshold (predicted urgent when the score is above it) are their tail sums."""

    def __init__(self, key: metric_types.PlotKey, eval_config, urgent: list[int],
                 num_thresholds: int, example_weighted: bool):
        self._key, self._eval_config = key, eval_config
        self._urgent, self._example_weighted = urgent, example_weighted
        self._thresholds = np.array(
            [-1e-6] + [i / num_thresholds for i in range(num_thresholds + 1)])

    def create_accumulator(self) -> np.ndarray:
        return np.zeros((2, len(self._thresholds) + 1))  # [other, urgent] x bucket

    def add_input(self, accumulator: np.ndarray, element) -> np.ndarray:
        label, predictions, weight = next(metric_util.to_label_prediction_example_weight(
            element, eval_config=self._eval_config, model_name=self._key.model_name,
            output_name=self._key.output_name, example_weighted=self._example_weighted,
            flatten=False, require_single_example_weight=True))
        code = int(np.asarray(label).ravel()[0])
        score = float(np.asarray(predictions).ravel()[self._urgent].sum())
        bucket = int(np.searchsorted(self._thresholds, score, side="left"))
        accumulator[int(code in self._urgent), bucket] += float(np.asarray(weight).item())
        return accumulator

    def merge_accumulators(self, accumulators) -> np.ndarray:
        return sum(accumulators)

    def extract_output(self, accumulator: np.ndarray) -> dict:
        # Bucket j holds scores above exactly j thresholds: at threshold i, buckets > i.
        above = accumulator[:, ::-1].cumsum(axis=1)[:, ::-1][:, 1:]
        other, urgent = accumulator.sum(axis=1)
        matrices = binary_confusion_matrices.Matrices(
            thresholds=self._thresholds.tolist(), tp=above[1].tolist(),
            tn=(other - above[0]).tolist(), fp=above[0].tolist(),
            fn=(urgent - above[1]).tolist())
        return {self._key: matrices.to_proto().confusion_matrix_at_thresholds}
