"""A TFMA metric for gating slices: AUC where a slice is big enough to judge a model by.

TFMA applies a metric threshold to every slice it computes, and a slice with two malignant
cases has an AUC that says nothing. `auc_gate` is the slice's AUC when it holds at least
`min_positives` malignant and `min_negatives` benign examples, and 1.0 (passes any lower
bound) otherwise. Reports show the plain `auc` of every slice; only blessing reads this one.
"""

from __future__ import annotations

from tensorflow_model_analysis.metrics import (
    binary_confusion_matrices,
    confusion_matrix_metrics,
    metric_types,
)

GATED_AUC_NAME = "auc_gate"


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
