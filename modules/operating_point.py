"""The operating point of a binary model: the decision threshold it ships with, chosen on
the evaluation fold from TFMA's ConfusionMatrixPlot, and the rates there.

The packager (through pipeline/results/eval_results.py) and the Evaluator's accuracy gate
(modules/metrics.py) both choose it here, so the threshold the gate judges is the one
shipped.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from tensorflow_model_analysis.proto import metrics_for_slice_pb2


@dataclasses.dataclass(frozen=True)
class Matrix:
    """The confusion matrix at one threshold; a rate is None when its denominator is 0."""

    threshold: float
    tp: float
    fp: float
    tn: float
    fn: float

    @property
    def sensitivity(self) -> float | None:
        return _ratio(self.tp, self.tp + self.fn)

    @property
    def specificity(self) -> float | None:
        return _ratio(self.tn, self.tn + self.fp)

    @property
    def precision(self) -> float | None:
        return _ratio(self.tp, self.tp + self.fp)

    @property
    def accuracy(self) -> float | None:
        return _ratio(self.tp + self.tn, self.examples)

    @property
    def f1(self) -> float | None:
        return _ratio(2 * self.tp, 2 * self.tp + self.fp + self.fn)

    @property
    def positive_share(self) -> float | None:
        return _ratio(self.tp + self.fn, self.examples)

    @property
    def examples(self) -> float:
        return self.tp + self.fp + self.tn + self.fn


def _ratio(a: float, b: float) -> float | None:
    return a / b if b else None


def majority_class_rate(positive_share: float) -> float:
    """The accuracy of always answering the commoner class: a model's accuracy means
    something only above it."""
    return max(positive_share, 1.0 - positive_share)


def curve_from_proto(
        curve: metrics_for_slice_pb2.ConfusionMatrixAtThresholds) -> list[Matrix]:
    """A ConfusionMatrixPlot's curve, as the Evaluator computes it and writes it out."""
    return [Matrix(m.threshold, m.true_positives, m.false_positives, m.true_negatives,
                   m.false_negatives) for m in curve.matrices]


def operating_point(curve: Sequence[Matrix], target_sensitivity: float) -> Matrix | None:
    """The sick first: among the thresholds whose sensitivity reaches the target, the one
    with the best specificity, then the best sensitivity, then the highest threshold (so
    the choice never depends on the curve's order). None: no malignant example.

    Taking the highest threshold that reaches the target instead stops at the first one
    that does: on a separable fold it shipped sensitivity 0.905 where 1.0 cost nothing."""
    reaching = [m for m in curve
                if m.sensitivity is not None and m.sensitivity >= target_sensitivity]
    if not reaching:
        return None
    # Without a benign example specificity is None at every threshold: they tie.
    return max(reaching, key=lambda m: (m.specificity or 0.0, m.sensitivity, m.threshold))
