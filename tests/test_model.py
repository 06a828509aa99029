"""Backbones by name, each behind its own input scaling; weights errors a person can fix."""

from __future__ import annotations

import numpy as np
import pytest
import tf_keras as keras

from modules.model import BACKBONES, InputScaling, ModelConfigError, build_model


@pytest.mark.parametrize("backbone", sorted(BACKBONES))
def test_every_backbone_builds_small_without_weights(backbone):
    model = build_model(backbone, "none", 32, dropout=0.1)
    out = model.predict(np.random.default_rng(0).random((2, 32, 32, 3), np.float32), verbose=0)
    assert out.shape == (2, 1) and np.all((0 <= out) & (out <= 1))


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
    assert BACKBONES["efficientnet_b3"][1] == "raw255"  # Keras EfficientNets expect 0-255
    assert BACKBONES["densenet121"][1] == "torch"


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


def test_missing_weights_file_and_unknown_backbone():
    with pytest.raises(ModelConfigError, match="does not exist"):
        build_model("densenet121", "/no/such/weights.h5", 32, 0.1)
    with pytest.raises(ModelConfigError, match="unknown backbone 'resnet9'"):
        build_model("resnet9", "none", 32, 0.1)
