"""The Evaluator's TFMA config: where the slices and every blessing threshold are set."""

from __future__ import annotations

import json

from tensorflow_model_analysis.proto import config_pb2 as tfma

from modules.calibration_metrics import ECE_NAME
from modules.metrics import (ACCURACY_OVER_MAJORITY_NAME, BALANCED_OVER_MAJORITY_NAME,
                             GATED_AUC_NAME, URGENT_PLOT_NAME)
from modules.signatures import PREDICTION_KEY, PROBABILITIES_KEY, SLICING_FEATURES
from modules.task import TaskSpec
from pipeline.results.gate import EvaluationConfig

HIGHER_IS_BETTER = tfma.MetricDirection.HIGHER_IS_BETTER
# Every curve and rate uses these many thresholds, so TFMA computes one set of confusion
# matrices per slice for all of them (the operating point is picked from the same set).
CURVE_THRESHOLDS = 1000
CALIBRATION_BUCKETS = 10

# Metric names in TFMA's output (and in run_summary.json).
SPECIFICITY_AT_TARGET = "specificity_at_sensitivity"
SENSITIVITY_AT_SPECIFICITY = "sensitivity_at_specificity"


def slicing_specs(evaluation: EvaluationConfig) -> list[tfma.SlicingSpec]:
    """Overall first, then one family per configured feature list."""
    return [tfma.SlicingSpec()] + [tfma.SlicingSpec(feature_keys=family)
                                   for family in evaluation.slices]


def _bound(lower: float) -> tfma.GenericValueThreshold:
    return tfma.GenericValueThreshold(lower_bound={"value": lower})


def _no_drop(max_drop: float) -> tfma.GenericChangeThreshold:
    return tfma.GenericChangeThreshold(direction=HIGHER_IS_BETTER,
                                       absolute={"value": -max_drop})


def _metric(class_name: str, per_slice: list | None = None, module: str = "",
            **config) -> tfma.MetricConfig:
    return tfma.MetricConfig(class_name=class_name, module=module,
                             config=json.dumps(config) if config else "",
                             per_slice_thresholds=per_slice or [])


def _calibration_error(evaluation: EvaluationConfig) -> tfma.MetricConfig:
    """ECE and Brier score on every slice; ECE at most max_ece overall, when set."""
    gate = [] if evaluation.max_ece is None else [tfma.PerSliceMetricThreshold(
        slicing_specs=[tfma.SlicingSpec()], threshold=tfma.MetricThreshold(
            value_threshold=tfma.GenericValueThreshold(upper_bound={"value": evaluation.max_ece})))]
    return _metric("CalibrationError", module="modules.calibration_metrics", per_slice=gate,
                   name=ECE_NAME)


def _multiclass_specs(evaluation: EvaluationConfig, task: TaskSpec,
                      code: str) -> list[tfma.MetricsSpec]:
    """Three or more classes. Blessing needs: macro AUC >= auc_threshold and not more than
    max_auc_drop below the last blessed model; balanced accuracy at least
    min_balanced_accuracy_over_majority above always answering one class; each class's
    recall at least its floor and not more than max_class_recall_drop below the last
    blessed model. Slices are reported, not gated (a slice rarely holds every class)."""
    overall = [tfma.SlicingSpec()]

    def gate(value: float | None = None, drop: float | None = None) -> list:
        threshold = tfma.MetricThreshold()
        if value is not None:
            threshold.value_threshold.CopyFrom(_bound(value))
        if drop is not None:
            threshold.change_threshold.CopyFrom(_no_drop(drop))
        return [tfma.PerSliceMetricThreshold(slicing_specs=overall, threshold=threshold)]

    top_class = [
        _metric("ExampleCount"),
        _metric("OodFlagged", module="modules.ood_metric"),
        _metric("TopClassRate", module="modules.metrics", rate="accuracy", code=code),
        _metric("TopClassRate", module="modules.metrics", rate="balanced_accuracy"),
        _metric("TopClassRate", module="modules.metrics", rate=BALANCED_OVER_MAJORITY_NAME,
                per_slice=gate(evaluation.min_balanced_accuracy_over_majority)),
        _metric("MultiClassConfusionMatrixAtThresholds", thresholds=[0.0]),
        _calibration_error(evaluation),
    ]
    if task.urgent_ids:
        top_class.append(_metric("UrgentConfusionMatrixPlot", module="modules.metrics",
                                 urgent=task.urgent_ids, num_thresholds=CURVE_THRESHOLDS,
                                 name=URGENT_PLOT_NAME))
    classes = range(len(task.label.classes))
    macro = tfma.MetricsSpec(
        metrics=[_metric("AUC", num_thresholds=CURVE_THRESHOLDS,
                         per_slice=gate(evaluation.auc_threshold, evaluation.max_auc_drop))],
        aggregate=tfma.AggregationOptions(macro_average=True,
                                          class_weights={k: 1.0 for k in classes}))
    floors: dict[float, list[int]] = {}
    for k, name in enumerate(task.label.classes):
        floor = evaluation.class_recall_floors.get(name, evaluation.min_class_recall)
        floors.setdefault(floor, []).append(k)
    per_class = [tfma.MetricsSpec(
        metrics=[_metric("TopClassRate", module="modules.metrics", rate="recall",
                         per_slice=gate(floor, evaluation.max_class_recall_drop)),
                 _metric("TopClassRate", module="modules.metrics", rate="precision"),
                 _metric("AUC", num_thresholds=CURVE_THRESHOLDS),
                 _metric("ConfusionMatrixPlot", num_thresholds=CURVE_THRESHOLDS)],
        binarize=tfma.BinarizationOptions(class_ids={"values": ids}))
        for floor, ids in sorted(floors.items())]
    return [tfma.MetricsSpec(metrics=top_class), macro, *per_class]


def build_eval_config(evaluation: EvaluationConfig, task: TaskSpec,
                      code: str = "") -> tfma.EvalConfig:
    """Blessing of a binary model (for more classes, see _multiclass_specs) needs: overall
    AUC >= auc_threshold and not more than max_auc_drop below the last blessed model; on
    every gated slice, AUC >= its family's bound and not more than max_slice_auc_drop below
    the last blessed model; and, when set, specificity >= min_specificity at the operating
    point, accuracy there >= the majority-class rate plus min_accuracy_over_majority, and
    ECE <= max_ece (the same for more classes).
    `code`, the fingerprint of the Evaluator's project code (its metrics and extractors),
    rides in the gated AUC's config (and the top-class accuracy's): the config is the only
    property of TFX's Evaluator free to carry it, and the cache must see it."""
    if task.binary:
        metrics_specs = [tfma.MetricsSpec(metrics=_binary_metrics(evaluation, code))]
    else:
        metrics_specs = _multiclass_specs(evaluation, task, code)
    return tfma.EvalConfig(
        # tf_generic: TFMA calls the signatures instead of rebuilding the Keras model in
        # every combiner (9 rebuilds, ~70 s even on a 32 px model).
        model_specs=[tfma.ModelSpec(
            model_type="tf_generic", signature_name="serving_default",
            label_key=task.label.key, inference_batch_size=evaluation.max_batch,
            prediction_key=PREDICTION_KEY if task.binary else PROBABILITIES_KEY,
            preprocessing_function_names=[SLICING_FEATURES] if task.bucketed else [])],
        slicing_specs=slicing_specs(evaluation),
        metrics_specs=metrics_specs,
        # The model's compiled loss and metrics are not part of the gate. No TFMA
        # intervals: pipeline/results/intervals.py computes them from these outputs.
        options=tfma.Options(include_default_metrics={"value": False}))


def _binary_metrics(evaluation: EvaluationConfig, code: str) -> list[tfma.MetricConfig]:
    overall = [tfma.SlicingSpec()]
    slice_thresholds = [
        tfma.PerSliceMetricThreshold(
            slicing_specs=[tfma.SlicingSpec(feature_keys=family)],
            threshold=tfma.MetricThreshold(
                value_threshold=_bound(evaluation.slice_auc_bound(family)),
                change_threshold=_no_drop(evaluation.max_slice_auc_drop)))
        for family in evaluation.slices]
    specificity_gate = [] if evaluation.min_specificity is None else [tfma.PerSliceMetricThreshold(
        slicing_specs=overall,
        threshold=tfma.MetricThreshold(value_threshold=_bound(evaluation.min_specificity)))]
    metrics = [
        _metric("ExampleCount"),
        _metric("OodFlagged", module="modules.ood_metric"),  # the guard's flags, reported
        _metric("MeanLabel"),  # the malignant share of the slice
        _metric("AUC", num_thresholds=CURVE_THRESHOLDS, per_slice=[tfma.PerSliceMetricThreshold(
            slicing_specs=overall, threshold=tfma.MetricThreshold(
                value_threshold=_bound(evaluation.auc_threshold),
                change_threshold=_no_drop(evaluation.max_auc_drop)))]),
        _metric("GatedAUC", module="modules.metrics", per_slice=slice_thresholds,
                name=GATED_AUC_NAME, num_thresholds=CURVE_THRESHOLDS,
                min_positives=evaluation.min_slice_positives,
                min_negatives=evaluation.min_slice_negatives, code=code),
        _metric("AUCPrecisionRecall", name="auc_pr", num_thresholds=CURVE_THRESHOLDS),
        _metric("SpecificityAtSensitivity", per_slice=specificity_gate,
                name=SPECIFICITY_AT_TARGET, sensitivity=evaluation.target_sensitivity,
                num_thresholds=CURVE_THRESHOLDS),
        _metric("SensitivityAtSpecificity", name=SENSITIVITY_AT_SPECIFICITY,
                specificity=evaluation.report_specificity, num_thresholds=CURVE_THRESHOLDS),
        _metric("Calibration"),  # sum of predictions over sum of labels; 1 is calibrated
        _metric("CalibrationPlot", num_buckets=CALIBRATION_BUCKETS),
        _calibration_error(evaluation),
        _metric("ConfusionMatrixPlot", num_thresholds=CURVE_THRESHOLDS),
    ]
    if evaluation.min_accuracy_over_majority is not None:  # at the shipped threshold: overall only
        accuracy_gate = tfma.PerSliceMetricThreshold(
            slicing_specs=overall, threshold=tfma.MetricThreshold(
                value_threshold=_bound(evaluation.min_accuracy_over_majority)))
        metrics.append(_metric("AccuracyOverMajority", module="modules.metrics",
                               per_slice=[accuracy_gate], name=ACCURACY_OVER_MAJORITY_NAME,
                               target_sensitivity=evaluation.target_sensitivity,
                               num_thresholds=CURVE_THRESHOLDS))
    return metrics
