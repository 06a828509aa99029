"""Random changes to training images, in the Trainer's input_fn only.

Lesions have no up or left, so every flip and quarter turn of one is as real as the original;
chest X-rays have a left and a right, hence a switch per transform (AugmentSettings).
Augmentation never enters the Transform graph: that graph is also the serving graph, so
serving never sees it. Serving's test-time augmentation uses `orient` alone.
"""

from __future__ import annotations

import math

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
_COLOUR = (1, 1, 1)  # a draw per image, broadcast over its pixels


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
    [0, 1], per `cfg`: flips and quarter turns, one affine
    transform, then brightness, contrast and saturation, clipped to [0, 1].

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

    for switch, steps in _ORIENTATION_STEPS.items():
        if getattr(cfg, switch):
            coins = draw(switch, 1.0, shape=(len(steps),)) < 0
            for i, k in enumerate(steps):
                images = tf.where(coins[:, i, None, None, None], orient(images, k), images)
    if any(getattr(cfg, part) for part in ("rotation", "shear", "zoom", "shift")):
        images = _affine(images, rotation=draw("rotation", math.radians(cfg.rotation)),
                         shear=draw("shear", math.radians(cfg.shear)),
                         scale=draw("zoom", cfg.zoom, 1.0),
                         shift=draw("shift", cfg.shift * images.shape[2], shape=(2,)))
    if cfg.brightness:
        images += draw("brightness", cfg.brightness, shape=_COLOUR)
    if cfg.contrast:  # about each channel's mean, as tf.image.adjust_contrast
        mean = tf.reduce_mean(images, axis=[1, 2], keepdims=True)
        images = mean + (images - mean) * draw("contrast", cfg.contrast, 1.0, _COLOUR)
    if cfg.saturation:
        grey = tf.image.rgb_to_grayscale(images)
        images = grey + (images - grey) * draw("saturation", cfg.saturation, 1.0, _COLOUR)
    return tf.clip_by_value(images, 0.0, 1.0)


def _affine(images: tf.Tensor, rotation: tf.Tensor, shear: tf.Tensor, scale: tf.Tensor,
            shift: tf.Tensor) -> tf.Tensor:
    """Each image moved about its centre: sheared and rotated (radians, [B]), scaled ([B])
    and shifted ((x, y) pixels, [B, 2]); bilinear, reflecting at the borders."""
    ones, zeros = tf.ones_like(rotation), tf.zeros_like(rotation)
    cos, sin = tf.cos(rotation), tf.sin(rotation)
    # Pixel coordinates are (x right, y down): a positive angle turns counter-clockwise.
    motion = scale[:, None, None] * (_matrix(cos, sin, -sin, cos)
                                     @ _matrix(ones, tf.tan(shear), zeros, ones))
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
