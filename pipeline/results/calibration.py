"""The served model's calibration as the summary, the model card and the report state it: the
map fitted after training (recorded in the Trainer's or the Ensemble's validation file,
modules/calibration.py) with the validation fold's ECE before and after it, and the served
probability's ECE and Brier score on the evaluation fold with their intervals (the
Evaluator's, modules/calibration_metrics.py). One sentence, written once, for all three."""

from __future__ import annotations

import json
import os

import tensorflow as tf

from modules.artifacts import VALIDATION_FILE
from pipeline.results.eval_results import SliceResult

SERVED_FIRST = ("Ensemble", "Trainer")  # the producer whose model is evaluated and served
METHODS = {"platt": "Platt scaling", "temperature": "temperature scaling",
           "temperature_bias": "temperature scaling with class biases"}


def served_calibration(training: dict) -> dict | None:
    """The calibration record of the served model among the run's trained models (keyed by
    producer, as run_summary.json's `training`): the Ensemble's, else the Trainer's."""
    for producer in SERVED_FIRST:
        if "calibration" in training.get(producer, {}):
            return training[producer]["calibration"]
    return None


def calibration_summary(record: dict | None, overall: SliceResult | None) -> dict:
    """run_summary.json's `calibration`: the map and the validation fold's ECE before and
    after (None for a model trained before calibration existed), and the evaluation fold's
    ECE and Brier score of the served probability with 95% intervals."""
    out: dict = {}
    if record is not None:
        out.update({key: record.get(key) for key in (
            "method", "temperature", "bias", "reason", "examples", "ece_before", "ece_after",
            "brier_before", "brier_after")})
    if overall is not None:
        for name in ("ece", "brier_score"):
            out[f"evaluation_{name}"] = overall.metrics.get(name)
            interval = overall.intervals.get(name)
            out[f"evaluation_{name}_ci"] = [round(v, 4) for v in interval] if interval else None
    return {key: round(value, 4) if isinstance(value, float) else value
            for key, value in out.items()}


def _with_interval(value: float | None, interval: list[float] | None) -> str:
    if value is None:
        return "missing"
    return f"{value:.3f}" + (f" [{interval[0]:.3f}, {interval[1]:.3f}]" if interval else "")


def _parameters(entry: dict) -> str:
    """'temperature 1.181, bias 0.855'; K classes: the class biases, or why there are none."""
    text = f"temperature {entry['temperature']:.3f}"
    if isinstance(entry["bias"], list):
        text += ", class biases " + " ".join(f"{b:.2f}" for b in entry["bias"])
    elif entry["method"] == "platt":
        text += f", bias {entry['bias']:.3f}"
    return text + (f"; {entry['reason']}" if entry["reason"] else "")


def calibration_sentence(entry: dict) -> str:
    """'Platt scaling (temperature 1.181, bias 0.855) fitted on 796 validation examples,
    ECE there 0.052 -> 0.016; on the evaluation fold ECE 0.030 [0.022, 0.052], Brier
    0.067 [0.053, 0.080]'."""
    method = entry.get("method")
    if method is None:
        fitted = "no calibration map recorded"
    elif method == "identity":
        fitted = f"not calibrated ({entry['reason']})"
    else:
        fitted = (f"{METHODS[method]} ({_parameters(entry)}) fitted on {entry['examples']} "
                  f"validation examples, ECE there {entry['ece_before']:.3f} -> "
                  f"{entry['ece_after']:.3f}")
    if "evaluation_ece" not in entry:
        return fitted
    return (f"{fitted}; on the evaluation fold ECE "
            f"{_with_interval(entry['evaluation_ece'], entry['evaluation_ece_ci'])}, Brier "
            f"{_with_interval(entry['evaluation_brier_score'], entry['evaluation_brier_score_ci'])}")


def recorded_calibration(model_uri: str) -> dict | None:
    """The calibration record in a Model artifact's validation file (the Trainer's or the
    Ensemble's); None when there is none."""
    path = os.path.join(model_uri, VALIDATION_FILE)
    if not tf.io.gfile.exists(path):
        return None
    with tf.io.gfile.GFile(path) as f:
        return json.load(f).get("calibration")
