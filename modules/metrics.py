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
"""

from __future__ import annotations

import math

from tensorflow_model_analysis.metrics import (
    binary_confusion_matrices,
    confusion_matrix_metrics,
    confusion_matrix_plot,
    metric_types,
    metric_util,
)

from modules.operating_point import curve_from_proto, majority_class_rate, operating_point

GATED_AUC_NAME = "auc_gate"
ACCURACY_OVER_MAJORITY_NAME = "accuracy_over_majority"


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
