"""The closed-form 95% intervals against exact per-example statistics, textbook values and
their coverage on simulated data."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.results.intervals import (auc_interval, auc_pr_interval,
                                        balanced_accuracy_interval, delong, histogram, wilson)

# The thresholds of TFMA's ConfusionMatrixPlot at 1,000 thresholds.
THRESHOLDS = np.array([-1e-6] + [i / 1000 for i in range(1001)])


def binned(malignant: np.ndarray, benign: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The score histograms a curve gives: how many score above each threshold."""
    above = lambda scores: (scores[None, :] > THRESHOLDS[:, None]).sum(1)  # noqa: E731
    return (histogram(above(malignant), len(malignant)),
            histogram(above(benign), len(benign)))


def exact_delong(malignant: np.ndarray, benign: np.ndarray) -> tuple[float, float]:
    """DeLong on every pair of examples, ties counted one half."""
    pairs = (malignant[:, None] > benign[None, :]) + 0.5 * (malignant[:, None] == benign[None, :])
    v10, v01 = pairs.mean(1), pairs.mean(0)
    return pairs.mean(), v10.var(ddof=1) / len(malignant) + v01.var(ddof=1) / len(benign)


def test_delong_from_the_curve_is_exact_delong_when_every_score_has_its_own_bin():
    rng = np.random.default_rng(0)
    bins = rng.permutation(1000)[:70]  # distinct bins, one score in each
    scores = (bins + 0.5) / 1000
    labels = rng.permutation(70) < 30
    malignant, benign = scores[labels], scores[~labels]
    auc, variance = delong(*binned(malignant, benign))
    assert (auc, variance) == pytest.approx(exact_delong(malignant, benign), rel=1e-12)
    assert 0.3 < auc < 0.7  # unrelated to the labels: the variance is of a typical AUC


def test_delong_counts_scores_in_one_bin_as_tied_exactly_as_per_example_delong():
    rng = np.random.default_rng(1)
    malignant = rng.integers(3, 10, 40) / 10  # ten distinct scores: ties in both classes
    benign = rng.integers(0, 7, 60) / 10
    assert delong(*binned(malignant, benign)) == pytest.approx(
        exact_delong(malignant, benign), rel=1e-12)


def test_delong_on_hanley_and_mcneils_ratings_has_their_auc_and_standard_error():
    """Hanley & McNeil (1982), Table 1: CT images rated 1 (definitely normal) to 5 by one
    reader, 58 normal and 51 abnormal; area 0.893, standard error 0.032 by their formula."""
    normal = np.array([33, 6, 6, 11, 2])
    abnormal = np.array([3, 2, 2, 11, 33])
    auc, variance = delong(abnormal, normal)
    assert round(auc, 3) == 0.893
    assert np.sqrt(variance) == pytest.approx(0.032, rel=0.1)


def test_the_auc_interval_is_around_the_given_auc_clipped_and_needs_two_of_each_class():
    low, high = auc_interval(0.9, np.array([3, 2, 2, 11, 33]), np.array([33, 6, 6, 11, 2]))
    assert (high - 0.9) == pytest.approx(0.9 - low) == pytest.approx(1.96 * 0.0307, abs=1e-4)
    separated = auc_interval(1.0, np.array([0, 5]), np.array([5, 0]))
    assert separated == (1.0, 1.0)  # DeLong's variance is 0 when no pair is misordered
    assert auc_interval(0.5, np.array([0, 1]), np.array([4, 4])) is None


def test_delong_intervals_cover_the_true_auc_95_times_in_100():
    rng = np.random.default_rng(2)
    shift = 1.0  # binormal: AUC = Phi(shift / sqrt(2)) = 0.7602
    true_auc = 0.760250
    covered = []
    for _ in range(1000):
        malignant = 1 / (1 + np.exp(-rng.normal(shift, 1, 40)))
        benign = 1 / (1 + np.exp(-rng.normal(0, 1, 150)))
        positives, negatives = binned(malignant, benign)
        auc, _ = delong(positives, negatives)
        low, high = auc_interval(auc, positives, negatives)
        covered.append(low <= true_auc <= high)
    assert 0.925 <= np.mean(covered) <= 0.975


@pytest.mark.parametrize("successes, n, expected", [
    (0, 10, (0.0, 0.2775)),  # where the normal interval is (0, 0)
    (10, 10, (0.7225, 1.0)),
    # Newcombe (1998), Table I, method 3 (the score interval without correction).
    (81, 263, (0.2553, 0.3662)), (15, 148, (0.0624, 0.1605)), (0, 20, (0.0, 0.1611)),
    (1, 29, (0.0061, 0.1718)),
])
def test_wilson_has_the_textbook_values(successes, n, expected):
    assert tuple(round(v, 4) for v in wilson(successes / n, n)) == expected


def test_wilson_needs_examples():
    assert wilson(0.0, 0) is None


def test_balanced_accuracy_interval_sums_the_class_variances_over_k_squared():
    confusion = [[40, 5, 5, 0], [2, 8, 0, 0], [1, 1, 8, 0], [0, 0, 0, 0]]  # one class absent
    recall = np.array([0.8, 0.8, 0.8])
    se = np.sqrt(np.sum(recall * (1 - recall) / np.array([50, 10, 10])) / 9)
    low, high = balanced_accuracy_interval(0.8, confusion)
    assert (low, high) == pytest.approx((0.8 - 1.96 * se, 0.8 + 1.96 * se))
    assert balanced_accuracy_interval(0.5, [[0, 0], [0, 0]]) is None


def test_balanced_accuracy_intervals_cover_the_true_value_95_times_in_100():
    rng = np.random.default_rng(3)
    examples, recall = np.array([300, 60, 40]), np.array([0.9, 0.6, 0.5])
    covered = []
    for _ in range(2000):
        correct = rng.binomial(examples, recall)
        confusion = np.diag(correct) + np.diag(examples - correct)[:, [1, 2, 0]]
        low, high = balanced_accuracy_interval(float(np.mean(correct / examples)), confusion)
        covered.append(low <= recall.mean() <= high)
    assert 0.93 <= np.mean(covered) <= 0.97


def test_the_auc_pr_interval_is_boyd_eng_and_pages_logit_interval():
    """expit(logit(AP) +- 1.96 / sqrt(n_pos AP (1 - AP))): at AP 0.5 and 100 positives,
    expit(+-0.392)."""
    assert auc_pr_interval(0.5, 100) == pytest.approx((0.40324, 0.59676), abs=1e-5)
    low, high = auc_pr_interval(0.9, 20)
    assert (round(low, 4), round(high, 4)) == (0.6762, 0.9749)  # asymmetric, below 1
    narrower = auc_pr_interval(0.9, 80)
    assert low < narrower[0] < 0.9 < narrower[1] < high
    assert auc_pr_interval(1.0, 20) is None and auc_pr_interval(0.4, 0) is None
    # Next to 1 with few positives the logit's half-width is in the thousands: no overflow.
    low, high = auc_pr_interval(1 - 1e-9, 3)
    assert 0.0 <= low < 1 - 1e-9 < high <= 1.0
