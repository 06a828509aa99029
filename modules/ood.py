"""The out-of-distribution guard: how far an image's features lie from what the model was
trained on, stored in the SavedModel and applied in its serving signatures.

The score is the Mahalanobis distance of the backbone's pooled image features to the nearest
class mean, under one covariance shared by the classes (Lee et al., 2018). It is fitted after
training on the training fold's images (at most `max_images`, without augmentation; the
covariance shrunk by Ledoit-Wolf, since 256 to 2,560 features meet a fold of hundreds to
thousands of images), and its threshold is a quantile of the validation fold's scores, so
about 1 - quantile of images like the validation fold are flagged. Softmax-based scores
(maximum probability, energy) were not chosen: with the sigmoid head of a binary task they
are a function of the one probability, so a confident "benign" for a chest X-ray looks as
in-distribution as a clear naevus; features keep what the head throws away, and Mahalanobis
on them flags far inputs such as another modality.

Only orientation 0 is scored: test-time augmentation averages the probability, the guard asks
whether the image itself is of the trained kind.
"""

from __future__ import annotations

import dataclasses
import io
import math
import os
import time

import numpy as np
import tensorflow as tf
import tf_keras as keras
from sklearn.covariance import ledoit_wolf

OOD_SCORE_KEY = "ood_score"  # the Mahalanobis distance [B, 1]
IN_DISTRIBUTION_KEY = "in_distribution"  # 1: the score is within the threshold [B, 1]
DETECTOR_FILE = "ood_detector.npz"  # beside a Trainer's Format-Serving, for the Ensemble


def guarded_network(net: keras.Model) -> keras.Model:
    """`net` with a second output sharing every layer: its backbone's pooled image features
    (before any metadata joins them), so one pass gives both the probability and what the
    guard scores."""
    backbone = net.get_layer("backbone")
    return keras.Model(net.inputs, [net.output, backbone.get_output_at(0)],
                       name=f"{net.name}_guarded")


class OodDetector(tf.Module):
    """Class means, the shared precision matrix and the threshold, as variables the
    SavedModel keeps; `score` and `outputs` run in the serving graph, in float32."""

    def __init__(self, means: np.ndarray, precision: np.ndarray, threshold: float):
        super().__init__(name="ood_detector")
        self.means = tf.Variable(means.astype(np.float32), trainable=False, name="means")
        self.precision = tf.Variable(precision.astype(np.float32), trainable=False,
                                     name="precision")
        self.threshold = tf.Variable(float(threshold), dtype=tf.float32, trainable=False,
                                     name="threshold")

    def score(self, features: tf.Tensor) -> tf.Tensor:
        """The distance [B, 1] of each row of `features` [B, D] to its nearest class mean."""
        diff = tf.cast(features, tf.float32)[:, None, :] - self.means[None]  # [B, C, D]
        flat = tf.reshape(diff, [-1, tf.shape(diff)[-1]])
        squared = tf.reduce_sum(tf.matmul(flat, self.precision) * flat, axis=-1)
        squared = tf.reshape(squared, tf.shape(diff)[:2])
        return tf.sqrt(tf.maximum(tf.reduce_min(squared, axis=-1, keepdims=True), 0.0))

    def outputs(self, features: tf.Tensor) -> dict:
        score = self.score(features)
        return {OOD_SCORE_KEY: score,
                IN_DISTRIBUTION_KEY: tf.cast(score <= self.threshold, tf.int64)}

    def save(self, path: str) -> None:
        """The detector as an .npz file (`path` may be on gs://)."""
        buffer = io.BytesIO()  # np.savez seeks back, which a GFile being written cannot
        np.savez(buffer, means=self.means.numpy(), precision=self.precision.numpy(),
                 threshold=self.threshold.numpy())
        with tf.io.gfile.GFile(path, "wb") as f:
            f.write(buffer.getvalue())

    @classmethod
    def load(cls, path: str) -> OodDetector:
        with tf.io.gfile.GFile(path, "rb") as f:
            saved = np.load(io.BytesIO(f.read()))
        return cls(saved["means"], saved["precision"], float(saved["threshold"]))


@dataclasses.dataclass
class Guard:
    """What the serving signatures need: the served network with a second output, the
    features the detector was fitted on (its own, or an ensemble member's), and the
    detector."""
    network: keras.Model
    detector: OodDetector

    def __call__(self, transformed: dict) -> tuple[tf.Tensor, dict]:
        """The probabilities of the transformed request at orientation 0, and the guard's
        outputs for it: one pass of the network for both."""
        inputs = {name: transformed[name] for name in self.network.input_names}
        probabilities, pooled = self.network(inputs, training=False)
        return probabilities, self.detector.outputs(pooled)


def fit_gaussian(features: np.ndarray, classes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(class means [C, D], precision [D, D]): the covariance of the features around their
    class's mean, shared by the classes and shrunk towards a scaled identity by Ledoit-Wolf
    so it can be inverted when features outnumber images. Classes absent from `classes`
    get no mean."""
    features = features.astype(np.float64)
    present = np.unique(classes)
    means = np.stack([features[classes == c].mean(axis=0) for c in present])
    residuals = features - means[np.searchsorted(present, classes)]
    covariance, _ = ledoit_wolf(residuals, assume_centered=True)
    return means, np.linalg.inv(covariance)


def set_threshold(detector: OodDetector, features: np.ndarray, quantile: float) -> None:
    """Sets the threshold at the `quantile` of the scores of `features` (the validation
    fold's), computed by the serving graph's own arithmetic."""
    scores = detector.score(tf.constant(features, tf.float32)).numpy().ravel()
    detector.threshold.assign(float(np.quantile(scores, quantile)))


def collect_features(guarded: keras.Model, dataset: tf.data.Dataset, max_images: int
                     ) -> tuple[np.ndarray, np.ndarray]:
    """(pooled features [N, D], class codes [N]) of at most `max_images` images of
    `dataset`'s (features, label) batches, read in order."""
    features, codes, seen = [], [], 0
    for batch, label in dataset:
        inputs = {name: batch[name] for name in guarded.input_names}
        _, pooled = guarded(inputs, training=False)
        label = label.numpy()
        features.append(pooled.numpy().astype(np.float32))
        codes.append(label.argmax(-1) if label.ndim > 1 else label.ravel().astype(int))
        seen += len(codes[-1])
        if seen >= max_images:
            break
    return np.concatenate(features)[:max_images], np.concatenate(codes)[:max_images]


def fit_detector(net: keras.Model, train: tf.data.Dataset, validation: tf.data.Dataset,
                 max_images: int, quantile: float, batch_size: int) -> tuple[Guard, dict]:
    """The guard of `net`: its detector fitted on at most `max_images` training images, the
    threshold set on as many validation images; and what it took (images, features,
    threshold, seconds)."""
    start = time.monotonic()
    batches = math.ceil(max_images / batch_size)
    network = guarded_network(net)
    features, codes = collect_features(network, train.take(batches), max_images)
    means, precision = fit_gaussian(features, codes)
    detector = OodDetector(means, precision, threshold=math.inf)
    held_out, _ = collect_features(network, validation.take(batches), max_images)
    set_threshold(detector, held_out, quantile)
    stats = {"train_images": len(codes), "validation_images": len(held_out),
             "features": int(features.shape[1]), "quantile": quantile,
             "threshold": round(float(detector.threshold.numpy()), 4),
             "seconds": round(time.monotonic() - start, 2)}
    return Guard(network, detector), stats


def detector_path(model_uri: str) -> str:
    """Where a Trainer's detector is kept in its Model artifact, beside Format-Serving."""
    return os.path.join(model_uri, DETECTOR_FILE)
