"""The Evaluator's TFMA config: where the slices and every blessing threshold are set."""

from __future__ import annotations

import json

from tensorflow_model_analysis.proto import config_pb2 as tfma

from modules import features as F
from modules.signatures import PREDICTION_KEY
from pipeline.config import EvaluationConfig

HIGHER_IS_BETTER = tfma.MetricDirection.HIGHER_IS_BETTER


def slicing_specs(cfg: EvaluationConfig) -> list[tfma.SlicingSpec]:
    """Overall first, then one slice family per configured feature."""
    return [tfma.SlicingSpec()] + [tfma.SlicingSpec(feature_keys=[key])
                                   for key in cfg.slice_features]


def build_eval_config(cfg: EvaluationConfig) -> tfma.EvalConfig:
    """AUC overall must clear `auc_threshold` and not fall more than `max_auc_drop` below the
    last blessed model; `auc_gate` must clear `slice_auc_threshold` on every slice."""
    overall_only = [tfma.SlicingSpec()]
    overall_auc = tfma.MetricConfig(
        class_name="AUC",
        per_slice_thresholds=[tfma.PerSliceMetricThreshold(
            slicing_specs=overall_only,
            threshold=tfma.MetricThreshold(
                value_threshold=tfma.GenericValueThreshold(
                    lower_bound={"value": cfg.auc_threshold}),
                change_threshold=tfma.GenericChangeThreshold(
                    direction=HIGHER_IS_BETTER, absolute={"value": -cfg.max_auc_drop})))])
    slice_auc = tfma.MetricConfig(
        class_name="GatedAUC", module="modules.metrics",
        config=json.dumps({"min_positives": cfg.min_slice_positives,
                           "min_negatives": cfg.min_slice_negatives}),
        threshold=tfma.MetricThreshold(value_threshold=tfma.GenericValueThreshold(
            lower_bound={"value": cfg.slice_auc_threshold})))
    return tfma.EvalConfig(
        # tf_generic: TFMA calls the signatures instead of rebuilding the Keras model in
        # every combiner (9 rebuilds, ~70 s even on a 32 px model).
        model_specs=[tfma.ModelSpec(
            model_type="tf_generic", signature_name="serving_default", label_key=F.LABEL_KEY,
            prediction_key=PREDICTION_KEY, preprocessing_function_names=["slicing_features"])],
        slicing_specs=slicing_specs(cfg),
        metrics_specs=[tfma.MetricsSpec(metrics=[
            tfma.MetricConfig(class_name="ExampleCount"),
            overall_auc,
            slice_auc,
        ])],
        # The model's compiled loss and metrics are not part of the gate.
        options=tfma.Options(include_default_metrics={"value": False}))
