"""Training-time augmentation, applied in the Trainer's input pipeline only.

Each flip is drawn on its own for each image (the source notebook seeded both flips alike,
so an image was flipped both ways or neither), and a random multiple of 90 degrees is added;
lesions have no up or left, so all eight orientations are equally real.
"""

from __future__ import annotations

import tensorflow as tf


def random_orientation(images: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """One of the 8 flips/rotations of each square image in a batch [B, H, W, C].

    `seed` is a stateless seed (shape [2]); the three draws use distinct derived seeds.
    """
    seeds = tf.random.experimental.stateless_split(seed, 3)
    batch = tf.shape(images)[0]
    flip_lr = tf.random.stateless_uniform([batch], seeds[0]) < 0.5
    flip_ud = tf.random.stateless_uniform([batch], seeds[1]) < 0.5
    quarter_turns = tf.random.stateless_uniform([batch], seeds[2], maxval=4, dtype=tf.int32)
    images = tf.where(flip_lr[:, None, None, None], tf.reverse(images, [2]), images)
    images = tf.where(flip_ud[:, None, None, None], tf.reverse(images, [1]), images)
    rotated = tf.stack([tf.image.rot90(images, k) for k in range(4)])  # [4, B, H, W, C]
    return tf.gather_nd(rotated, tf.stack([quarter_turns, tf.range(batch)], axis=1))
