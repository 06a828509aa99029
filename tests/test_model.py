"""Backbones by name, each behind its own input scaling; weights errors a person can fix."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from modules.model import (
    BACKBONES,
    InputScaling,
    ModelConfigError,
    build_model,
    load_weights,
    save_keras,
    set_backbone_trainable,
    validate_backbone,
)
from modules.task import IMAGE_INPUT, METADATA_KEY, TaskSpec


def size_for(backbone: str) -> int:
    return 75 if backbone == "inception_v3" else 32  # InceptionV3's smallest input


# The first of each family builds in the fast tests; its larger siblings (several seconds
# each) only in the full suite.
FAMILY_FIRSTS = {"efficientnet_b0", "efficientnet_v2_b0", "densenet121", "resnet50", "vgg16",
                 "inception_v3", "pneumonia_cnn", "xray_sex_cnn"}


@pytest.mark.parametrize("backbone", [
    name if name in FAMILY_FIRSTS else pytest.param(name, marks=pytest.mark.slow)
    for name in sorted(BACKBONES)])
def test_every_backbone_builds_small_without_weights(backbone):
    size = size_for(backbone)
    model = build_model(backbone, "none", size, dropout=0.1)
    out = model.predict(np.random.default_rng(0).random((2, size, size, 3), np.float32),
                        verbose=0)
    assert out.shape == (2, 1) and np.all((0 <= out) & (out <= 1))
    assert model.get_layer("backbone")  # two-stage fine-tuning finds it by name


def hub_model_dir(path) -> str:
    """A tiny image feature-vector SavedModel in TF Hub's reusable layout."""
    module = tf.train.Checkpoint()
    module.w = tf.Variable(tf.random.stateless_normal([3, 8], [1, 2]))
    module.variables = [module.w]
    module.trainable_variables = [module.w]
    module.regularization_losses = []
    module.__call__ = tf.function(
        lambda images, training=False: tf.nn.relu(tf.reduce_mean(images, [1, 2]) @ module.w),
        input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32),
                         tf.TensorSpec([], tf.bool)])
    tf.saved_model.save(module, str(path))
    return str(path)


def test_a_hub_backbone_from_a_local_savedmodel_fine_tunes_and_round_trips(tmp_path):
    backbone = "hub:" + hub_model_dir(tmp_path / "hub")
    model = build_model(backbone, "imagenet", 32, 0.1)
    hub_weight = model.get_layer("backbone").trainable_weights[0]
    before = hub_weight.numpy().copy()
    model.compile(optimizer=keras.optimizers.SGD(0.5), loss="binary_crossentropy")
    images = np.random.default_rng(1).random((8, 32, 32, 3), np.float32)
    model.fit(images, np.array([0, 1] * 4, np.float32), epochs=1, verbose=0)
    assert not np.allclose(hub_weight.numpy(), before)  # the hub weights trained
    save_keras(model, str(tmp_path / "keras" / "model.keras"))
    again = build_model(backbone, "imagenet", 32, 0.1)
    load_weights(again, str(tmp_path / "keras" / "model.keras"))
    np.testing.assert_allclose(again.predict(images, verbose=0),
                               model.predict(images, verbose=0), atol=1e-6)


@pytest.mark.parametrize("backbone, metadata", [("efficientnet_b0", 0),
                                                ("pneumonia_cnn", TaskSpec().metadata_dim)])
def test_native_keras_files_round_trip_for_warm_starts(backbone, metadata, tmp_path):
    model = build_model(backbone, "none", 32, 0.1, metadata_dim=metadata)
    path = str(tmp_path / "model.keras")
    save_keras(model, path)
    again = build_model(backbone, "none", 32, 0.1, metadata_dim=metadata)
    load_weights(again, path)
    for a, b in zip(model.get_weights(), again.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_warm_start_from_another_architecture_is_refused(tmp_path):
    path = str(tmp_path / "model.keras")
    save_keras(build_model("xray_sex_cnn", "none", 32, 0.1), path)
    with pytest.raises(ModelConfigError, match="built differently"):
        load_weights(build_model("pneumonia_cnn", "none", 32, 0.1), path)


def test_the_metadata_branch_takes_sex_age_and_site():
    width = TaskSpec().metadata_dim
    model = build_model("xray_sex_cnn", "none", 32, 0.1, metadata_dim=width)
    assert model.input_names == [IMAGE_INPUT, METADATA_KEY]
    images = np.full((2, 32, 32, 3), 0.5, np.float32)
    metadata = np.zeros((2, width), np.float32)
    metadata[1, :] = 1.0
    out = model({IMAGE_INPUT: images, METADATA_KEY: metadata}).numpy()
    assert out[0, 0] != out[1, 0]  # same image, different patients, different scores


def test_two_stage_fine_tuning_freezes_and_unfreezes_the_backbone():
    model = build_model("densenet121", "none", 32, 0.1)
    base = model.get_layer("backbone")
    set_backbone_trainable(model, 0.0)
    assert {w.name.split("/")[0] for w in model.trainable_weights} == {"probability"}
    set_backbone_trainable(model, 0.5)
    trainable = [layer for layer in base.layers if layer.trainable_weights]
    assert trainable and all(base.layers.index(l) >= len(base.layers) // 2 for l in trainable)
    assert not any(isinstance(l, keras.layers.BatchNormalization) for l in trainable)
    set_backbone_trainable(model, 1.0)
    assert len(model.trainable_weights) > len(trainable) + 2


@pytest.mark.parametrize("mode, pixel, expected", [
    ("raw255", [0.5, 0.5, 1.0], [127.5, 127.5, 255.0]),
    ("torch", [0.485, 0.456, 0.406], [0.0, 0.0, 0.0]),
    ("caffe", [0.0, 0.0, 1.0], [255.0 - 103.939, -116.779, -123.68]),  # RGB in, BGR out
    ("tf", [0.0, 0.5, 1.0], [-1.0, 0.0, 1.0]),
])
def test_input_scaling_maps_0_1_to_each_backbones_range(mode, pixel, expected):
    out = InputScaling(mode)(np.array([[[pixel]]], np.float32)).numpy()
    np.testing.assert_allclose(out[0, 0, 0], expected, atol=1e-4)


def test_backbones_get_their_own_scaling():
    expected = {"efficientnet_b3": "raw255", "efficientnet_v2_s": "raw255",  # 0-255 in
                "densenet121": "torch", "resnet50": "caffe", "vgg16": "caffe", "vgg19": "caffe",
                "inception_v3": "tf", "pneumonia_cnn": "unit", "xray_sex_cnn": "unit"}
    assert {name: BACKBONES[name][1] for name in expected} == expected


def test_batchnorm_momentum_reaches_every_backbone_layer():
    model = build_model("densenet121", "none", 32, 0.1, batchnorm_momentum=0.9)
    momenta = {layer.momentum for layer in model.submodules
               if isinstance(layer, keras.layers.BatchNormalization)}
    assert momenta == {0.9}


def test_weights_file_of_another_backbone_is_refused(tmp_path):
    path = str(tmp_path / "densenet.h5")
    keras.applications.DenseNet121(include_top=False, weights=None,
                                   input_shape=(32, 32, 3)).save_weights(path)
    with pytest.raises(ModelConfigError, match="do not fit backbone efficientnet_b0"):
        build_model("efficientnet_b0", path, 32, 0.1)
    assert build_model("densenet121", path, 32, 0.1)  # the matching backbone takes it


@pytest.mark.parametrize("backbone, weights, message", [
    ("pneumonia_cnn", "imagenet", "has no imagenet weights"),
    ("hub:/no/such/model", "imagenet", "not a URL and not a SavedModel"),
    ("hub:https://tfhub.dev/x/y/1", "none", "carries its own weights"),
    ("efficientnet_b9", "none", "unknown backbone"),
])
def test_settings_that_cannot_build_fail_before_anything_is_built(backbone, weights, message):
    with pytest.raises(ModelConfigError, match=message):
        validate_backbone(backbone, weights)


def test_a_small_cnn_refuses_weights_of_another_network(tmp_path):
    path = str(tmp_path / "other.h5")
    build_model("xray_sex_cnn", "none", 32, 0.1).get_layer("backbone").save_weights(path)
    with pytest.raises(ModelConfigError, match="do not fit backbone pneumonia_cnn"):
        build_model("pneumonia_cnn", path, 32, 0.1)


def test_missing_weights_file_and_unknown_backbone():
    with pytest.raises(ModelConfigError, match="does not exist"):
        build_model("densenet121", "/no/such/weights.h5", 32, 0.1)
    with pytest.raises(ModelConfigError, match="unknown backbone 'resnet9'"):
        build_model("resnet9", "none", 32, 0.1)
