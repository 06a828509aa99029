"""The calibration map (modules/calibration.py): its fit, its safeguards, and the measures
(ECE, Brier) the Trainer records and the Evaluator reports."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import expit, softmax

from modules.calibration import (BINS, CalibrationMap, brier_terms, calibration_record, cells,
                                 confidence_and_outcome, ece, ece_interval, fit_calibration,
                                 mean_interval)


def binary_sample(temperature: float, bias: float, n: int = 20000, seed: int = 0):
    """Labels drawn from true probabilities; the scores a miscalibrated network would give
    them: logit(score) = T * (logit(true) - b), which Platt scaling with (T, b) undoes."""
    rng = np.random.default_rng(seed)
    true_logit = rng.normal(-1.0, 2.0, n)
    labels = (rng.random(n) < expit(true_logit)).astype(int)
    return labels, expit(temperature * (true_logit - bias))


def test_platt_recovers_a_known_temperature_and_bias():
    labels, scores = binary_sample(temperature=2.5, bias=-1.2)
    fitted = fit_calibration(labels, scores)
    assert fitted.method == "platt"
    assert fitted.temperature == pytest.approx(2.5, rel=0.05)
    assert fitted.bias == pytest.approx(-1.2, abs=0.1)
    assert ece(labels, fitted.apply(scores)) < 0.02 < ece(labels, scores)


def test_temperature_scaling_recovers_a_known_temperature_and_keeps_the_top_class():
    rng = np.random.default_rng(1)
    true_logits = rng.normal(0.0, 1.5, (20000, 5))
    labels = np.array([rng.choice(5, p=p) for p in softmax(true_logits, axis=1)])
    scores = softmax(true_logits * 3.0, axis=1)  # over-confident by T = 3
    fitted = fit_calibration(labels, scores)
    assert (fitted.method, fitted.bias) == ("temperature", 0.0)
    assert fitted.temperature == pytest.approx(3.0, rel=0.05)
    calibrated = fitted.apply(scores)
    np.testing.assert_array_equal(calibrated.argmax(1), scores.argmax(1))
    assert ece(labels, calibrated) < 0.02 < ece(labels, scores)
    with_bias = fit_calibration(labels, scores, class_bias=True)
    assert with_bias.method == "temperature_bias"
    assert with_bias.temperature == pytest.approx(3.0, rel=0.05)
    np.testing.assert_allclose(with_bias.bias, 0.0, atol=0.05)


@pytest.mark.parametrize("labels, scores, reason", [
    ([1] * 50, np.linspace(0.12, 0.88, 50), "one class only"),
    ([0, 1] * 10, np.linspace(0.12, 0.88, 20), "only 20 validation examples"),
    ([1] * 2 + [0] * 48, np.linspace(0.12, 0.88, 50), "holds 2 of one class"),
    ([2] * 40, softmax(np.random.default_rng(0).normal(size=(40, 3)), axis=1),
     "one class only"),
])
def test_a_fold_that_cannot_fit_a_map_gets_the_identity_and_says_why(labels, scores, reason):
    fitted = fit_calibration(labels, scores)
    assert fitted.method == "identity" and reason in fitted.reason
    np.testing.assert_allclose(fitted.apply(scores), scores, atol=1e-6)
    record = calibration_record(labels, scores, fitted)
    assert record["ece_before"] == pytest.approx(record["ece_after"], abs=1e-6)


def test_ece_and_brier_by_hand():
    """Two bins used: [0.2, 0.3) holds 0.2 and 0.25 with one positive (gap |0.45 - 1|),
    [0.9, 1] holds 0.9 and 1.0 with two (gap |1.9 - 2|): ECE (0.55 + 0.1) / 4."""
    labels, scores = [0, 1, 1, 1], np.array([0.2, 0.25, 0.9, 1.0])
    assert ece(labels, scores) == pytest.approx(0.65 / 4)
    np.testing.assert_allclose(brier_terms(labels, scores), [0.04, 0.5625, 0.01, 0.0])
    three = np.array([[0.7, 0.2, 0.1], [0.1, 0.5, 0.4]])
    np.testing.assert_allclose(brier_terms([0, 2], three), [0.14, 0.62])
    confidence, right = confidence_and_outcome([0, 2], three)
    np.testing.assert_allclose(confidence, [0.7, 0.5])
    np.testing.assert_array_equal(right, [1.0, 0.0])


def test_intervals_cover_the_ece_and_brier_and_narrow_with_more_examples():
    widths = []
    for n in (500, 8000):
        labels, scores = binary_sample(temperature=1.5, bias=0.5, n=n, seed=n)
        low, high = ece_interval(*cells(*confidence_and_outcome(labels, scores)))
        assert low <= ece(labels, scores) <= high
        terms = brier_terms(labels, scores)
        b_low, b_high = mean_interval(len(terms), terms.sum(), (terms ** 2).sum())
        assert b_low < terms.mean() < b_high
        widths.append((high - low, b_high - b_low))
    assert widths[1][0] < widths[0][0] / 2 and widths[1][1] < widths[0][1] / 2


def test_the_record_holds_the_map_and_the_folds_reliability_before_and_after():
    labels, scores = binary_sample(temperature=0.5, bias=1.0, n=3000)
    record = calibration_record(labels, scores, fit_calibration(labels, scores))
    assert record["method"] == "platt" and record["examples"] == 3000
    assert record["ece_after"] < record["ece_before"]
    assert record["brier_after"] < record["brier_before"]
    assert sum(count for _, _, count in record["reliability_before"]) == 3000
    assert len(record["reliability_after"]) <= BINS


def test_the_identity_map_leaves_scores_as_they_are():
    scores = np.array([0.01, 0.5, 0.99])
    np.testing.assert_allclose(CalibrationMap().apply(scores), scores, atol=1e-9)


def test_the_evaluator_reports_ece_and_brier_per_slice_and_max_ece_gates_by_name(tmp_path):
    """TFMA, as the Evaluator runs it, on rows scored by a miscalibrated model: each slice's
    ECE and Brier score are modules/calibration.py's, inside their intervals; an ECE above
    `max_ece` is a failed check naming the metric, its value and the bound."""
    from modules.task import TaskSpec
    from pipeline.config import load_config
    from pipeline.eval_config import build_eval_config
    from pipeline.results.eval_results import failed_checks, load_evaluation
    from pipeline.ops.summary import failed_check
    from tests.test_evaluation import analyze

    site = "anatom_site_general_challenge"
    cfg = load_config(None, [f"slices=[[{site}]]", "max_ece=0.05"]).evaluation
    labels, scores = binary_sample(temperature=2.0, bias=-0.5, n=1200, seed=3)
    sites = np.repeat([0, 1], [300, 900])
    analyze(tmp_path, build_eval_config(cfg, TaskSpec()),
            {"label": labels.astype(float), "prediction": scores, site: sites})

    slices = load_evaluation(str(tmp_path), TaskSpec(), 10, 10)
    (site_0,) = [r for r in slices.values() if r.metrics["example_count"] == 300]
    for result, rows in ((slices["overall"], slice(None)), (site_0, slice(0, 300))):
        assert result.metrics["ece"] == pytest.approx(ece(labels[rows], scores[rows]))
        assert result.metrics["brier_score"] == pytest.approx(
            brier_terms(labels[rows], scores[rows]).mean())
        for metric in ("ece", "brier_score"):
            low, high = result.intervals[metric]
            assert low <= result.metrics[metric] <= high
        assert not any(name.endswith(("_ci_lower", "_ci_upper")) for name in result.metrics)
    value = round(slices["overall"].metrics["ece"], 4)
    assert value > 0.05
    (check,) = [c for c in failed_checks(str(tmp_path), TaskSpec()) if c["metric"] == "ece"]
    assert check == {"metric": "ece", "slice": "overall", "value": value,
                     "bound": {"at_most": 0.05}}
    assert failed_check(check) == f"ece on overall: {value:.3f} (must be at most 0.05)"


def test_max_ece_is_checked_and_reported_only_by_default():
    from modules.errors import MedtfxError
    from pipeline.config import load_config

    assert load_config().evaluation.max_ece is None
    with pytest.raises(MedtfxError, match="max_ece"):
        load_config(None, ["max_ece=1.5"])


def test_class_biases_bring_back_the_priors_that_class_weights_moved():
    """A five-class model trained with every class weighted alike: its probabilities are
    the true ones with the priors divided out (87% normal served as 20%). Temperature
    scaling cannot move the priors back; the class biases do, as log-priors ratios."""
    rng = np.random.default_rng(2)
    priors = np.array([0.87, 0.04, 0.04, 0.03, 0.02])
    evidence = rng.normal(0.0, 1.0, (20000, 5))
    true = softmax(evidence + np.log(priors), axis=1)
    labels = np.array([rng.choice(5, p=p) for p in true])
    weighted = softmax(evidence, axis=1)  # the model's: uniform priors
    fitted = fit_calibration(labels, weighted, class_bias=True)
    assert fitted.method == "temperature_bias" and fitted.temperature == pytest.approx(
        1.0, abs=0.05)
    np.testing.assert_allclose(fitted.bias, np.log(priors / priors[0]), atol=0.15)
    calibrated = fitted.apply(weighted)
    assert ece(labels, calibrated) < 0.02 < ece(labels, weighted)
    few_labels, few_scores = labels[:60], weighted[:60]
    assert np.bincount(few_labels, minlength=5).min() < 3
    few = fit_calibration(few_labels, few_scores, class_bias=True)
    assert few.method == "temperature" and "no class biases" in few.reason
    np.testing.assert_array_equal(few.apply(few_scores).argmax(1), few_scores.argmax(1))
