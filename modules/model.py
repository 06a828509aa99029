"""The Keras model: a backbone chosen by name behind its own input scaling, optionally fused
with the patient's metadata.

The Trainer uses Keras 2 (tf_keras) on purpose, for every backbone: tf.Transform's
TransformFeaturesLayer, TFMA's Keras support and tensorflow_hub's KerasLayer are tf_keras
objects, and tensorflow_transform sets TF_USE_LEGACY_KERAS=1 when it is imported, so a
Keras 3 model would meet Keras 2 layers.
"""

from __future__ import annotations

import os
import tempfile
from typing import Callable

import tensorflow as tf
import tf_keras as keras

from modules.errors import MedtfxError
from modules.task import IMAGE_INPUT, METADATA_KEY

# Every backbone receives the same float image in [0, 1] from the Transform graph; this is
# the range each one was trained on, applied inside the model so no caller can get it wrong.
SCALING_MODES = ("raw255", "torch", "caffe", "tf", "unit")
_TORCH_MEAN = (0.485, 0.456, 0.406)
_TORCH_STD = (0.229, 0.224, 0.225)
_CAFFE_BGR_MEAN = (103.939, 116.779, 123.68)
HUB_PREFIX = "hub:"


class ModelConfigError(MedtfxError):
    """A backbone or weights setting that cannot be built."""


def _conv_block(x, filters: int, convs: int, name: str):
    for i in range(convs):
        x = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False,
                                name=f"{name}_conv{i}")(x)
        x = keras.layers.BatchNormalization(name=f"{name}_bn{i}")(x)
        x = keras.layers.ReLU(name=f"{name}_relu{i}")(x)
    return keras.layers.MaxPooling2D(name=f"{name}_pool")(x)


def pneumonia_cnn(input_shape: tuple[int, int, int], weights=None, **_) -> keras.Model:
    """The pneumonia notebook's six-block CNN (conv, batch norm, pooling; 16 to 256 filters)."""
    images = keras.Input(input_shape)
    x = images
    for block, (filters, convs) in enumerate([(16, 1), (32, 1), (64, 2), (128, 2), (256, 2),
                                              (256, 1)]):
        if x.shape[1] < 2:  # small test images run out of pixels before the sixth block
            break
        x = _conv_block(x, filters, convs, f"block{block}")
    return keras.Model(images, keras.layers.GlobalAveragePooling2D()(x), name="pneumonia_cnn")


def xray_sex_cnn(input_shape: tuple[int, int, int], weights=None, **_) -> keras.Model:
    """The sex-prediction notebook's four Conv2D + MaxPool layers."""
    images = keras.Input(input_shape)
    x = images
    for block, filters in enumerate([32, 64, 128, 128]):
        x = keras.layers.Conv2D(filters, 3, padding="same", activation="relu",
                                name=f"conv{block}")(x)
        x = keras.layers.MaxPooling2D(name=f"pool{block}")(x)
    return keras.Model(images, keras.layers.GlobalAveragePooling2D()(x), name="xray_sex_cnn")


_apps = keras.applications
BACKBONES: dict[str, tuple[Callable[..., keras.Model], str]] = {
    **{f"efficientnet_b{i}": (getattr(_apps, f"EfficientNetB{i}"), "raw255") for i in range(8)},
    **{f"efficientnet_v2_{v.lower()}": (getattr(_apps, f"EfficientNetV2{v}"), "raw255")
       for v in ("B0", "B1", "B2", "B3", "S")},
    "densenet121": (_apps.DenseNet121, "torch"),
    "densenet169": (_apps.DenseNet169, "torch"),
    "densenet201": (_apps.DenseNet201, "torch"),
    "resnet50": (_apps.ResNet50, "caffe"),
    "vgg16": (_apps.VGG16, "caffe"),
    "vgg19": (_apps.VGG19, "caffe"),
    "inception_v3": (_apps.InceptionV3, "tf"),
    "pneumonia_cnn": (pneumonia_cnn, "unit"),
    "xray_sex_cnn": (xray_sex_cnn, "unit"),
}
SMALL_CNNS = ("pneumonia_cnn", "xray_sex_cnn")  # no published imagenet weights


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
        if self.mode == "tf":
            return images * 2.0 - 1.0
        return images  # unit: small CNNs and TF Hub image models take [0, 1]

    def get_config(self) -> dict:
        return {**super().get_config(), "mode": self.mode}


def _is_url(handle: str) -> bool:
    return "://" in handle


def validate_backbone(backbone: str, weights: str) -> None:
    """The checks that need no model built, so a typo fails before the pipeline starts."""
    if backbone.startswith(HUB_PREFIX):
        handle = backbone[len(HUB_PREFIX):]
        if weights != "imagenet":
            raise ModelConfigError(f"a hub backbone carries its own weights: set weights to "
                                   f"'imagenet' (the handle's published weights), not {weights!r}")
        if not _is_url(handle) and not tf.saved_model.contains_saved_model(handle):
            raise ModelConfigError(f"hub backbone {handle}: not a URL and not a SavedModel "
                                   "directory")
        return
    if backbone not in BACKBONES:
        raise ModelConfigError(f"unknown backbone {backbone!r}; known: "
                               f"{', '.join(BACKBONES)}, or hub:<handle or directory>")
    if weights == "imagenet" and backbone in SMALL_CNNS:
        raise ModelConfigError(f"{backbone} has no imagenet weights: set weights to 'none' or "
                               "a local weights file")
    if weights not in ("imagenet", "none") and not os.path.isfile(weights):
        raise ModelConfigError(f"weights must be 'imagenet', 'none' or a file; {weights} "
                               "does not exist")


def _hub_backbone(handle: str) -> keras.layers.Layer:
    import tensorflow_hub as hub  # imported only when asked for: it is slow to load

    return hub.KerasLayer(handle, trainable=True, name="backbone")


def _backbone(name: str, weights: str, image_size: int) -> tuple[keras.layers.Layer, str]:
    validate_backbone(name, weights)
    if name.startswith(HUB_PREFIX):
        return _hub_backbone(name[len(HUB_PREFIX):]), "unit"
    constructor, scaling = BACKBONES[name]
    shape = (image_size, image_size, 3)
    try:
        if name in SMALL_CNNS:
            base = constructor(shape)
            if weights != "none":
                base.load_weights(weights)
        else:
            base = constructor(include_top=False, pooling="avg", input_shape=shape,
                               weights=None if weights == "none" else weights)
    except ValueError as err:
        if weights in ("imagenet", "none"):
            raise ModelConfigError(f"cannot build {name} at {image_size} px: {err}") from err
        raise ModelConfigError(f"weights {weights} do not fit backbone {name}: {err}") from err
    except Exception as err:
        if weights == "imagenet":
            raise ModelConfigError(
                f"could not fetch imagenet weights for {name} ({err}); on a machine without "
                "internet set weights to a local weights file or 'none'") from err
        raise
    base._name = "backbone"  # one name for every family: two-stage fine-tuning finds it
    return base, scaling


def build_model(backbone: str, weights: str, image_size: int, dropout: float, *,
                batchnorm_momentum: float | None = None, metadata_dim: int = 0,
                classes: int = 2) -> keras.Model:
    """An uncompiled classifier taking the transformed `image` (and, with a `metadata_dim`,
    the `metadata` vector): the positive class's probability [B, 1] for two classes, a
    softmax over `classes` [B, K] for more."""
    base, scaling = _backbone(backbone, weights, image_size)
    if batchnorm_momentum is not None:
        for layer in base.submodules:
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.momentum = batchnorm_momentum
    images = keras.Input(shape=(image_size, image_size, 3), name=IMAGE_INPUT)
    inputs = [images]
    x = base(InputScaling(scaling, name="input_scaling")(images))
    if metadata_dim:
        meta = keras.Input(shape=(metadata_dim,), name=METADATA_KEY)
        inputs.append(meta)
        meta_features = keras.layers.Dense(16, activation="relu", name="metadata_dense")(meta)
        x = keras.layers.Concatenate(name="image_and_metadata")([x, meta_features])
    x = keras.layers.Dropout(dropout)(x)
    # float32 output, so mixed precision on GPUs and TPUs still yields float32 scores
    probability = (keras.layers.Dense(1, activation="sigmoid", name="probability",
                                      dtype="float32")(x) if classes == 2 else
                   keras.layers.Dense(classes, activation="softmax", name="probabilities",
                                      dtype="float32")(x))
    name = backbone.replace(HUB_PREFIX, "hub_").replace("/", "_").replace(":", "_")
    return keras.Model(inputs, probability, name=f"medtfx_{name}"[:100])


def set_backbone_trainable(model: keras.Model, fraction: float) -> None:
    """Two-stage fine-tuning: 0 freezes the backbone (the head trains), 1 trains all of it,
    in between only its top `fraction` of layers, with batch norm kept frozen there so a
    small fine-tuning batch cannot wreck the pretrained statistics. Recompile afterwards."""
    base = model.get_layer("backbone")
    if not isinstance(base, keras.Model):  # a hub layer is one layer: all or nothing
        base.trainable = fraction > 0
        return
    base.trainable = fraction > 0
    if not 0 < fraction < 1:
        return
    first = int(len(base.layers) * (1 - fraction))
    for index, layer in enumerate(base.layers):
        layer.trainable = index >= first and not isinstance(
            layer, keras.layers.BatchNormalization)


def save_keras(model: keras.Model, path: str) -> None:
    """The model in Keras' native format, for warm starts; `path` may be on gs://."""
    with tempfile.TemporaryDirectory() as tmp:
        local = os.path.join(tmp, os.path.basename(path))
        model.save(local)
        tf.io.gfile.makedirs(os.path.dirname(path))
        tf.io.gfile.copy(local, path, overwrite=True)


def load_weights(model: keras.Model, path: str) -> None:
    """Weights of a model saved by save_keras into a freshly built model of the same kind."""
    if not tf.io.gfile.exists(path):
        raise ModelConfigError(f"{path}: no saved Keras model to start from")
    with tempfile.TemporaryDirectory() as tmp:
        local = os.path.join(tmp, os.path.basename(path))
        tf.io.gfile.copy(path, local)
        try:
            model.load_weights(local)
        except (ValueError, KeyError) as err:
            raise ModelConfigError(f"{path}: the previous model was built differently "
                                   f"(another backbone, size or metadata setting): {err}"
                                   ) from err
