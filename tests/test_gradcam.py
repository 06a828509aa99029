"""Grad-CAM (modules/gradcam.py): the `explain` signature of every backbone family answers a
heat map in [0, 1] at each image's own size with the score serving gives; serving_default's
graph is the same with or without it; the map follows what raises the score."""

from __future__ import annotations

import io
import os

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_transform as tft
import tf_keras as keras
from PIL import Image

from modules.gradcam import HEATMAP_KEY, HEIGHT_KEY, SCORE_KEY, WIDTH_KEY, to_image_size
from modules.model import build_model
from modules.settings import ImageLimits
from modules.signatures import EXPLAIN, make_signatures
from modules.task import TaskSpec
from tests.helpers import run_transform, shard_records
from tests.test_model import FAMILY_FIRSTS, size_for

TASK = TaskSpec()
LIMITS = ImageLimits()


@pytest.fixture(scope="module")
def transforms(tiny_data, tmp_path_factory) -> dict:
    """Transform graphs at 32 px and at InceptionV3's smallest input."""
    records = shard_records(tiny_data, "train00-*.tfrec", limit=8)
    out = {}
    for size in (32, size_for("inception_v3")):
        out[size] = str(tmp_path_factory.mktemp(f"transform{size}"))
        run_transform(records, size, out[size])
    return out


def jpeg(height: int, width: int, seed: int = 0) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 255, (height, width, 3), np.uint8)
    data = io.BytesIO()
    Image.fromarray(pixels).save(data, format="JPEG")
    return data.getvalue()


def signatures_of(model: keras.Model, transform_dir: str, tmp_path, task=TASK) -> dict:
    os.makedirs(tmp_path, exist_ok=True)
    return make_signatures(model, tft.TFTransformOutput(transform_dir), task,
                           str(tmp_path), tta=1, limits=LIMITS)


@pytest.mark.parametrize("backbone", [
    name if name in FAMILY_FIRSTS else pytest.param(name, marks=pytest.mark.slow)
    for name in sorted(FAMILY_FIRSTS)])
def test_every_backbone_family_explains_at_the_images_own_size(backbone, transforms, tmp_path):
    size = size_for(backbone)
    model = build_model(backbone, "none", size, dropout=0.1)
    signatures = signatures_of(model, transforms[size], tmp_path)
    images = tf.constant([jpeg(40, 56), jpeg(24, 20, seed=1)])
    answer = signatures[EXPLAIN](images)
    served = signatures["serving_image"](images)["probability"].numpy()[:, 0]
    heat = answer[HEATMAP_KEY].numpy()
    assert heat.shape == (2, 40, 56)
    assert answer[HEIGHT_KEY].numpy().tolist() == [40, 24]
    assert answer[WIDTH_KEY].numpy().tolist() == [56, 20]
    assert np.all((heat >= 0) & (heat <= 1)) and heat[1, 24:].max() == heat[1, :, 20:].max() == 0
    np.testing.assert_allclose(answer[SCORE_KEY].numpy(), served, rtol=1e-4, atol=1e-6)


def op_counts(signature) -> dict:
    """Every op of a loaded signature's graph and of the functions it calls, counted."""
    graph = signature.graph.as_graph_def()
    ops = [node.op for node in graph.node]
    ops += [node.op for function in graph.library.function for node in function.node_def]
    return {op: ops.count(op) for op in set(ops)}


def test_explain_is_saved_beside_serving_default_which_it_leaves_unchanged(transforms,
                                                                          tmp_path):
    """The same model saved with and without `explain`: serving_default's graph holds the
    same ops; the saved `explain` takes the metadata serving_image takes."""
    counts, images = [], tf.constant([jpeg(48, 40)])
    metadata = {key: tf.constant([1], tf.int64) for key in TASK.model_features}
    for keep in (True, False):
        keras.utils.set_random_seed(0)
        model = build_model("pneumonia_cnn", "none", 32, 0.1, metadata_dim=TASK.metadata_dim)
        signatures = signatures_of(model, transforms[32], tmp_path)
        if not keep:
            del signatures[EXPLAIN]
        path = str(tmp_path / f"model-{keep}")
        model.save(path, save_format="tf", signatures=signatures, save_traces=False,
                   include_optimizer=False)
        loaded = tf.saved_model.load(path)
        assert (EXPLAIN in loaded.signatures) == keep
        counts.append(op_counts(loaded.signatures["serving_default"]))
        if keep:
            answer = loaded.signatures[EXPLAIN](image=images, **metadata)
            served = loaded.signatures["serving_image"](image=images, **metadata)
            assert answer[HEATMAP_KEY].shape == (1, 48, 40)
            np.testing.assert_allclose(answer[SCORE_KEY].numpy(),
                                       served["probability"].numpy()[:, 0], rtol=1e-4)
    assert counts[0] == counts[1] and not [op for op in counts[0] if "Grad" in op]


def test_the_map_lights_up_the_part_of_the_image_that_raises_the_score(transforms, tmp_path):
    """A network built to score the brightness of its input's red channel: the heat of a
    dark picture with one bright patch falls on the patch, in place, at the image's size."""
    model = build_model("xray_sex_cnn", "none", 32, dropout=0.0)
    for layer in model.get_layer("backbone").layers:
        if isinstance(layer, keras.layers.Conv2D):
            kernel = np.zeros(layer.kernel.shape, np.float32)
            kernel[1, 1, 0, 0] = 1.0  # passes channel 0 on, unchanged
            layer.set_weights([kernel, np.zeros(layer.bias.shape, np.float32)])
    final = model.get_layer("probability")
    final.set_weights([np.eye(final.kernel.shape[0], 1, dtype=np.float32), np.array([-0.5])])
    picture = np.zeros((32, 48, 3), np.uint8)
    picture[0:8, 36:48] = 255  # top right
    data = io.BytesIO()
    Image.fromarray(picture).save(data, format="PNG")
    heat = signatures_of(model, transforms[32], tmp_path)[EXPLAIN](
        tf.constant([data.getvalue()]))[HEATMAP_KEY].numpy()[0]
    assert heat.shape == (32, 48)
    assert np.unravel_index(heat.argmax(), heat.shape)[1] >= 36
    patch_share = heat[0:8, 36:48].sum() / heat.sum()
    assert patch_share > 0.5  # the patch is 1/16 of the picture


def test_the_padding_is_cut_off_and_a_centre_crop_put_back_in_place():
    top = to_image_size(tf.constant([[1.0, 1.0], [0.0, 0.0]]), tf.constant(16, tf.int64),
                        tf.constant(32, tf.int64), 32, "pad").numpy()
    assert top.shape == (16, 32)  # rows 8-23 of the model's square held the picture
    assert top[:4].mean() > 0.5 > top[-4:].mean() > 0
    cam = tf.ones([2, 2])
    heat = to_image_size(cam, tf.constant(20, tf.int64), tf.constant(40, tf.int64), 32,
                         "crop").numpy()
    assert heat.shape == (20, 40)
    assert heat[:, 10:30].min() == 1 and heat[:, :10].max() == heat[:, 30:].max() == 0
    stretched = to_image_size(cam, tf.constant(20, tf.int64), tf.constant(40, tf.int64), 32,
                              "stretch").numpy()
    assert stretched.shape == (20, 40) and stretched.min() == 1


@pytest.mark.parametrize("urgent", [["mc", "mm"], []])
def test_k_classes_explain_the_urgent_classes_sum_or_the_top_class(urgent, transforms,
                                                                   tmp_path):
    task = TaskSpec.model_validate({**TASK.model_dump(), "label": {
        **TASK.label.model_dump(), "classes": ["normal", "bc", "bm", "mc", "mm"],
        "urgent": urgent}})
    model = build_model("pneumonia_cnn", "none", 32, 0.1, classes=5)
    signatures = signatures_of(model, transforms[32], tmp_path, task)
    images = tf.constant([jpeg(32, 32, seed) for seed in range(3)])
    probabilities = signatures["serving_image"](images)["probabilities"].numpy()
    served = probabilities[:, 3:].sum(axis=1) if urgent else probabilities.max(axis=1)
    np.testing.assert_allclose(signatures[EXPLAIN](images)[SCORE_KEY].numpy(), served,
                               rtol=1e-4)


def test_an_ensemble_explains_the_mean_of_its_members(transforms, tmp_path):
    """Two copies of one network explain as the network; with another member, the score
    is the served mean."""
    def member(name: str, seed: int) -> keras.Model:
        keras.utils.set_random_seed(seed)
        net = build_model("pneumonia_cnn", "none", 32, 0.1)
        net._name = name
        return net

    def ensemble(members: list) -> keras.Model:  # as components/ensemble.py builds it
        inputs = {"image": keras.Input(shape=(32, 32, 3), name="image")}
        average = keras.layers.Average(name="probability")([net(inputs) for net in members])
        return keras.Model(inputs, average)

    images = tf.constant([jpeg(40, 40, seed) for seed in range(2)])
    single = signatures_of(member("single", 1), transforms[32], tmp_path / "single")
    twins = signatures_of(ensemble([member("member_0", 1), member("member_1", 1)]),
                          transforms[32], tmp_path / "twins")
    alone, both = single[EXPLAIN](images), twins[EXPLAIN](images)
    np.testing.assert_allclose(both[HEATMAP_KEY], alone[HEATMAP_KEY], atol=1e-5)
    np.testing.assert_allclose(both[SCORE_KEY], alone[SCORE_KEY], rtol=1e-5)
    mixed = signatures_of(ensemble([member("member_0", 1), member("member_1", 2)]),
                          transforms[32], tmp_path / "mixed")
    np.testing.assert_allclose(mixed[EXPLAIN](images)[SCORE_KEY],
                               mixed["serving_image"](images)["probability"][:, 0], rtol=1e-4)


def test_under_mixed_precision_the_map_is_float32_and_the_score_served(transforms, tmp_path):
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = build_model("xray_sex_cnn", "none", 32, 0.1)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    signatures = signatures_of(model, transforms[32], tmp_path)
    images = tf.constant([jpeg(32, 32, seed) for seed in range(2)])
    answer = signatures[EXPLAIN](images)
    assert answer[HEATMAP_KEY].dtype == tf.float32 and answer[HEATMAP_KEY].shape == (2, 32, 32)
    np.testing.assert_allclose(answer[SCORE_KEY], signatures["serving_image"](images)[
        "probability"][:, 0], rtol=1e-3)
