"""Calibration of the served probability: the map fitted after training on the validation
fold, and the measures of how far a probability is from a frequency.

A binary head gets Platt scaling, sigmoid(logit(p) / T + b): the temperature T undoes over-
or under-confidence, the bias b brings back the base rate that class weights, balanced
sampling or label smoothing moved; both keep the ranking (AUC). A softmax head gets
temperature scaling, softmax(log(p) / T) (Guo et al. 2017), which keeps each case's top
class; with `class_bias`, a bias per class beside it, softmax(log(p) / T + b) (b of the
first class 0), which brings back the class priors that class weights moved (DDSM: 87%
normal, every class weighted alike) but may change a case's top class, and needs
MIN_PER_CLASS validation examples of every class (else temperature alone, the reason
recorded). Logits are recovered from the probabilities the network returns (clipped to
[EPS, 1 - EPS]), because the served score is the mean of the TTA orientations'
probabilities: the map is fitted on that same mean score and applied to it in the serving
graph (modules/calibration_graph.py).

Calibration error is measured in equal-width bins (TFMA's CalibrationPlot's): the expected
calibration error (ECE) is the example-weighted mean gap between the mean probability and
the observed frequency over BINS bins of [0, 1]; for K classes, of the top class's
probability against "the top class is right" (top-label ECE). The Brier score is the mean
squared error of the probability vector against the one-hot label (binary: of the positive
class's probability against the label).
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy.optimize import minimize
from scipy.special import expit, log_expit, logsumexp, softmax

EPS = 1e-6
BINS = 10  # the ECE's and the reliability diagram's equal-width bins
FINE_BINS = 100  # cells of the ECE bootstrap; BINS of them make one ECE bin
MIN_EXAMPLES = 30  # fewer validation examples than this: no fit (identity)
MIN_PER_CLASS = 3  # a binary head needs this many of each class
SCALE_BOUNDS = (1e-2, 1e2)  # 1 / T: a positive slope, so the map stays increasing
BIAS_BOUNDS = (-20.0, 20.0)
BOOTSTRAP_REPLICATES = 200


@dataclasses.dataclass(frozen=True)
class CalibrationMap:
    """`method`: "platt" (binary), "temperature_bias" or "temperature" (K classes; `bias`
    then one per class, or 0) or "identity", with `reason` saying why nothing (or, for K
    classes, no bias) was fitted."""

    method: str = "identity"
    temperature: float = 1.0
    bias: float | tuple[float, ...] = 0.0
    reason: str = ""

    def apply(self, scores: np.ndarray) -> np.ndarray:
        """The calibrated scores: [N] positive-class probabilities, or [N, K]."""
        scores = np.asarray(scores, float)
        if scores.ndim == 1:
            return expit(binary_logits(scores) / self.temperature + self.bias)
        return softmax(class_logits(scores) / self.temperature + np.asarray(self.bias),
                       axis=-1)


def binary_logits(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, EPS, 1 - EPS)
    return np.log(p) - np.log1p(-p)


def class_logits(p: np.ndarray) -> np.ndarray:
    return np.log(np.clip(p, EPS, 1.0))


def _platt_loss(params: np.ndarray, z: np.ndarray, target: np.ndarray) -> tuple:
    scale, bias = params
    x = scale * z + bias
    loss = -np.sum(target * log_expit(x) + (1 - target) * log_expit(-x))
    residual = expit(x) - target
    return loss, np.array([residual @ z, residual.sum()])


def _softmax_loss(params: np.ndarray, z: np.ndarray, labels: np.ndarray) -> tuple:
    """Log-loss of softmax(scale z + [0, b_1, ...]) (params: the scale, then the class biases
    but the first's, if any) and its gradient."""
    scale, biases = params[0], params[1:]
    x = scale * z
    if len(biases):
        x = x + np.concatenate([[0.0], biases])
    rows = np.arange(len(labels))
    loss = np.sum(logsumexp(x, axis=1) - x[rows, labels])
    residual = softmax(x, axis=1)
    residual[rows, labels] -= 1
    return loss, np.array([np.sum(residual * z), *residual.sum(axis=0)[1:1 + len(biases)]])


def _refusal(labels: np.ndarray, scores: np.ndarray) -> str:
    """Why the validation fold cannot fit a map; "" when it can."""
    if len(labels) < MIN_EXAMPLES:
        return (f"only {len(labels)} validation examples (at least {MIN_EXAMPLES} needed)")
    counts = np.bincount(labels, minlength=2 if scores.ndim == 1 else scores.shape[1])
    if (counts > 0).sum() < 2:
        return "the validation fold holds one class only"
    if scores.ndim == 1 and counts.min() < MIN_PER_CLASS:
        return (f"the validation fold holds {counts.min()} of one class (at least "
                f"{MIN_PER_CLASS} of each needed)")
    return ""


def fit_calibration(labels, scores, class_bias: bool = False) -> CalibrationMap:
    """The map of least log-loss on the validation labels and scores (as run_fn records
    them: class codes, and positive-class probabilities or [N, K] probabilities), found by
    L-BFGS-B from the identity (module docstring: which map); the identity, with the
    reason, when the fold is too small,
    holds one class, or the optimiser fails or does not improve on it. A binary fit uses
    Platt's targets, (n+ + 1) / (n+ + 2) and 1 / (n- + 2), which keep a small fold from
    pushing the probabilities to 0 and 1."""
    labels, scores = np.asarray(labels, int), np.asarray(scores, float)
    reason = _refusal(labels, scores)
    if reason:
        return CalibrationMap(reason=reason)
    loss, data, start, method, note = (_binary_problem(labels, scores) if scores.ndim == 1
                                       else _softmax_problem(labels, scores, class_bias))
    bounds = [SCALE_BOUNDS] + [BIAS_BOUNDS] * (len(start) - 1)
    fit = minimize(loss, np.array(start), args=data, jac=True, method="L-BFGS-B",
                   bounds=bounds)
    if not fit.success or not np.all(np.isfinite(fit.x)):
        return CalibrationMap(reason=f"the optimiser failed: {fit.message}")
    biases = [float(b) for b in fit.x[1:]]
    if method == "platt":
        bias = biases[0]
    else:  # the first class's bias is 0: softmax ignores a shift of them all
        bias = (0.0, *biases) if biases else 0.0
    fitted = CalibrationMap(method, temperature=float(1 / fit.x[0]), bias=bias, reason=note)
    if log_loss(labels, fitted.apply(scores)) > log_loss(labels, scores):
        return CalibrationMap(reason="the fitted map does not lower the validation log-loss")
    return fitted


def _binary_problem(labels: np.ndarray, scores: np.ndarray) -> tuple:
    """Platt's: scale and bias of the logit, against Platt's targets."""
    positives = labels.sum()
    negatives = len(labels) - positives
    target = np.where(labels == 1, (positives + 1) / (positives + 2), 1 / (negatives + 2))
    return _platt_loss, (binary_logits(scores), target), [1.0, 0.0], "platt", ""


def _softmax_problem(labels: np.ndarray, scores: np.ndarray, class_bias: bool) -> tuple:
    """The scale, and with `class_bias` a bias per class (but the first) unless the fold
    holds fewer than MIN_PER_CLASS of some class."""
    counts = np.bincount(labels, minlength=scores.shape[1])
    data = (class_logits(scores), labels)
    if not class_bias:
        return _softmax_loss, data, [1.0], "temperature", ""
    if counts.min() >= MIN_PER_CLASS:
        return _softmax_loss, data, [1.0] + [0.0] * (len(counts) - 1), "temperature_bias", ""
    rare = int(counts.argmin())
    return (_softmax_loss, data, [1.0], "temperature",
            f"no class biases: the validation fold holds {counts.min()} of class {rare} "
            f"(at least {MIN_PER_CLASS} of each needed)")


def log_loss(labels, scores) -> float:
    labels, scores = np.asarray(labels, int), np.asarray(scores, float)
    if scores.ndim == 1:
        p = np.clip(np.where(labels == 1, scores, 1 - scores), EPS, 1.0)
    else:
        p = np.clip(scores[np.arange(len(labels)), labels], EPS, 1.0)
    return float(-np.mean(np.log(p)))


def confidence_and_outcome(labels, scores) -> tuple[np.ndarray, np.ndarray]:
    """What the ECE bins compare: the positive class's probability and the label (binary),
    or the top class's probability and whether the top class is right (K classes)."""
    labels, scores = np.asarray(labels, int), np.asarray(scores, float)
    if scores.ndim == 1:
        return scores, labels.astype(float)
    return scores.max(axis=1), (scores.argmax(axis=1) == labels).astype(float)


def brier_terms(labels, scores) -> np.ndarray:
    """Each example's squared error of its probabilities against its one-hot label."""
    labels, scores = np.asarray(labels, int), np.asarray(scores, float)
    if scores.ndim == 1:
        return (scores - labels) ** 2
    onehot = np.eye(scores.shape[1])[labels]
    return ((scores - onehot) ** 2).sum(axis=1)


def fine_bin(confidence: np.ndarray) -> np.ndarray:
    """The FINE_BINS equal-width cell of each confidence; 1.0 falls in the last."""
    return np.minimum((np.asarray(confidence) * FINE_BINS).astype(int), FINE_BINS - 1)


def cells(confidence: np.ndarray, outcome: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Examples and summed confidence per (fine bin, outcome) cell, [FINE_BINS, 2] each."""
    index = fine_bin(confidence) * 2 + np.asarray(outcome, int)
    counts = np.bincount(index, minlength=2 * FINE_BINS).reshape(FINE_BINS, 2)
    sums = np.bincount(index, weights=confidence, minlength=2 * FINE_BINS)
    return counts.astype(float), sums.reshape(FINE_BINS, 2)


def ece_of_cells(counts: np.ndarray, sums: np.ndarray) -> float | None:
    """The ECE over BINS equal-width bins from the cells (exact: the cells nest in the bins)."""
    total = counts.sum()
    if not total:
        return None
    gap = (sums - counts * np.array([0.0, 1.0])).sum(axis=1)  # confidence - outcome, per cell
    return float(np.abs(gap.reshape(BINS, -1).sum(axis=1)).sum() / total)


def ece_interval(counts: np.ndarray, sums: np.ndarray,
                 seed: int = 0) -> tuple[float, float] | None:
    """A 95% percentile bootstrap interval of the ECE: the examples resampled with
    replacement as cells (each at its cell's mean confidence, within 1 / FINE_BINS of its
    own). ECE is a sum of absolute values, neither smooth nor normal near 0, so no
    closed-form interval fits it."""
    total = int(round(counts.sum()))
    if total < 2:
        return None
    flat = counts.ravel()
    mean = np.divide(sums.ravel(), flat, out=np.zeros_like(flat), where=flat > 0)
    gap_each = mean - np.tile([0.0, 1.0], FINE_BINS)
    draws = np.random.default_rng(seed).multinomial(total, flat / flat.sum(),
                                                    size=BOOTSTRAP_REPLICATES)
    per_bin = (draws * gap_each).reshape(BOOTSTRAP_REPLICATES, BINS, -1).sum(axis=2)
    eces = np.abs(per_bin).sum(axis=1) / total
    return float(np.percentile(eces, 2.5)), float(np.percentile(eces, 97.5))


def mean_interval(count: float, total: float,
                  total_squares: float) -> tuple[float, float] | None:
    """A 95% normal interval of a mean (the Brier score) from its terms' count, sum and
    sum of squares: a mean of bounded, independent terms, normal by the central limit
    theorem at an evaluation fold's size."""
    if count < 2:
        return None
    mean = total / count
    variance = max(total_squares - count * mean * mean, 0.0) / (count - 1)
    half = 1.96 * np.sqrt(variance / count)
    return float(max(mean - half, 0.0)), float(mean + half)


def ece(labels, scores) -> float | None:
    return ece_of_cells(*cells(*confidence_and_outcome(labels, scores)))


def reliability(labels, scores) -> list[list[float]]:
    """[mean confidence, observed frequency, examples] of each non-empty ECE bin."""
    confidence, outcome = confidence_and_outcome(labels, scores)
    index = np.minimum((confidence * BINS).astype(int), BINS - 1)
    return [[float(confidence[index == b].mean()), float(outcome[index == b].mean()),
             int((index == b).sum())] for b in range(BINS) if (index == b).any()]


def calibration_record(labels, scores, fitted: CalibrationMap) -> dict:
    """What the Trainer's validation file records of the fit: the map, and the fold's ECE,
    Brier score and reliability bins before and after it."""
    labels = np.asarray(labels, int)
    if not len(labels):
        return {**dataclasses.asdict(fitted), "examples": 0}
    after = fitted.apply(scores)
    record = {**dataclasses.asdict(fitted), "examples": int(len(labels)),
              "bins": BINS}
    for when, values in (("before", np.asarray(scores, float)), ("after", after)):
        record[f"ece_{when}"] = ece(labels, values)
        record[f"brier_{when}"] = float(brier_terms(labels, values).mean())
        record[f"reliability_{when}"] = reliability(labels, values)
    return record
