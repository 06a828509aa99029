"""The melanoma notebook's learning-rate schedule, per step instead of per epoch.

Linear ramp from `start` to `peak`, a sustain at `peak`, then exponential decay towards
`minimum` by `decay` each epoch. Per step, so the rate moves smoothly within an epoch and the
schedule survives any steps_per_epoch.
"""

from __future__ import annotations

import tensorflow as tf
import tf_keras as keras


@keras.utils.register_keras_serializable(package="medtfx")
class RampSustainDecay(keras.optimizers.schedules.LearningRateSchedule):
    def __init__(self, start: float, peak: float, minimum: float, ramp_steps: int,
                 sustain_steps: int, decay: float, steps_per_epoch: int):
        self.start, self.peak, self.minimum = start, peak, minimum
        self.ramp_steps, self.sustain_steps = ramp_steps, sustain_steps
        self.decay, self.steps_per_epoch = decay, steps_per_epoch

    def __call__(self, step):
        step = tf.cast(step, tf.float32)
        ramp = self.start + (self.peak - self.start) * step / max(self.ramp_steps, 1)
        decay_epochs = (step - self.ramp_steps - self.sustain_steps) / self.steps_per_epoch
        decayed = (self.peak - self.minimum) * tf.pow(self.decay, decay_epochs) + self.minimum
        return tf.where(step < self.ramp_steps, ramp,
                        tf.where(step < self.ramp_steps + self.sustain_steps,
                                 tf.constant(self.peak, tf.float32), decayed))

    def get_config(self) -> dict:
        return {"start": self.start, "peak": self.peak, "minimum": self.minimum,
                "ramp_steps": self.ramp_steps, "sustain_steps": self.sustain_steps,
                "decay": self.decay, "steps_per_epoch": self.steps_per_epoch}
