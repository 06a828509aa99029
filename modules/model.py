"""The Keras model: a keras.applications backbone behind its own input scaling.

The Trainer uses Keras 2 (tf_keras) on purpose: tf.Transform's TransformFeaturesLayer and
TFMA's Keras support are tf_keras objects, and tensorflow_transform sets
TF_USE_LEGACY_KERAS=1 when it is imported, so a Keras 3 model would meet Keras 2 layers.
"""

from __future__ import annotations

import os
from typing import Callable

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import tf_keras as keras  # noqa: E402

from modules import features as F  # noqa: E402
from pipeline.errors import MedtfxError  # noqa: E402

# Every backbone receives the same float image in [0, 1] from the Transform graph; this is
# the range each one was trained on, applied inside the model so no caller can get it wrong.
SCALING_MODES = ("raw255", "torch", "caffe", "tf")
_TORCH_MEAN = (0.485, 0.456, 0.406)
_TORCH_STD = (0.229, 0.224, 0.225)
_CAFFE_BGR_MEAN = (103.939, 116.779, 123.68)

BACKBONES: dict[str, tuple[Callable[..., keras.Model], str]] = {
    **{f"efficientnet_b{i}": (getattr(keras.applications, f"EfficientNetB{i}"), "raw255")
       for i in range(8)},
    "densenet121": (keras.applications.DenseNet121, "torch"),
    "densenet169": (keras.applications.DenseNet169, "torch"),
    "densenet201": (keras.applications.DenseNet201, "torch"),
}


class ModelConfigError(MedtfxError):
    """A backbone or weights setting that cannot be built."""


@keras.utils.register_keras_serializable(package="medtfx")
class InputScaling(keras.layers.Layer):
    """Maps [0, 1] RGB to the input range a backbone was trained with."""

    def __init__(self, mode: str, **kwargs):
        super().__init__(**kwargs)
        if mode not in SCALING_MODES:
            raise ModelConfigError(f"unknown input scaling {mode!r}; known: {SCALING_MODES}")
        self.mode = mode

    def call(self, images):
        if self.mode == "raw255":  # Keras EfficientNets rescale and normalise internally
            return images * 255.0
        if self.mode == "torch":
            return (images - _TORCH_MEAN) / _TORCH_STD
        if self.mode == "caffe":
            return images[..., ::-1] * 255.0 - _CAFFE_BGR_MEAN
        return images * 2.0 - 1.0

    def get_config(self) -> dict:
        return {**super().get_config(), "mode": self.mode}


def _backbone(name: str, weights: str, image_size: int) -> tuple[keras.Model, str]:
    if name not in BACKBONES:
        raise ModelConfigError(f"unknown backbone {name!r}; known: {', '.join(BACKBONES)}")
    constructor, scaling = BACKBONES[name]
    if weights not in ("imagenet", "none") and not os.path.isfile(weights):
        raise ModelConfigError(f"weights must be 'imagenet', 'none' or a file; {weights} "
                               "does not exist")
    kwargs = dict(include_top=False, pooling="avg", input_shape=(image_size, image_size, 3))
    try:
        base = constructor(weights=None if weights == "none" else weights, **kwargs)
    except ValueError as err:
        raise ModelConfigError(f"weights {weights} do not fit backbone {name}: {err}") from err
    except Exception as err:
        if weights == "imagenet":
            raise ModelConfigError(
                f"could not fetch imagenet weights for {name} ({err}); on a machine without "
                "internet set weights to a local weights file or 'none'") from err
        raise
    return base, scaling


def build_model(backbone: str, weights: str, image_size: int, dropout: float,
                batchnorm_momentum: float | None = None) -> keras.Model:
    """An uncompiled binary classifier taking the transformed `image` feature."""
    base, scaling = _backbone(backbone, weights, image_size)
    if batchnorm_momentum is not None:
        for layer in base.submodules:
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.momentum = batchnorm_momentum
    images = keras.Input(shape=(image_size, image_size, 3), name=F.IMAGE_KEY)
    x = InputScaling(scaling, name="input_scaling")(images)
    x = base(x)
    x = keras.layers.Dropout(dropout)(x)
    probability = keras.layers.Dense(1, activation="sigmoid", name="probability")(x)
    return keras.Model(images, probability, name=f"medtfx_{backbone}")
