"""The Evaluator's config, the gate's metrics, the operating point, the summary and the model
card."""

from __future__ import annotations

import math

import numpy as np
import pytest
from tensorflow_model_analysis.metrics import binary_confusion_matrices

from modules.metrics import AccuracyOverMajority, GatedAUC
from modules.task import TaskSpec
from pipeline.config import load_config
from pipeline.eval_config import CURVE_THRESHOLDS, build_eval_config
from pipeline.results.eval_results import (Matrix, SliceResult, _count_classes, failed_checks,
                                           load_evaluation, operating_threshold,
                                           score_histograms)
from pipeline.results.intervals import delong, wilson
from pipeline.results.model_card import build_card, render_markdown
from pipeline.results.packaging import PackagerSettings
from pipeline.results.statistics import FeatureSummary, SplitStats
from pipeline.ops.summary import slice_summary, summary_lines


def metrics_by_name(eval_config) -> dict:
    return {m.class_name: m for m in eval_config.metrics_specs[0].metrics}


def test_overall_auc_has_a_bound_and_a_baseline_change_on_the_overall_slice_only():
    cfg = load_config(None, ["auc_threshold=0.8", "max_auc_drop=0.02"]).evaluation
    auc = metrics_by_name(build_eval_config(cfg, TaskSpec()))["AUC"]
    (check,) = auc.per_slice_thresholds
    assert list(check.slicing_specs[0].feature_keys) == []  # overall
    assert check.threshold.value_threshold.lower_bound.value == 0.8
    assert check.threshold.change_threshold.absolute.value == -0.02


def test_every_slice_family_is_gated_with_its_own_bound_and_no_drop():
    cfg = load_config(None, ['slice_auc_thresholds={"sex*anatom_site_general_challenge": 0.5}',
                             "slice_auc_threshold=0.7", "max_slice_auc_drop=0.04"]).evaluation
    eval_config = build_eval_config(cfg, TaskSpec())
    assert [list(s.feature_keys) for s in eval_config.slicing_specs] == [[]] + cfg.slices
    gate = metrics_by_name(eval_config)["GatedAUC"]
    bounds = {"*".join(t.slicing_specs[0].feature_keys):
              (t.threshold.value_threshold.lower_bound.value,
               t.threshold.change_threshold.absolute.value)
              for t in gate.per_slice_thresholds}
    assert bounds == {"sex": (0.7, -0.04), "age_bucket": (0.7, -0.04),
                      "anatom_site_general_challenge": (0.7, -0.04),
                      "sex*anatom_site_general_challenge": (0.5, -0.04)}


def test_specificity_floor_gates_only_when_set():
    unset = build_eval_config(load_config(None, ["min_specificity=null"]).evaluation, TaskSpec())
    assert not metrics_by_name(unset)["SpecificityAtSensitivity"].per_slice_thresholds
    floor = build_eval_config(load_config(None, ["min_specificity=0.4"]).evaluation, TaskSpec())
    (check,) = metrics_by_name(floor)["SpecificityAtSensitivity"].per_slice_thresholds
    assert check.threshold.value_threshold.lower_bound.value == 0.4


def test_the_evaluator_computes_no_resampled_intervals():
    """The jackknife recomputed every metric on 20 resamples of every slice; the intervals
    now come from what the Evaluator writes anyway (pipeline/results/intervals.py)."""
    from google.protobuf import json_format

    for task in (TaskSpec(), DDSM):
        options = build_eval_config(load_config().evaluation, task).options
        assert not options.HasField("compute_confidence_intervals")
        assert not options.HasField("confidence_intervals")
        assert "jackknife" not in json_format.MessageToJson(options).lower()


def test_all_curves_share_one_threshold_grid():
    """One set of confusion matrices per slice serves every rate, curve and the threshold."""
    for metric in build_eval_config(load_config().evaluation, TaskSpec()).metrics_specs[0].metrics:
        if metric.class_name not in ("ExampleCount", "MeanLabel", "Calibration",
                                     "CalibrationPlot", "CalibrationError", "OodFlagged"):
            assert f'"num_thresholds": {CURVE_THRESHOLDS}' in metric.config, metric.class_name


def matrices(tp, fp, tn, fn):
    floats = lambda values: [float(v) for v in values]  # noqa: E731
    return binary_confusion_matrices.Matrices(thresholds=[0.0, 0.5, 1.0], tp=floats(tp),
                                              fp=floats(fp), tn=floats(tn), fn=floats(fn))


def test_gated_auc_is_the_auc_on_big_slices_and_passes_small_ones():
    metric = GatedAUC(min_positives=3, min_negatives=3)
    big = matrices(tp=[5, 4, 0], fp=[5, 1, 0], tn=[0, 4, 5], fn=[0, 1, 5])
    small = matrices(tp=[2, 2, 0], fp=[5, 5, 0], tn=[0, 0, 5], fn=[0, 0, 2])
    value = lambda m: metric._metric_value("ROC", "interpolation", None, m,  # noqa: E731
                                           min_positives=3, min_negatives=3)
    assert value(big) == pytest.approx(0.8)
    assert value(small) == 1.0


def test_accuracy_over_the_majority_class_gates_the_overall_slice_only_when_set():
    assert "AccuracyOverMajority" not in metrics_by_name(
        build_eval_config(load_config().evaluation, TaskSpec()))
    cfg = load_config(None, ["min_accuracy_over_majority=0.02",
                             "target_sensitivity=0.8"]).evaluation
    gate = metrics_by_name(build_eval_config(cfg, TaskSpec()))["AccuracyOverMajority"]
    (check,) = gate.per_slice_thresholds
    assert list(check.slicing_specs[0].feature_keys) == []  # overall
    assert check.threshold.value_threshold.lower_bound.value == 0.02
    assert '"target_sensitivity": 0.8' in gate.config


def analyze(tmp_path, eval_config, columns: dict) -> None:
    """TFMA, as the Evaluator runs it, on raw rows whose `prediction` column stands in for
    the model (no baseline: the change thresholds go)."""
    import pandas as pd
    import tensorflow_model_analysis as tfma

    del eval_config.model_specs[:]
    eval_config.model_specs.add(label_key="label", prediction_key="prediction")
    for spec in eval_config.metrics_specs:
        for metric in spec.metrics:
            for check in metric.per_slice_thresholds:
                check.threshold.ClearField("change_threshold")
    tfma.analyze_raw_data(pd.DataFrame(columns), eval_config, output_path=str(tmp_path))


def test_accuracy_over_majority_is_judged_at_the_shipped_threshold_and_fails_by_name(tmp_path):
    """TFMA computes the metric from its own confusion-matrix curve; it is the accuracy at
    the threshold the packager ships minus the majority-class rate, and a missed bound is
    a failed check with the metric, its value and the bound."""
    cfg = load_config(None, ["min_accuracy_over_majority=0.05"]).evaluation
    eval_config = build_eval_config(cfg, TaskSpec())
    del eval_config.slicing_specs[1:]  # overall
    kept = [m for m in eval_config.metrics_specs[0].metrics if m.class_name in (
        "ExampleCount", "MeanLabel", "ConfusionMatrixPlot", "AccuracyOverMajority")]
    del eval_config.metrics_specs[0].metrics[:]
    eval_config.metrics_specs[0].metrics.extend(kept)
    rng = np.random.default_rng(0)
    labels = (rng.random(300) < 0.2).astype(float)
    scores = 0.3 * labels + 0.7 * rng.random(300)
    analyze(tmp_path, eval_config, {"label": labels, "prediction": scores})

    overall = load_evaluation(str(tmp_path), TaskSpec(), 10, 10)["overall"]
    shipped = overall.at(operating_threshold(overall.curve, cfg.target_sensitivity))
    value = overall.metrics["accuracy_over_majority"]
    assert value == pytest.approx(shipped.accuracy - overall.majority_rate)
    assert value < 0.05
    assert failed_checks(str(tmp_path), TaskSpec()) == [
        {"metric": "accuracy_over_majority", "slice": "overall", "value": round(value, 4),
         "bound": {"at_least": 0.05}}]


def test_every_slice_has_intervals_from_the_evaluator_output_narrowing_with_more_examples(
        tmp_path):
    """Three sites of 150, 600 and 2,400 examples scored alike: each slice's AUC interval
    (DeLong, from its ConfusionMatrixPlot) holds TFMA's AUC, which the plot's histogram
    reproduces, and is narrower the more examples the slice has."""
    site = "anatom_site_general_challenge"
    cfg = load_config(None, [f"slices=[[{site}]]"]).evaluation
    rng = np.random.default_rng(0)
    sites = np.repeat([0, 1, 2], [150, 600, 2400])
    labels = (rng.random(len(sites)) < 0.2).astype(float)
    scores = 1 / (1 + np.exp(-rng.normal(1.2 * labels - 1.5, 1.0)))
    analyze(tmp_path, build_eval_config(cfg, TaskSpec()),
            {"label": labels, "prediction": scores, site: sites})

    slices = load_evaluation(str(tmp_path), TaskSpec(), 10, 10)
    assert len(slices) == 4
    widths = []
    for name, result in sorted(slices.items(), key=lambda kv: kv[1].metrics["example_count"]):
        auc, (low, high) = result.metrics["auc"], result.intervals["auc"]
        assert low < auc < high, name
        assert delong(*score_histograms(result.curve))[0] == pytest.approx(auc, abs=1e-3)
        widths.append(high - low)
        for metric in ("auc_pr", "mean_label", "specificity_at_sensitivity",
                       "sensitivity_at_specificity"):
            low, high = result.intervals[metric]
            assert low <= result.metrics[metric] <= high, (name, metric)
        assert result.intervals["sensitivity_at_specificity"] == wilson(
            result.metrics["sensitivity_at_specificity"], result.positives)
        assert not {"example_count", "calibration", "auc_gate"} & set(result.intervals)
    assert widths == sorted(widths, reverse=True) and widths[0] > 3 * widths[-1]


def test_accuracy_over_majority_is_nan_without_a_malignant_case():
    """NaN fails any bound: no threshold can be shipped."""
    from tensorflow_model_analysis.proto import metrics_for_slice_pb2

    computations = AccuracyOverMajority(num_thresholds=CURVE_THRESHOLDS).computations()
    plot_key = computations[-2].keys[-1]
    curve = metrics_for_slice_pb2.ConfusionMatrixAtThresholds()
    curve.matrices.add(threshold=0.5, false_positives=3, true_negatives=7)
    (value,) = computations[-1].result({plot_key: curve}).values()
    assert math.isnan(value)


def curve(points: list[tuple[float, int, int, int, int]]) -> list[Matrix]:
    return [Matrix(t, tp, fp, tn, fn) for t, tp, fp, tn, fn in points]


def test_operating_threshold_has_the_best_specificity_that_reaches_the_sensitivity():
    c = curve([(0.1, 10, 50, 50, 0), (0.2, 9, 30, 70, 1), (0.3, 8, 20, 80, 2),
               (0.4, 6, 5, 95, 4)])
    assert operating_threshold(c, 0.9) == 0.2
    assert operating_threshold(c, 0.8) == 0.3
    assert operating_threshold(c, 1.0) == 0.1
    assert operating_threshold(curve([(0.5, 0, 3, 7, 0)]), 0.9) is None  # no positives
    assert c[1].sensitivity == 0.9 and c[1].specificity == 0.7
    assert c[1].precision == pytest.approx(9 / 39)


def scored_curve(malignant: list[float], benign: list[float]) -> list[Matrix]:
    """The curve at thresholds 0, 0.01, ..., 1 (a score above the threshold is positive)."""
    return [Matrix(t, sum(s > t for s in malignant), sum(s > t for s in benign),
                   sum(s <= t for s in benign), sum(s <= t for s in malignant))
            for t in (i / 100 for i in range(101))]


def test_on_a_separable_fold_the_threshold_keeps_every_malignant_case():
    """The bug: the highest threshold reaching 0.9 shipped sensitivity 0.905 (19 of 21) at
    specificity 1.000, where 1.000 and 1.000 were available."""
    c = scored_curve(malignant=[0.605 + 0.01 * i for i in range(21)],
                     benign=[0.02 * i for i in range(20)])
    former = max(m.threshold for m in c if m.sensitivity >= 0.9)
    at = {m.threshold: m for m in c}
    assert (round(at[former].sensitivity, 3), at[former].specificity) == (0.905, 1.0)
    threshold = operating_threshold(c, 0.9)
    assert (at[threshold].sensitivity, at[threshold].specificity) == (1.0, 1.0)
    assert threshold == 0.6  # of the thresholds between the classes, the highest


def test_operating_threshold_breaks_ties_by_sensitivity_then_threshold_in_any_order():
    c = curve([(0.1, 10, 5, 95, 0), (0.2, 10, 5, 95, 0), (0.3, 9, 5, 95, 1),
               (0.05, 10, 6, 94, 0)])
    assert operating_threshold(c, 0.9) == operating_threshold(c[::-1], 0.9) == 0.2
    no_benign = curve([(0.1, 3, 0, 0, 0), (0.2, 3, 0, 0, 0), (0.3, 2, 0, 0, 1)])
    assert operating_threshold(no_benign, 0.9) == 0.2  # no specificity to rank


def test_the_summary_gives_the_rates_at_the_operating_threshold_beside_the_majority_class():
    overall = SliceResult(metrics={"example_count": 100.0, "mean_label": 0.2, "auc": 0.9},
                          positives=20, negatives=80, gated=True,
                          curve=curve([(0.1, 20, 40, 40, 0), (0.3, 18, 20, 60, 2)]))
    out = slice_summary(overall, 0.3)
    assert out["majority_rate"] == 0.8  # 80 benign of 100
    assert (out["sensitivity"], out["specificity"], out["accuracy"]) == (0.9, 0.75, 0.78)
    assert out["precision"] == round(18 / 38, 4) and out["f1"] == round(36 / 58, 4)
    assert out["confusion"] == {"tp": 18, "fp": 20, "tn": 60, "fn": 2}
    summary = {"metrics": {"overall": out}, "operating_threshold": 0.3, "blessed": True,
               "pushed_model": "serving/1", "training": {}}
    text = "\n".join(summary_lines(summary))
    assert "sensitivity 0.900, specificity 0.750, precision 0.474, F1 0.621" in text
    assert "accuracy there 0.780; always answering the commoner class 0.800" in text


def test_every_slice_too_small_to_gate_is_named_with_its_size_and_auc():
    """The case behind it: AUC 0.42 on a site of 20 images, blessed without a word."""
    overall = SliceResult(metrics={"example_count": 400.0, "mean_label": 0.25, "auc": 0.85},
                          positives=100, negatives=300, gated=True)
    site = SliceResult(metrics={"example_count": 20.0, "mean_label": 0.1, "auc": 0.42},
                       intervals={"auc": (0.1, 0.8)}, positives=2, negatives=18)
    benign_only = SliceResult(metrics={"example_count": 6.0, "mean_label": 0.0, "auc": None},
                              negatives=6)
    big = SliceResult(metrics={"example_count": 200.0, "mean_label": 0.25, "auc": 0.8},
                      positives=50, negatives=150, gated=True)
    slices = {"overall": overall, "site=oral": site, "site=palms": benign_only, "sex=1": big}
    summary = {"metrics": {name: slice_summary(r, None) for name, r in slices.items()},
               "blessed": True, "pushed_model": "serving/1", "training": {},
               "classes": ["benign", "malignant"]}
    lines = summary_lines(summary)
    at = lines.index("        not verified (too small to gate), 2 slices:")
    assert lines[at + 1:at + 3] == [
        "          site=oral: 20 examples, 2 malignant, AUC 0.420 [0.100, 0.800]",
        "          site=palms: 6 examples, 0 malignant"]
    assert not any("sex=1:" in line for line in lines)


def test_slice_classes_decide_gating_and_undefined_rankings_are_not_zero():
    small = SliceResult(metrics={"example_count": 40.0, "mean_label": 0.05, "auc": 1.0})
    _count_classes(small, min_positives=10, min_negatives=10)
    assert (small.positives, small.negatives, small.gated) == (2, 38, False)
    assert small.metrics["auc"] == 1.0  # reported, not gated
    benign_only = SliceResult(metrics={"example_count": 9.0, "mean_label": 0.0, "auc": 0.0})
    _count_classes(benign_only, 10, 10)
    assert benign_only.metrics["auc"] is None


def test_model_card_states_use_data_metrics_and_measured_limitations():
    overall = SliceResult(metrics={"example_count": 100.0, "mean_label": 0.2, "auc": 0.9},
                          intervals={"auc": (0.85, 0.95)}, positives=20, negatives=80,
                          gated=True, curve=curve([(0.3, 18, 20, 60, 2)]))
    weak = SliceResult(metrics={"example_count": 50.0, "auc": 0.7}, positives=12,
                       negatives=38, gated=True, curve=curve([(0.3, 6, 10, 28, 6)]))
    tiny = SliceResult(metrics={"example_count": 5.0, "auc": 1.0}, positives=1, negatives=4,
                       curve=curve([(0.3, 1, 0, 4, 0)]))
    stats = {s: SplitStats(100, {"target": FeatureSummary(0, "categorical", {"1": 10})})
             for s in ("train00", "train01", "train02")}
    settings = {"pipeline_name": "p", "backbone": "efficientnet_b0", "image_size": 64,
                "splits": {"train": ["train00"], "validation": ["train01"],
                           "evaluation": ["train02"]},
                "target_sensitivity": 0.9, "gate": {}, "intended_use": "Triage only.",
                "limitations": ["Retrospective."], "task": TaskSpec().model_dump()}
    card = build_card(PackagerSettings.model_validate(settings),
                      {"overall": overall, "site=1": weak, "site=4": tiny}, 0.3, stats)
    assert card["operating_point"]["sensitivity"] == 0.9
    assert card["data"]["train"] == {"shards": ["train00"], "examples": 100, "positives": 10}
    limitations = " ".join(card["limitations"])
    assert "Retrospective." in limitations
    assert "Not verified (too small to gate): site=4 (too few" in limitations
    assert "below the target 0.9 on: site=1 (0.50)" in limitations
    markdown = render_markdown(card)
    # The rates at the threshold with Wilson intervals: 18 of 20 malignant, 60 of 80 benign.
    assert ("| overall | 100 | 20 | 0.900 | 0.850-0.950 | 0.900 (0.699-0.972) | "
            "0.750 (0.645-0.832) | 0.474 | 0.780 | 0.621 | yes |") in markdown
    assert "accuracy 0.780, where always answering the commoner class scores 0.800" in markdown
    assert "Triage only." in markdown
    assert ("## Not verified (too small to gate)" in markdown
            and "- site=4: 5 examples, 1 malignant, AUC 1.000\n" in markdown)


def test_a_metric_tfma_could_not_compute_is_missing_never_zero(tmp_path):
    import tensorflow as tf
    from tensorflow_model_analysis.proto import metrics_for_slice_pb2, validation_result_pb2

    failed = metrics_for_slice_pb2.MetricValue(debug_message="AUC: no predictions")
    sliced = metrics_for_slice_pb2.MetricsForSlice()
    for name, value in (("example_count", metrics_for_slice_pb2.MetricValue(
            double_value={"value": 40.0})), ("auc", failed)):
        sliced.metric_keys_and_values.add(value=value).key.name = name
    validation = validation_result_pb2.ValidationResult()
    check = validation.metric_validations_per_slice.add().failures.add(metric_value=failed)
    check.metric_key.name = "auc"
    check.metric_threshold.value_threshold.lower_bound.value = 0.75
    for name, proto in (("metrics-00000-of-00001", sliced), ("validations", validation)):
        with tf.io.TFRecordWriter(str(tmp_path / name)) as writer:
            writer.write(proto.SerializeToString())

    overall = load_evaluation(str(tmp_path), TaskSpec(), 10, 10)["overall"]
    assert overall.metrics == {"example_count": 40.0, "auc": None}
    assert overall.intervals == {}  # none for a missing AUC, none ever for a count
    (checked,) = failed_checks(str(tmp_path), TaskSpec())
    assert checked["value"] is None
    summary = {"metrics": {"overall": {"auc": None}}, "blessed": False,
               "failed_checks": [checked], "training": {}}
    assert "auc on overall: missing (must be at least 0.75)" in "\n".join(
        summary_lines(summary))


def test_the_evaluator_reports_the_examples_scored_before_slicing(caplog):
    import logging

    import apache_beam as beam
    from tensorflow_model_analysis import constants
    from tensorflow_model_analysis.extractors import unbatch_extractor

    from modules.evaluation import PROGRESS_STAGE, custom_extractors, scored_progress
    from modules.progress import PROGRESS_FIELD, PROGRESS_LOGGER

    import tensorflow_model_analysis as tfma

    eval_config = tfma.utils.update_eval_config_with_defaults(  # as TFX's executor does
        build_eval_config(load_config().evaluation, TaskSpec()), has_baseline=False,
        rubber_stamp=True)
    stages = [e.stage_name for e in custom_extractors(None, eval_config, None)]
    assert stages[stages.index(PROGRESS_STAGE) + 1] == (
        unbatch_extractor.UNBATCH_EXTRACTOR_STAGE_NAME)

    batches = [{constants.FEATURES_KEY: {"sex": np.zeros(rows), "image": np.array([b""] * rows)}}
               for rows in (3, 5, 4)]
    with caplog.at_level(logging.INFO, logger=PROGRESS_LOGGER), beam.Pipeline() as pipeline:
        _ = pipeline | beam.Create(batches) | scored_progress(every=0.0).ptransform
    done = [getattr(r, PROGRESS_FIELD)["done"] for r in caplog.records
            if r.name == PROGRESS_LOGGER]
    assert sorted(done)[-1] == 12 and caplog.messages[-1].endswith("examples scored")


def test_every_extractor_sees_batches_no_larger_than_the_configured_bound():
    import apache_beam as beam
    import pyarrow as pa
    import tensorflow_model_analysis as tfma
    from apache_beam.testing.util import assert_that, equal_to
    from tensorflow_model_analysis import constants

    from modules.evaluation import BOUND_STAGE, custom_extractors

    eval_config = tfma.utils.update_eval_config_with_defaults(  # as TFX's executor does
        build_eval_config(load_config(None, ["evaluation.max_batch=4"]).evaluation,
                          TaskSpec()), has_baseline=False, rubber_stamp=True)
    first = custom_extractors(None, eval_config, None)[0]
    assert first.stage_name == BOUND_STAGE
    read = [pa.RecordBatch.from_pydict({"n": list(range(start, start + rows))})
            for start, rows in ((0, 10), (10, 3))]  # as TFMA's reader hands them over
    with beam.Pipeline() as pipeline:
        sizes = (pipeline | beam.Create([{constants.ARROW_RECORD_BATCH_KEY: b} for b in read])
                 | first.ptransform
                 | beam.Map(lambda e: e[constants.ARROW_RECORD_BATCH_KEY]["n"].to_pylist()))
        assert_that(sizes, equal_to([[0, 1, 2, 3], [4, 5, 6, 7], [8, 9], [10, 11, 12]]))


DDSM = TaskSpec(name="ddsm", categorical=[], numeric=[], model_features=[], label={
    "classes": ["normal", "benign_calc", "benign_mass", "malignant_calc", "malignant_mass"],
    "urgent": ["malignant_calc", "malignant_mass"]})


def analyze_multiclass(tmp_path, labels, probabilities, overrides=()):
    """TFMA on (label, K probabilities) rows with the multi-class eval config."""
    cfg = load_config(None, ["slices=[]", *overrides]).evaluation
    analyze(tmp_path, build_eval_config(cfg, DDSM),
            {"label": labels, "prediction": list(probabilities)})
    return load_evaluation(str(tmp_path), DDSM, 10, 10)["overall"]


def test_answering_the_majority_class_is_refused_by_recall_and_the_baseline(tmp_path):
    """The DDSM notebook's trap: 87% normal, a model that always says normal is 87%
    accurate. Its balanced accuracy is the majority class's (1/K), and every other class's
    recall is 0: both are failed checks, named by class."""

    labels = np.array([0] * 87 + [1, 2, 3, 4] * 3 + [4])
    always_normal = np.tile([0.9, 0.04, 0.03, 0.02, 0.01], (len(labels), 1))
    overall = analyze_multiclass(tmp_path, labels, always_normal, ["min_class_recall=0.3"])
    assert overall.metrics["accuracy"] == pytest.approx(0.87)
    assert overall.majority_rate == pytest.approx(0.87)
    assert overall.metrics["balanced_accuracy_over_majority"] == pytest.approx(0.0)
    assert overall.confusion[0][0] == 87 and sum(r[0] for r in overall.confusion) == 100
    checks = {(c["metric"], c["value"]) for c in failed_checks(str(tmp_path), DDSM)}
    assert ("balanced_accuracy_over_majority", 0.0) in checks
    assert {f"recall on class {c}" for c in DDSM.label.classes[1:]} <= {m for m, _ in checks}
    assert ("recall on class normal", 1.0) not in checks


def test_multiclass_rates_curves_and_the_urgent_rule_come_from_tfma(tmp_path):
    """Accuracy, balanced accuracy, per-class recall and precision off the top-class
    confusion matrix; a one-vs-rest AUC per class and their macro mean; and the urgent
    classes' summed probability as a binary curve the packager picks a threshold on."""

    rng = np.random.default_rng(0)
    labels = rng.choice(5, 400, p=[0.6, 0.1, 0.1, 0.1, 0.1])
    logits = rng.normal(size=(400, 5))
    logits[np.arange(400), labels] += 1.5
    probabilities = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    overall = analyze_multiclass(tmp_path, labels, probabilities)

    top = probabilities.argmax(1)
    counts = np.zeros((5, 5))
    np.add.at(counts, (labels, top), 1)
    assert np.array_equal(overall.confusion, counts)
    recalls = np.diag(counts) / counts.sum(1)
    assert overall.metrics["accuracy"] == pytest.approx((top == labels).mean())
    assert overall.metrics["balanced_accuracy"] == pytest.approx(recalls.mean())
    for k, name in enumerate(DDSM.label.classes):
        assert overall.metrics[f"recall/{name}"] == pytest.approx(recalls[k])
        assert overall.metrics[f"precision/{name}"] == pytest.approx(
            counts[k, k] / counts[:, k].sum())
        assert 0.5 < overall.metrics[f"auc/{name}"] <= 1 and overall.class_curves[name]
    assert overall.metrics["auc"] == pytest.approx(np.mean(
        [overall.metrics[f"auc/{name}"] for name in DDSM.label.classes]))
    for k, name in enumerate(DDSM.label.classes):  # intervals from the same outputs
        auc, (low, high) = overall.metrics[f"auc/{name}"], overall.intervals[f"auc/{name}"]
        assert low < auc < high
        assert delong(*score_histograms(overall.class_curves[name]))[0] == pytest.approx(
            auc, abs=1e-3)
        assert overall.intervals[f"recall/{name}"] == wilson(recalls[k], counts[k].sum())
        assert overall.intervals[f"precision/{name}"] == wilson(
            overall.metrics[f"precision/{name}"], counts[:, k].sum())
    assert overall.intervals["accuracy"] == wilson(overall.metrics["accuracy"], 400)
    low, high = overall.intervals["balanced_accuracy"]
    assert low < overall.metrics["balanced_accuracy"] < high
    assert "auc" not in overall.intervals  # the macro AUC's classes share examples
    urgent = np.isin(labels, [3, 4])
    score = probabilities[:, [3, 4]].sum(1)
    threshold = operating_threshold(overall.curve, 0.9)
    at = overall.at(threshold)
    assert at.tp == (score[urgent] > threshold).sum() and at.tp + at.fn == urgent.sum()
    assert at.fp == (score[~urgent] > threshold).sum() and at.sensitivity >= 0.9


def test_multiclass_gate_bounds_macro_auc_balanced_accuracy_and_each_class_recall():
    import os

    from pipeline.config import CONFIG_DIR

    loaded = load_config(os.path.join(CONFIG_DIR, "ddsm.yaml"), [
        "min_class_recall=0.2", 'class_recall_floors={"malignant_mass": 0.4}',
        "max_class_recall_drop=0.05", "auc_threshold=0.7"])
    config = build_eval_config(loaded.evaluation, loaded.task)
    names = loaded.task.label.classes
    assert config.model_specs[0].prediction_key == "probabilities"
    floors = {}
    for spec in config.metrics_specs:
        for metric in spec.metrics:
            if '"rate": "recall"' in metric.config:
                (check,) = metric.per_slice_thresholds
                assert check.threshold.change_threshold.absolute.value == -0.05
                for class_id in spec.binarize.class_ids.values:
                    floors[names[class_id]] = check.threshold.value_threshold.lower_bound.value
            if spec.aggregate.macro_average:
                (check,) = metric.per_slice_thresholds
                assert check.threshold.value_threshold.lower_bound.value == 0.7
    assert floors == {"normal": 0.2, "benign_calcification": 0.2, "benign_mass": 0.2,
                      "malignant_calcification": 0.2, "malignant_mass": 0.4}


def test_the_multiclass_model_card_shows_classes_the_confusion_matrix_and_the_baseline():
    """No operating rule (no urgent classes): no threshold, the top class answers."""
    task = TaskSpec(name="three", categorical=[], numeric=[], model_features=[],
                    label={"classes": ["normal", "benign", "malignant"]})
    overall = SliceResult(
        metrics={"example_count": 20.0, "auc": 0.8, "accuracy": 0.8,
                 "balanced_accuracy": 0.6, "recall/normal": 1.0, "recall/benign": 0.5,
                 "recall/malignant": 0.3, "auc/normal": 0.9},
        intervals={"recall/malignant": (0.1, 0.5)},
        confusion=[[14, 0, 0], [1, 1, 0], [2, 1, 1]])
    stats = {s: SplitStats(20, {"target": FeatureSummary(0, "categorical",
                                                         {"0": 14, "1": 2, "2": 4})})
             for s in ("train00", "train01", "train02")}
    settings = {"pipeline_name": "p", "backbone": "resnet50", "image_size": 64,
                "splits": {"train": ["train00"], "validation": ["train01"],
                           "evaluation": ["train02"]},
                "target_sensitivity": 0.9, "gate": {}, "intended_use": "Research.",
                "limitations": [], "task": task.model_dump()}
    card = build_card(PackagerSettings.model_validate(settings), {"overall": overall}, None,
                      stats)
    assert card["operating_point"] is None
    assert card["data"]["train"]["classes"] == {"normal": 14, "benign": 2, "malignant": 4}
    assert card["baseline"]["majority_rate"] == pytest.approx(0.7)
    assert card["baseline"]["balanced_majority_rate"] == pytest.approx(1 / 3)
    markdown = render_markdown(card)
    assert "| role | shards | examples | normal | benign | malignant |" in markdown
    assert "| malignant | 4 | 0.300 | 0.100-0.500 | n/a | n/a |" in markdown
    assert "| actual \\ predicted | normal | benign | malignant |" in markdown
    assert "| malignant | 2 | 1 | 1 |" in markdown
    assert "always answering the majority class scores 0.700" in markdown
    assert "No operating rule" in markdown


def test_the_report_headline_gives_the_auc_interval_only_where_there_is_one():
    from pipeline.ops.report import auc_headline

    binary = SliceResult(metrics={"example_count": 803.0, "auc": 0.848, "auc_pr": 0.41},
                         intervals={"auc": (0.783, 0.912)})
    assert auc_headline(binary, TaskSpec()) == (
        "AUC 0.848 (0.783–0.912) on 803 held-out examples; AUC-PR 0.410.")
    macro = SliceResult(metrics={"example_count": 400.0, "auc": 0.8})  # no interval
    assert auc_headline(macro, DDSM) == "Macro AUC 0.800 on 400 held-out examples."


def test_the_ensemble_scores_k_class_outputs_by_the_mean_one_vs_rest_auc():
    from components.ensemble import rank_auc, score_auc

    labels = [0, 0, 1, 1, 2, 2]
    scores = [[0.8, 0.1, 0.1], [0.6, 0.3, 0.1], [0.2, 0.7, 0.1], [0.5, 0.4, 0.1],
              [0.1, 0.2, 0.7], [0.3, 0.3, 0.4]]
    expected = np.mean([rank_auc([int(y == k) for y in labels], [s[k] for s in scores])
                        for k in range(3)])
    assert score_auc(labels, scores) == pytest.approx(expected)
    assert score_auc([0, 1, 1], [0.2, 0.9, 0.6]) == rank_auc([0, 1, 1], [0.2, 0.9, 0.6]) == 1.0


def test_a_multiclass_slice_keeps_its_accuracy_apart_from_the_urgent_rules_rates():
    result = SliceResult(metrics={"example_count": 10.0, "accuracy": 0.9},
                         confusion=[[8, 0, 0], [0, 1, 0], [0, 1, 0]],
                         curve=curve([(0.3, 1, 1, 8, 0)]))
    task = TaskSpec(name="three", categorical=[], numeric=[], model_features=[],
                    label={"classes": ["normal", "benign", "malignant"],
                           "urgent": ["malignant"]})
    out = slice_summary(result, 0.3, task)
    assert out["accuracy"] == 0.9 and out["majority_rate"] == 0.8
    assert out["urgent_rule"]["accuracy"] == 0.9 and out["urgent_rule"]["sensitivity"] == 1.0
    assert out["confusion_matrix"] == [[8, 0, 0], [0, 1, 0], [0, 1, 0]]
    assert out["classes"]["malignant"]["examples"] == 1
