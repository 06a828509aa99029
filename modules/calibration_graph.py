"""The calibration map inside the SavedModel: its parameters are variables the model tracks,
applied by every serving signature to the network's (TTA-averaged) probabilities before the
operating threshold, so TF Serving, the Evaluator and every client read calibrated scores.
The map itself is fitted in modules/calibration.py; this is the same formula in TF."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from modules.calibration import EPS, CalibrationMap


class ServedCalibration(tf.Module):
    """sigmoid(logit(p) / T + b) for a binary head ([B, 1]), softmax(log(p) / T + b) for K
    classes ([B, K]; b one per class, or 0). The variables are not trainable: the Keras model the module is
    attached to must not train or count them."""

    def __init__(self, fitted: CalibrationMap, binary: bool):
        super().__init__(name="calibration")
        self.binary = binary
        self.temperature = tf.Variable(fitted.temperature, dtype=tf.float32, trainable=False,
                                       name="temperature")
        self.bias = tf.Variable(np.asarray(fitted.bias, np.float32), trainable=False,
                                name="bias")

    def __call__(self, probabilities: tf.Tensor) -> tf.Tensor:
        p = tf.cast(probabilities, tf.float32)
        if self.binary:
            p = tf.clip_by_value(p, EPS, 1 - EPS)
            return tf.sigmoid((tf.math.log(p) - tf.math.log1p(-p)) / self.temperature
                              + self.bias)
        return tf.nn.softmax(tf.math.log(tf.clip_by_value(p, EPS, 1.0)) / self.temperature
                             + self.bias, axis=-1)
