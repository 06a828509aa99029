"""Calibration's effect on a finished run's evaluation fold: ECE and Brier score of the pushed
model's served (calibrated) probabilities, and of the network's own, before the map.

    python -m tests.benchmarks.calibration WORK_DIR [SAVED_MODEL_DIR]

SAVED_MODEL_DIR: a model that was not pushed (the Trainer's Format-Serving); default the
pushed one.

The served model returns calibrated scores only; the network's are recovered by inverting
the stored map (logit(raw) = T (logit(served) - b), or raw = softmax(T (log(served) - b))
for K classes), exact up to the map's clipping at 1e-6.
"""

from __future__ import annotations

import glob
import json
import os
import sys

import numpy as np
import tensorflow as tf
from scipy.special import softmax

from modules.calibration import EPS, binary_logits, brier_terms, ece
from modules.signatures import PREDICTION_KEY, PROBABILITIES_KEY
from pipeline.config import load_config_dict


def fold_scores(model, files: list[str], label_key: str, binary: bool,
                batch: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Labels and served scores of every example in `files`."""
    labels, scores = [], []
    key = PREDICTION_KEY if binary else PROBABILITIES_KEY
    for records in tf.data.TFRecordDataset(files).batch(batch):
        out = model.signatures["serving_default"](examples=records)[key].numpy()
        scores.append(out[:, 0] if binary else out)
        labels += [tf.train.Example.FromString(r).features.feature[label_key].int64_list.value[0]
                   for r in records.numpy()]
    return np.asarray(labels), np.concatenate(scores)


def uncalibrated(model, served: np.ndarray) -> np.ndarray:
    temperature = float(model.calibration.temperature.numpy())
    bias = model.calibration.bias.numpy()
    if served.ndim == 1:
        return 1 / (1 + np.exp(-temperature * (binary_logits(served) - bias)))
    return softmax(temperature * (np.log(np.clip(served, EPS, 1.0)) - bias), axis=1)


def main(work_dir: str, model_dir: str | None = None) -> dict:
    with open(os.path.join(work_dir, "run_summary.json")) as f:
        summary = json.load(f)
    config = load_config_dict(summary["config"])
    files = sorted(f for split in summary["splits"]["evaluation"]
                   for f in glob.glob(os.path.join(summary["data_root"], f"{split}-*.tfrec")))
    model = tf.saved_model.load(model_dir or summary["pushed_model"])
    labels, served = fold_scores(model, files, config.task.label.key, config.task.binary)
    raw = uncalibrated(model, served)
    out = {"examples": int(len(labels)),
           "temperature": float(model.calibration.temperature.numpy()),
           "bias": np.round(model.calibration.bias.numpy(), 3).tolist()}
    for when, scores in (("before", raw), ("after", served)):
        out[f"ece_{when}"] = round(ece(labels, scores), 4)
        out[f"brier_{when}"] = round(float(brier_terms(labels, scores).mean()), 4)
        if scores.ndim == 1:
            out[f"predicted_over_observed_{when}"] = round(float(scores.sum() / labels.sum()), 3)
        else:  # class biases move the top class: its balanced accuracy (mean recall)
            recalls = [np.mean(scores[labels == k].argmax(1) == k) for k in np.unique(labels)]
            out[f"balanced_accuracy_{when}"] = round(float(np.mean(recalls)), 4)
    return out


if __name__ == "__main__":
    print(json.dumps(main(*sys.argv[1:3]), indent=1))
