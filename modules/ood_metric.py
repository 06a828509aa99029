"""`ood_flagged`: the share of a slice's examples that the model's out-of-distribution guard
(modules/ood.py) flags, computed by the Evaluator from the model's own `in_distribution`
output, overall and per slice. Reported, not gated: on the evaluation fold it should be
near 1 - trainer.ood.quantile, and a slice far above that is one the training data covers
poorly. NaN for a model without a guard (an older baseline)."""

from __future__ import annotations

import math

import apache_beam as beam
import numpy as np
from tensorflow_model_analysis.metrics import metric_types, metric_util

from modules.ood import IN_DISTRIBUTION_KEY

OOD_FLAGGED_NAME = "ood_flagged"


class OodFlagged(metric_types.Metric):
    def __init__(self, name: str = OOD_FLAGGED_NAME):
        super().__init__(metric_util.merge_per_key_computations(_ood_flagged), name=name)


def _ood_flagged(name: str, eval_config=None, model_name: str = "", output_name: str = "",
                 sub_key=None, aggregation_type=None, class_weights=None,
                 example_weighted: bool = False) -> metric_types.MetricComputations:
    key = metric_types.MetricKey(name=name, model_name=model_name, output_name=output_name,
                                 sub_key=sub_key, example_weighted=example_weighted)
    return [metric_types.MetricComputation(keys=[key], preprocessors=None,
                                           combiner=_FlaggedCombiner(key))]


class _FlaggedCombiner(beam.CombineFn):
    """[flagged, examples answered by the guard]."""

    def __init__(self, key: metric_types.MetricKey):
        self._key = key

    def create_accumulator(self) -> np.ndarray:
        return np.zeros(2)

    def add_input(self, accumulator: np.ndarray, element) -> np.ndarray:
        predictions = element.get_predictions(model_name=self._key.model_name or None)
        if isinstance(predictions, dict) and IN_DISTRIBUTION_KEY in predictions:
            inside = np.asarray(predictions[IN_DISTRIBUTION_KEY]).ravel()
            accumulator += [float((inside == 0).sum()), float(inside.size)]
        return accumulator

    def merge_accumulators(self, accumulators) -> np.ndarray:
        return sum(accumulators)

    def extract_output(self, accumulator: np.ndarray) -> dict:
        flagged, answered = accumulator
        return {self._key: flagged / answered if answered else math.nan}
