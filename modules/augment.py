"""Random changes to training images, in the Trainer's input_fn only.

Lesions have no up or left, so every flip and quarter turn of one is as real as the original;
chest X-rays have a left and a right, hence a switch per transform (AugmentSettings).
Augmentation never enters the Transform graph: that graph is also the serving graph, so
serving never sees it. Serving's test-time augmentation uses `orient` alone.
"""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf

from modules.settings import AugmentSettings

ORIENTATIONS = 8  # 4 quarter turns, each mirrored or not

# Axes reversed after the transpose of an odd number of quarter turns, by k % 4.
_TURN_AXES = ((), (1,), (1, 2), (2,))
# One seed for each random part, so switching a part on or off leaves the others' draws.
_PARTS = ("flip_left_right", "flip_up_down", "quarter_turns", "rotation", "shear", "zoom",
          "shift", "brightness", "contrast", "saturation")
# The orientations a switch applies, each on a fair coin of its own per image: a mirror
# each, and one and two quarter turns (together 0 to 3, uniform).
_ORIENTATION_STEPS = {"flip_left_right": (4,), "flip_up_down": (6,), "quarter_turns": (1, 2)}


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


def augment_images(images: tf.Tensor, seed: tf.Tensor, cfg: AugmentSettings) -> tf.Tensor:
    """A random change of each image of a float32 batch [B, H, W, 3] of square images in
    [0, 1], per `cfg`: flips and quarter turns, one affine transform, then brightness,
    contrast and saturation, clipped to [0, 1].

    Each stage is one pass over the pixels (at 512 px a pass over the float batch is what
    costs): the orientation is a pixel gather, or folded into the affine resample when one
    is drawn; the colour changes are one matrix and offset per image.

    `seed` is a stateless seed [2]: the same seed gives the same batch. The static shape is
    kept.
    """
    if not cfg.enabled:
        return images
    seeds = dict(zip(_PARTS, tf.unstack(
        tf.random.experimental.stateless_split(seed, len(_PARTS)))))
    batch = tf.shape(images)[0]

    def draw(part: str, magnitude: float, centre: float = 0.0,
             shape: tuple[int, ...] = ()) -> tf.Tensor:
        """[B, *shape] uniform in centre +- magnitude."""
        return tf.random.stateless_uniform([batch, *shape], seeds[part],
                                           centre - magnitude, centre + magnitude)

    orientation = None  # [B, 2, 2]: each image's flips and turns, composed
    for switch, steps in _ORIENTATION_STEPS.items():
        if getattr(cfg, switch):
            coins = draw(switch, 1.0, shape=(len(steps),)) < 0
            for i, k in enumerate(steps):
                step = tf.where(coins[:, i, None, None], _ORIENTATION_MATRICES[k], _EYE)
                orientation = step if orientation is None else step @ orientation
    if any(getattr(cfg, part) for part in ("rotation", "shear", "zoom", "shift")):
        images = _affine(images, rotation=draw("rotation", math.radians(cfg.rotation)),
                         shear=draw("shear", math.radians(cfg.shear)),
                         scale=draw("zoom", cfg.zoom, 1.0),
                         shift=draw("shift", cfg.shift * images.shape[2], shape=(2,)),
                         orientation=orientation)
    elif orientation is not None:
        images = _reorient(images, orientation)
    if cfg.brightness or cfg.contrast or cfg.saturation:
        images = _colour(
            images, brightness=draw("brightness", cfg.brightness) if cfg.brightness else None,
            contrast=draw("contrast", cfg.contrast, 1.0) if cfg.contrast else None,
            saturation=draw("saturation", cfg.saturation, 1.0) if cfg.saturation else None)
    return tf.clip_by_value(images, 0.0, 1.0)


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



def _affine(images: tf.Tensor, rotation: tf.Tensor, shear: tf.Tensor, scale: tf.Tensor,
            shift: tf.Tensor, orientation: tf.Tensor | None = None) -> tf.Tensor:
    """Each image moved about its centre: flipped and turned (`orientation` [B, 2, 2]),
    sheared and rotated (radians, [B]), scaled ([B]) and shifted ((x, y) pixels, [B, 2]);
    one bilinear resample, reflecting at the borders."""
    ones, zeros = tf.ones_like(rotation), tf.zeros_like(rotation)
    cos, sin = tf.cos(rotation), tf.sin(rotation)
    # Pixel coordinates are (x right, y down): a positive angle turns counter-clockwise.
    motion = scale[:, None, None] * (_matrix(cos, sin, -sin, cos)
                                     @ _matrix(ones, tf.tan(shear), zeros, ones))
    if orientation is not None:
        motion = motion @ orientation
    back = tf.linalg.inv(motion)  # the op maps each output pixel to the input it samples
    centre = (images.shape[2] - 1) / 2
    offset = centre - tf.linalg.matvec(back, centre + shift)
    transforms = tf.concat([back[:, 0], offset[:, :1], back[:, 1], offset[:, 1:],
                            tf.zeros_like(shift)], axis=1)
    return tf.raw_ops.ImageProjectiveTransformV3(
        images=images, transforms=transforms, output_shape=images.shape[1:3],
        fill_value=0.0, interpolation="BILINEAR", fill_mode="REFLECT")


def _matrix(a: tf.Tensor, b: tf.Tensor, c: tf.Tensor, d: tf.Tensor) -> tf.Tensor:
    """Per image 2x2 matrices [[a, b], [c, d]] from entries [B]."""
    return tf.reshape(tf.stack([a, b, c, d], axis=1), [-1, 2, 2])
