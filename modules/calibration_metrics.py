"""`CalibrationError`: the served probability's expected calibration error and Brier score
per slice, with 95% intervals, for the Evaluator (and the `evaluation.max_ece` gate).

ECE in equal-width bins, as modules/calibration.py defines it (the positive class's
probability for a binary model, the top class's for K classes); its interval is a percentile
bootstrap over the slice's examples, its Brier score's a normal one (both there too). The
combiner keeps per slice only the ECE's cells and the Brier terms' count, sum and sum of
squares, so its memory does not grow with the fold.
"""

from __future__ import annotations

import apache_beam as beam
import numpy as np
from tensorflow_model_analysis.metrics import metric_types, metric_util

from modules.calibration import (FINE_BINS, brier_terms, ece_interval, ece_of_cells,
                                 fine_bin, mean_interval)

ECE_NAME = "ece"
BRIER_NAME = "brier_score"
LOWER, UPPER = "_ci_lower", "_ci_upper"  # the interval's ends ride as metrics of their own


class CalibrationError(metric_types.Metric):
    def __init__(self, name: str = ECE_NAME):
        """ECE (named `name`, the key a threshold bounds), the Brier score and their
        interval ends."""
        super().__init__(metric_util.merge_per_key_computations(_calibration_error), name=name)


def _calibration_error(
        name: str, eval_config=None, model_name: str = "", output_name: str = "",
        sub_key: metric_types.SubKey | None = None,
        aggregation_type: metric_types.AggregationType | None = None,
        class_weights: dict[int, float] | None = None,
        example_weighted: bool = False) -> metric_types.MetricComputations:
    keys = {metric: metric_types.MetricKey(name=metric, model_name=model_name,
                                           output_name=output_name, sub_key=sub_key,
                                           example_weighted=example_weighted)
            for metric in (name, name + LOWER, name + UPPER,
                           BRIER_NAME, BRIER_NAME + LOWER, BRIER_NAME + UPPER)}
    return [metric_types.MetricComputation(
        keys=list(keys.values()), preprocessors=None,
        combiner=_CalibrationCombiner(name, keys, eval_config, model_name, output_name))]


class _CalibrationCombiner(beam.CombineFn):
    """Accumulator: examples and summed confidence per ECE cell ([FINE_BINS, 2] each, by
    outcome), and the Brier terms' count, sum and sum of squares."""

    def __init__(self, name: str, keys: dict, eval_config, model_name: str,
                 output_name: str):
        self._name, self._keys, self._eval_config = name, keys, eval_config
        self._model_name, self._output_name = model_name, output_name

    def create_accumulator(self) -> list:
        return [np.zeros((FINE_BINS, 2)), np.zeros((FINE_BINS, 2)), np.zeros(3)]

    def add_input(self, accumulator: list, element) -> list:
        label, prediction, _ = next(metric_util.to_label_prediction_example_weight(
            element, eval_config=self._eval_config, model_name=self._model_name,
            output_name=self._output_name, flatten=False,
            require_single_example_weight=True))
        scores = np.asarray(prediction, float).ravel()
        code = int(np.asarray(label).ravel()[0])
        if scores.size == 1:  # binary: the positive class's probability
            confidence, outcome = float(scores[0]), code
            term = float(brier_terms([code], scores)[0])
        else:
            confidence, outcome = float(scores.max()), int(scores.argmax() == code)
            term = float(brier_terms([code], scores[None])[0])
        cell = int(fine_bin(confidence))
        accumulator[0][cell, outcome] += 1
        accumulator[1][cell, outcome] += confidence
        accumulator[2] += [1.0, term, term * term]
        return accumulator

    def merge_accumulators(self, accumulators) -> list:
        accumulators = list(accumulators)
        return [sum(a[i] for a in accumulators) for i in range(3)]

    def extract_output(self, accumulator: list) -> dict:
        counts, sums, brier = accumulator
        values = {self._name: ece_of_cells(counts, sums),
                  BRIER_NAME: brier[1] / brier[0] if brier[0] else None}
        intervals = {self._name: ece_interval(counts, sums), BRIER_NAME: mean_interval(*brier)}
        for metric, interval in intervals.items():
            values[metric + LOWER], values[metric + UPPER] = interval or (None, None)
        return {self._keys[metric]: float("nan") if value is None else float(value)
                for metric, value in values.items()}
