"""95% intervals in closed form, from the counts and curves the Evaluator already writes.

TFMA's jackknife recomputed every metric on 20 resamples of every slice, most of the
Evaluator's time; these cost nothing there. Numpy only: the summary, the model card and
the report read them through pipeline/results/eval_results.py.

- AUC: DeLong's variance (DeLong, DeLong & Clarke-Pearson 1988) from the score histogram a
  confusion-matrix curve gives, scores in one bin tied (the Mann-Whitney form of the
  trapezoidal AUC TFMA computes on the same kind of grid).
- A proportion (a rate with its denominator): Wilson's score interval.
- Balanced accuracy: normal, the per-class recall variances summed (disjoint examples) over K^2.
- AUC-PR: the logit interval of Boyd, Eng & Page (2013).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

Z = 1.96  # two-sided 95%
Interval = tuple[float, float]


def histogram(above: Sequence[float], total: float) -> np.ndarray:
    """Examples per score bin, lowest first, from how many score above each of ascending
    thresholds (a curve's true or false positives): below the first, between each two,
    above the last."""
    counts = -np.diff(np.concatenate([[total], np.asarray(above, float), [0.0]]))
    return np.maximum(counts, 0.0)  # float sums can leave -1e-12


def delong(positives: np.ndarray, negatives: np.ndarray) -> tuple[float, float] | None:
    """The AUC and its DeLong variance from positives and negatives per score bin (lowest
    first), a positive and a negative in one bin counted one half. None with fewer than
    two of either class: the variance of each class's placements is then undefined."""
    pos, neg = np.asarray(positives, float), np.asarray(negatives, float)
    m, n = pos.sum(), neg.sum()
    if m < 2 or n < 2:
        return None
    # A positive's placement: the share of negatives scored below it; a negative's: the
    # share of positives scored above it.
    v10 = (np.cumsum(neg) - neg / 2) / n
    v01 = (np.cumsum(pos[::-1])[::-1] - pos / 2) / m
    auc = float(pos @ v10 / m)
    s10 = pos @ (v10 - auc) ** 2 / (m - 1)
    s01 = neg @ (v01 - auc) ** 2 / (n - 1)
    return auc, float(s10 / m + s01 / n)


def normal(centre: float, variance: float) -> Interval:
    """centre +- Z standard errors, clipped to [0, 1]."""
    half = Z * math.sqrt(variance)
    return max(centre - half, 0.0), min(centre + half, 1.0)


def auc_interval(auc: float, positives: np.ndarray, negatives: np.ndarray) -> Interval | None:
    """Around TFMA's AUC, with the DeLong variance of the histogram (see delong)."""
    fit = delong(positives, negatives)
    return None if fit is None else normal(auc, fit[1])


def wilson(proportion: float, n: float) -> Interval | None:
    """Wilson's score interval of a proportion of n; it stays in [0, 1] and is not empty
    at 0 or n successes, where the normal one collapses. None without examples."""
    if n <= 0:
        return None
    z2 = Z * Z / n
    centre = (proportion + z2 / 2) / (1 + z2)
    half = Z * math.sqrt(proportion * (1 - proportion) / n + z2 / (4 * n)) / (1 + z2)
    return max(centre - half, 0.0), min(centre + half, 1.0)


def balanced_accuracy_interval(balanced: float,
                               confusion: Sequence[Sequence[float]]) -> Interval | None:
    """Normal, around the mean recall over the K classes present (rows of the confusion
    matrix, actual class): the recalls are of disjoint examples, so independent, and the
    mean's variance is the sum of theirs over K^2."""
    counts = np.asarray(confusion, float)
    actual = counts.sum(1)
    present = actual > 0
    if not present.any():
        return None
    recall = np.diag(counts)[present] / actual[present]
    variance = float(np.sum(recall * (1 - recall) / actual[present])) / present.sum() ** 2
    return normal(balanced, variance)


def auc_pr_interval(auc_pr: float, positives: float) -> Interval | None:
    """Boyd, Eng & Page's logit interval, expit(logit(AP) +- Z / sqrt(n_pos AP (1 - AP))):
    asymmetric and inside (0, 1). None at 0 or 1 (the logit is infinite) or without
    positives."""
    if positives <= 0 or not 0 < auc_pr < 1:
        return None
    centre = math.log(auc_pr / (1 - auc_pr))
    half = Z / math.sqrt(positives * auc_pr * (1 - auc_pr))
    return _expit(centre - half), _expit(centre + half)


def _expit(x: float) -> float:
    """1 / (1 + e^-x) without overflow: near AP = 0 or 1 the interval's half-width is huge."""
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    return math.exp(x) / (1.0 + math.exp(x))
