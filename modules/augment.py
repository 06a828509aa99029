"""Random changes to training images: drawn in the Trainer's input pipeline, applied in the
training step.

Lesions have no up or left, so every flip and quarter turn of one is as real as the original;
chest X-rays have a left and a right, hence a switch per transform (AugmentSettings).
Augmentation never enters the Transform graph: that graph is also the serving graph, so
serving never sees it. Serving's test-time augmentation uses `orient` alone.

The input pipeline only draws each image's change, a few numbers (`draw`, under
AUGMENT_KEY); the training step applies them to the pixels (`apply`, in AugmentedTraining),
on the accelerator when there is one. Applied on the host, a 512 px affine resample and
colour change cost 2.3x the read and decode of the image itself, the stage a GPU or TPU
waits on. Every operation of `apply` is one XLA compiles (gathers, not TF's projective
transform op, which has no XLA kernel), so it runs on TPUs too. Each image carries its own
draws, so a batch split between replicas or workers is changed exactly as one batch.
"""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf
import tf_keras as keras

from modules.settings import AugmentSettings
from modules.task import IMAGE_INPUT

ORIENTATIONS = 8  # 4 quarter turns, each mirrored or not
AUGMENT_KEY = "augment"  # the training features' draws, [B, DRAWS] float32

# Axes reversed after the transpose of an odd number of quarter turns, by k % 4.
_TURN_AXES = ((), (1,), (1, 2), (2,))
# One seed for each random part, so switching a part on or off leaves the others' draws.
_PARTS = ("flip_left_right", "flip_up_down", "quarter_turns", "rotation", "shear", "zoom",
          "shift", "brightness", "contrast", "saturation")
# The orientations a switch applies, each on a fair coin of its own per image: a mirror
# each, and one and two quarter turns (together 0 to 3, uniform).
_ORIENTATION_STEPS = {"flip_left_right": (4,), "flip_up_down": (6,), "quarter_turns": (1, 2)}
_AFFINE = ("rotation", "shear", "zoom", "shift")
_COLOUR = ("brightness", "contrast", "saturation")
# One image's draws: its orientation (2 x 2), the affine resample's map (2 x 2, then the
# offset), brightness, contrast and saturation.
DRAWS = 13


def orient(images: tf.Tensor, k: int) -> tf.Tensor:
    """The k-th of the 8 orientations of a batch of square images [B, H, W, C]: mirrored
    left-right when k >= 4, then turned k % 4 times a quarter counter-clockwise (as
    np.rot90); 0 is the identity. At most one transpose and one reverse."""
    if not 0 <= k < ORIENTATIONS:
        raise ValueError(f"orientation {k} is not in 0..{ORIENTATIONS - 1}")
    turns = k % 4
    axes = set(_TURN_AXES[turns])
    if k >= 4:  # the mirror comes first: a transpose carries it from columns to rows
        axes ^= {1 if turns % 2 else 2}
    if turns % 2:
        images = tf.transpose(images, [0, 2, 1, 3])
    return tf.reverse(images, sorted(axes)) if axes else images


def draw(batch: tf.Tensor, size: int, seed: tf.Tensor, augment: AugmentSettings) -> tf.Tensor:
    """The random change of each of `batch` square images of side `size`, per `augment`, as
    [batch, DRAWS] numbers for `apply`. `seed` is a stateless seed [2]: the same seed gives
    the same draws."""
    seeds = dict(zip(_PARTS, tf.unstack(
        tf.random.experimental.stateless_split(seed, len(_PARTS)))))

    def uniform(part: str, magnitude: float, centre: float = 0.0,
                shape: tuple[int, ...] = ()) -> tf.Tensor:
        """[B, *shape] uniform in centre +- magnitude."""
        return tf.random.stateless_uniform([batch, *shape], seeds[part],
                                           centre - magnitude, centre + magnitude)

    orientation = tf.eye(2, batch_shape=[batch])  # each image's flips and turns, composed
    for switch, steps in _ORIENTATION_STEPS.items():
        if getattr(augment, switch):
            coins = uniform(switch, 1.0, shape=(len(steps),)) < 0
            for i, k in enumerate(steps):
                step = tf.where(coins[:, i, None, None], _ORIENTATION_MATRICES[k], _EYE)
                orientation = step @ orientation
    back, offset = _affine_map(rotation=uniform("rotation", math.radians(augment.rotation)),
                               shear=uniform("shear", math.radians(augment.shear)),
                               scale=uniform("zoom", augment.zoom, 1.0),
                               shift=uniform("shift", augment.shift * size, shape=(2,)),
                               orientation=orientation, size=size)
    colour = [uniform("brightness", augment.brightness), uniform("contrast", augment.contrast, 1.0),
              uniform("saturation", augment.saturation, 1.0)]
    return tf.concat([tf.reshape(orientation, [-1, 4]), tf.reshape(back, [-1, 4]), offset,
                      tf.stack(colour, axis=1)], axis=1)


def apply(images: tf.Tensor, draws: tf.Tensor, augment: AugmentSettings) -> tf.Tensor:
    """`images`, a float32 batch [B, H, W, 3] of square images in [0, 1], changed by their
    `draws` [B, DRAWS] per `augment`: flips and quarter turns, one affine transform, then
    brightness, contrast and saturation, clipped to [0, 1].

    Each stage is one pass over the pixels (at 512 px a pass over the float batch is what
    costs): the orientation is a pixel gather, or folded into the affine resample when one
    is drawn; the colour changes are one matrix and offset per image. The static shape is
    kept."""
    if not augment.enabled:
        return images
    if any(getattr(augment, part) for part in _AFFINE):
        images = _resample(images, tf.reshape(draws[:, 4:8], [-1, 2, 2]), draws[:, 8:10])
    elif any(getattr(augment, switch) for switch in _ORIENTATION_STEPS):
        images = _reorient(images, tf.reshape(draws[:, :4], [-1, 2, 2]))
    if any(getattr(augment, part) for part in _COLOUR):
        brightness, contrast, saturation = tf.unstack(draws[:, 10:], axis=1)
        images = _colour(images, brightness=brightness if augment.brightness else None,
                         contrast=contrast if augment.contrast else None,
                         saturation=saturation if augment.saturation else None)
    return tf.clip_by_value(images, 0.0, 1.0)


def augment_images(images: tf.Tensor, seed: tf.Tensor, augment: AugmentSettings) -> tf.Tensor:
    """A random change of each image of a batch [B, H, W, 3] of square images, drawn from
    the stateless `seed` [2] and applied at once."""
    if not augment.enabled:
        return images
    return apply(images, draw(tf.shape(images)[0], images.shape[2], seed, augment), augment)


class AugmentedTraining(keras.Model):
    """`network` trained on images changed by the draws its training batches carry
    (AUGMENT_KEY): `apply` runs inside each training step, on the replica's own images.
    Evaluation and prediction call the network as it is; only the network is exported."""

    def __init__(self, network: keras.Model, augment: AugmentSettings, **kwargs):
        super().__init__(name=f"augmented_{network.name}", **kwargs)
        self.network, self.augment = network, augment

    def call(self, inputs: dict, training=None):
        return self.network({k: v for k, v in inputs.items() if k != AUGMENT_KEY},
                            training=training)

    def train_step(self, data):
        features, target, weight = keras.utils.unpack_x_y_sample_weight(data)
        features = dict(features)
        draws = features.pop(AUGMENT_KEY)
        features[IMAGE_INPUT] = apply(features[IMAGE_INPUT], draws, self.augment)
        return super().train_step(keras.utils.pack_x_y_sample_weight(features, target, weight))


# Each orientation as the matrix that moves pixel coordinates (x right, y down) about the
# image centre: mirrored left-right for k >= 4, then turned k % 4 quarters, as `orient`.
_MIRROR = np.array([[-1.0, 0.0], [0.0, 1.0]], np.float32)
_TURN = np.array([[0.0, 1.0], [-1.0, 0.0]], np.float32)
_EYE = np.eye(2, dtype=np.float32)
_GREY = np.array([0.2989, 0.5870, 0.1140], np.float32)  # tf.image.rgb_to_grayscale's
_ORIENTATION_MATRICES = {k: np.linalg.matrix_power(_TURN, k % 4) @ (_MIRROR if k >= 4 else _EYE)
                         for k in range(ORIENTATIONS)}


def _centred_grid(size: int) -> tf.Tensor:
    """(x, y) of every pixel of a size x size image, row by row, about its centre [HW, 2]."""
    centre = (size - 1) / 2
    ys, xs = tf.meshgrid(tf.range(size, dtype=tf.float32), tf.range(size, dtype=tf.float32),
                         indexing="ij")
    return tf.stack([tf.reshape(xs, [-1]), tf.reshape(ys, [-1])], axis=1) - centre


def _reorient(images: tf.Tensor, orientation: tf.Tensor) -> tf.Tensor:
    """Each image flipped and turned by its matrix [B, 2, 2], exactly: one gather of the
    source pixel of every output pixel (the inverse of a flip or turn is its transpose)."""
    size = images.shape[2]
    grid = _centred_grid(size)
    source = tf.einsum("bji,pj->bpi", orientation, grid) + (size - 1) / 2  # O^T p, [B, HW, 2]
    index = tf.cast(tf.round(source[..., 1] * size + source[..., 0]), tf.int32)
    flat = tf.reshape(images, [-1, size * size, images.shape[3]])
    return tf.reshape(tf.gather(flat, index, batch_dims=1), [-1, *images.shape[1:]])


def _colour(images: tf.Tensor, brightness: tf.Tensor | None, contrast: tf.Tensor | None,
            saturation: tf.Tensor | None) -> tf.Tensor:
    """Brightness (added), contrast (about each channel's mean, as tf.image.adjust_contrast)
    and saturation (a blend with the image's grey, tf.image.rgb_to_grayscale), each [B] or
    None, applied in that order; all linear, so together one 3 x 3 matrix and offset per
    image."""
    batch = tf.shape(images)[0]
    offset = (tf.zeros([batch, 3]) if brightness is None
              else tf.repeat(brightness[:, None], 3, axis=1))
    if contrast is not None:  # the mean after brightness is the mean before, plus it
        offset += (1.0 - contrast)[:, None] * tf.reduce_mean(images, axis=[1, 2])
    matrix = tf.eye(3, batch_shape=[batch])
    if saturation is not None:
        s = saturation[:, None, None]
        matrix = s * matrix + (1.0 - s) * _GREY[None, :]
    offset = tf.linalg.matvec(matrix, offset)
    if contrast is not None:
        matrix *= contrast[:, None, None]
    return tf.einsum("bhwe,bde->bhwd", images, matrix) + offset[:, None, None, :]


def _affine_map(rotation: tf.Tensor, shear: tf.Tensor, scale: tf.Tensor, shift: tf.Tensor,
                orientation: tf.Tensor, size: int) -> tuple[tf.Tensor, tf.Tensor]:
    """The map [B, 2, 2] and offset [B, 2] that send each output pixel (x right, y down) to
    the input point it samples, for images moved about their centre: flipped and turned
    (`orientation` [B, 2, 2]), sheared and rotated (radians, [B]), scaled ([B]) and
    shifted ((x, y) pixels, [B, 2])."""
    ones, zeros = tf.ones_like(rotation), tf.zeros_like(rotation)
    cos, sin = tf.cos(rotation), tf.sin(rotation)
    # Pixel coordinates are (x right, y down): a positive angle turns counter-clockwise.
    motion = scale[:, None, None] * (_matrix(cos, sin, -sin, cos)
                                     @ _matrix(ones, tf.tan(shear), zeros, ones)) @ orientation
    back = tf.linalg.inv(motion)
    centre = (size - 1) / 2
    return back, centre - tf.linalg.matvec(back, centre + shift)


def _resample(images: tf.Tensor, back: tf.Tensor, offset: tf.Tensor) -> tf.Tensor:
    """Each output pixel p of each square image set to its input at back @ p + offset:
    bilinear, reflecting about the border pixels' centres. Four gathers, so XLA compiles it
    (TF's ImageProjectiveTransformV3 has no XLA kernel)."""
    size, channels = images.shape[2], images.shape[3]
    last = float(size - 1)
    source = tf.einsum("bij,pj->bpi", back, _centred_grid(size) + last / 2) + offset[:, None]
    source = last - tf.abs(tf.math.floormod(source, 2 * last) - last)  # into [0, last]
    low = tf.floor(source)
    weight = source - low
    low = tf.cast(low, tf.int32)
    high = tf.minimum(low + 1, size - 1)
    flat = tf.reshape(images, [-1, size * size, channels])

    def at(x: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
        return tf.gather(flat, y * size + x, batch_dims=1)

    wx, wy = weight[..., :1], weight[..., 1:]
    top = at(low[..., 0], low[..., 1]) * (1 - wx) + at(high[..., 0], low[..., 1]) * wx
    bottom = at(low[..., 0], high[..., 1]) * (1 - wx) + at(high[..., 0], high[..., 1]) * wx
    return tf.reshape(top * (1 - wy) + bottom * wy, [-1, size, size, channels])


def _matrix(a: tf.Tensor, b: tf.Tensor, c: tf.Tensor, d: tf.Tensor) -> tf.Tensor:
    """Per image 2x2 matrices [[a, b], [c, d]] from entries [B]."""
    return tf.reshape(tf.stack([a, b, c, d], axis=1), [-1, 2, 2])
