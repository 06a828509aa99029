"""Augmentation: reproducible for a seed, independent flips, per-task switches, the geometry
of the affine transform, and the orientations test-time augmentation averages over."""

from __future__ import annotations

import math

import numpy as np
import pytest
import tensorflow as tf

from modules.augment import (_ORIENTATION_MATRICES, AUGMENT_KEY, DRAWS, ORIENTATIONS,
                             AugmentedTraining, _affine_map, _colour, _resample, _reorient,
                             apply, augment_images, draw, orient)
from modules.settings import AugmentSettings
from modules.task import IMAGE_INPUT

OFF = dict(flip_left_right=False, flip_up_down=False, quarter_turns=False, rotation=0.0,
           shear=0.0, zoom=0.0, shift=0.0, brightness=0.0, contrast=0.0, saturation=0.0)
CHEST_XRAY = dict(flip_left_right=False, flip_up_down=False, quarter_turns=False)


def config(base: dict | None = None, **changes) -> AugmentSettings:
    """The settings as the Trainer passes them: the defaults, then `base`, then `changes`."""
    return AugmentSettings(**{**(base or {}), **changes})


def pattern(batch: int = 1, size: int = 16) -> tf.Tensor:
    """A batch of one image with no symmetry: a red bar top left, a green block bottom
    right, and blue rising left to right (every flip and turn of it differs)."""
    image = np.zeros((size, size, 3), np.float32)
    image[2:5, 1:9, 0] = 1.0
    image[10:14, 12:14, 1] = 0.8
    image[..., 2] = np.linspace(0.0, 0.5, size)[None, :]
    return tf.constant(np.repeat(image[None], batch, axis=0))


def ramps(batch: int, size: int = 16) -> tf.Tensor:
    """Images darker on the left and at the top, in [0.25, 0.75]."""
    ramp = np.linspace(0.0, 0.25, size, dtype=np.float32)
    image = 0.25 + ramp[None, :, None] + ramp[:, None, None] + np.zeros(3, np.float32)
    return tf.constant(np.repeat(image[None], batch, axis=0))


def seed(a: int, b: int = 0) -> tf.Tensor:
    return tf.constant([a, b], tf.int64)


def affine(images: tf.Tensor, orientation: tf.Tensor | None = None, **motion) -> tf.Tensor:
    """The affine resample of images moved by `motion` (rotation, shear, scale, shift)."""
    if orientation is None:
        orientation = tf.eye(2, batch_shape=[images.shape[0]])
    return _resample(images, *_affine_map(orientation=orientation, size=images.shape[2],
                                          **motion))


def counts(images: np.ndarray, candidates: list[np.ndarray]) -> list[int]:
    """How many of the images equal each candidate exactly."""
    return [sum(np.array_equal(image, c) for image in images) for c in candidates]


def test_a_seed_reproduces_a_batch_and_another_seed_changes_it():
    images = pattern(8)
    first = augment_images(images, seed(1, 5), config())
    np.testing.assert_array_equal(first, augment_images(images, seed(1, 5), config()))
    assert not np.allclose(first, augment_images(images, seed(1, 6), config()))


@pytest.mark.parametrize("settings", [dict(enabled=False), OFF], ids=["disabled", "all-off"])
def test_switched_off_is_the_identity(settings):
    images = pattern(4)
    np.testing.assert_array_equal(augment_images(images, seed(2), config(settings)), images)


def test_output_keeps_the_static_shape_and_the_range():
    augment = tf.function(
        lambda images: augment_images(images, seed(3), config(brightness=0.5, contrast=0.5,
                                                              saturation=0.5)),
        input_signature=[tf.TensorSpec([None, 16, 16, 3], tf.float32)])
    assert augment.get_concrete_function().output_shapes.as_list() == [None, 16, 16, 3]
    out = augment(pattern(8)).numpy()
    assert out.min() >= 0.0 and out.max() <= 1.0
    assert out.min() == 0.0 and out.max() == 1.0  # strong changes do reach the clip


def test_flips_are_drawn_independently():
    image = pattern().numpy()[0]
    out = augment_images(pattern(400), seed(4), config(OFF, flip_left_right=True,
                                                       flip_up_down=True)).numpy()
    found = counts(out, [image, np.flip(image, 1), np.flip(image, 0), np.flip(image, (0, 1))])
    assert sum(found) == 400 and all(60 < n < 140 for n in found), found  # a quarter each


def test_quarter_turns_alone_turn_but_never_mirror():
    image = pattern()
    out = augment_images(pattern(200), seed(5), config(OFF, quarter_turns=True)).numpy()
    found = counts(out, [orient(image, k).numpy()[0] for k in range(4)])
    assert sum(found) == 200 and all(25 < n < 75 for n in found), found


@pytest.mark.parametrize("settings", [dict(OFF, brightness=0.2), CHEST_XRAY],
                         ids=["brightness-only", "flips-and-turns-off"])
def test_chest_xray_setting_never_mirrors(settings):
    images = ramps(64)
    out = augment_images(images, seed(6), config(settings)).numpy()
    assert not np.allclose(out, images)
    left, right = out[:, :, :8].mean(axis=(1, 2, 3)), out[:, :, 8:].mean(axis=(1, 2, 3))
    top, bottom = out[:, :8].mean(axis=(1, 2, 3)), out[:, 8:].mean(axis=(1, 2, 3))
    assert np.all(left < right) and np.all(top < bottom)


def test_a_small_rotation_moves_pixels_but_keeps_the_centre():
    images = pattern(4, size=31)
    out = augment_images(images, seed(7), config(OFF, rotation=10.0)).numpy()
    assert np.abs(out - images).max() > 0.3
    np.testing.assert_allclose(out[:, 15, 15], images[:, 15, 15], atol=1e-5)


@pytest.mark.parametrize("settings", [dict(zoom=0.2), dict(shift=0.2), dict(shear=20.0)])
def test_zoom_shift_and_shear_change_the_image(settings):
    images = pattern(4)
    out = augment_images(images, seed(8), config(OFF, **settings)).numpy()
    assert all(np.abs(o - i).max() > 0.3 for o, i in zip(out, images.numpy()))


def test_affine_geometry_agrees_with_quarter_turns_and_whole_pixel_shifts():
    images = pattern(2)
    ones, zeros = tf.ones([2]), tf.zeros([2])
    turned = affine(images, rotation=ones * math.pi / 2, shear=zeros, scale=ones,
                     shift=tf.zeros([2, 2]))
    np.testing.assert_allclose(turned, orient(images, 1), atol=1e-5)
    shifted = affine(images, rotation=zeros, shear=zeros, scale=ones,
                      shift=tf.constant([[2.0, 1.0]] * 2)).numpy()  # 2 right, 1 down
    np.testing.assert_allclose(shifted[:, 1:, 2:], images[:, :-1, :-2], atol=1e-6)


@pytest.mark.parametrize("k", range(ORIENTATIONS))
def test_a_flip_or_turn_is_a_gather_alone_and_part_of_the_affine_resample_with_it(k):
    images = pattern(2)
    ones, zeros = tf.ones([2]), tf.zeros([2])
    matrices = tf.constant([_ORIENTATION_MATRICES[k]] * 2)
    np.testing.assert_array_equal(_reorient(images, matrices), orient(images, k))
    folded = affine(images, rotation=zeros, shear=zeros, scale=ones, shift=tf.zeros([2, 2]),
                     orientation=matrices)
    np.testing.assert_allclose(folded, orient(images, k), atol=1e-5)


def test_colour_changes_as_one_matrix_equal_them_in_turn():
    images = pattern(3) * 0.6 + 0.2
    brightness, contrast, saturation = (tf.constant(v) for v in (
        [0.1, -0.2, 0.0], [1.3, 0.7, 1.0], [0.5, 1.4, 1.0]))
    expected = images + brightness[:, None, None, None]
    mean = tf.reduce_mean(expected, axis=[1, 2], keepdims=True)
    expected = mean + (expected - mean) * contrast[:, None, None, None]
    grey = tf.image.rgb_to_grayscale(expected)
    expected = grey + (expected - grey) * saturation[:, None, None, None]
    np.testing.assert_allclose(_colour(images, brightness, contrast, saturation), expected,
                               atol=1e-5)
    np.testing.assert_allclose(_colour(images, brightness, None, None),
                               images + brightness[:, None, None, None], atol=1e-6)


@pytest.mark.parametrize("settings", [dict(zoom=1.0), dict(shear=90.0)])
def test_zoom_or_shear_that_cannot_be_inverted_is_refused(settings):
    with pytest.raises(ValueError, match="zoom .* shear"):
        augment_images(pattern(), seed(9), config(**settings))


def test_orientations_are_the_eight_distinct_flips_and_turns():
    image = pattern()
    variants = [orient(image, k).numpy() for k in range(ORIENTATIONS)]
    np.testing.assert_array_equal(variants[0], image)
    assert len({v.tobytes() for v in variants}) == ORIENTATIONS
    for k, variant in enumerate(variants):  # mirrored left-right first, then turned
        mirrored = np.flip(image, 2) if k >= 4 else image.numpy()
        np.testing.assert_array_equal(variant, np.rot90(mirrored, k % 4, axes=(1, 2)))
    np.testing.assert_array_equal(orient(orient(image, 1), 3), image)  # four quarter turns
    np.testing.assert_array_equal(orient(orient(image, 4), 4), image)  # mirrored twice
    np.testing.assert_array_equal(orient(orient(image, 1), 1), variants[2])
    np.testing.assert_array_equal(orient(orient(image, 4), 2), np.flip(image, 1))  # up-down
    with pytest.raises(ValueError):
        orient(image, ORIENTATIONS)


def test_works_in_a_tf_data_map_with_a_tensor_seed():
    cfg = config()
    dataset = tf.data.Dataset.from_tensors(pattern(4)).repeat(3).enumerate().map(
        lambda i, images: augment_images(images, tf.stack([tf.constant(9, tf.int64), i]), cfg))
    batches = list(dataset.as_numpy_iterator())
    assert len(batches) == 3 and not np.allclose(batches[0], batches[1])
    np.testing.assert_allclose(batches[2], augment_images(pattern(4), seed(9, 2), cfg),
                               atol=1e-6)  # the same draws as eagerly


def test_applying_the_draws_compiles_with_xla_so_it_runs_on_tpus():
    cfg = config(brightness=0.2, contrast=0.2, saturation=0.2)
    draws = draw(4, 16, seed(10), cfg)  # on the host, in the input pipeline
    compiled = tf.function(lambda images, d: apply(images, d, cfg), jit_compile=True)
    np.testing.assert_allclose(compiled(pattern(4), draws), apply(pattern(4), draws, cfg),
                               atol=1e-5)


def test_each_image_carries_its_own_draws_so_a_split_batch_changes_as_one():
    """Replicas and workers each apply the draws of their share of a global batch."""
    cfg, images = config(), pattern(6)
    draws = draw(6, 16, seed(11), cfg)
    whole = apply(images, draws, cfg)
    halves = tf.concat([apply(images[:3], draws[:3], cfg), apply(images[3:], draws[3:], cfg)],
                       axis=0)
    np.testing.assert_array_equal(whole, halves)
    assert draws.shape == (6, DRAWS)


def test_the_training_step_changes_the_images_and_evaluation_does_not():
    import tf_keras as keras

    image = keras.Input((16, 16, 3), name=IMAGE_INPUT)
    corner = keras.layers.Lambda(lambda x: x[:, 2, 1, :1])(image)  # in the red bar
    network = keras.Model(image, corner)
    model = AugmentedTraining(network, config(OFF, flip_left_right=True))
    model.compile(optimizer=keras.optimizers.SGD(0.0), loss="mse")
    images = pattern(1)
    mirrored = draw(1, 16, seed(0), config(OFF, flip_left_right=True))
    mirrored = tf.concat([tf.reshape(_ORIENTATION_MATRICES[4], [1, 4]), mirrored[:, 4:]], 1)
    features = {IMAGE_INPUT: images, AUGMENT_KEY: mirrored}
    trained = model.train_step((features, tf.zeros([1, 1])))
    assert float(trained["loss"]) == 0.0  # the network saw the mirrored image: no red there
    assert float(model(features, training=False)[0, 0]) == 1.0  # evaluation: the image as is
