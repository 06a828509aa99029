"""The Transform graph: where an image is decoded, resized and normalised.

The pipeline runs Transform with materialize=False: it saves this graph and nothing else.
The Trainer's input pipeline applies the graph to the encoded images as it reads them, and
the exported model applies it at serving, so training and serving share one decode. Writing
transformed images instead would store float32 pixels (48 KB an image at 64 px, 3 MB at
512 px) for every example of every run.
"""

from __future__ import annotations

import tensorflow as tf

from modules import features as F


def decode(encoded: tf.Tensor) -> tf.Tensor:
    """One JPEG/PNG/BMP/GIF, colour or grayscale, to uint8 RGB [H, W, 3]."""
    return tf.io.decode_image(encoded, channels=3, expand_animations=False)


def decode_image(encoded: tf.Tensor, size: int) -> tf.Tensor:
    """One encoded image of any size to float32 [size, size, 3] in [0, 1]."""
    image = tf.image.resize(decode(encoded), [size, size], method="bilinear", antialias=True)
    return tf.clip_by_value(image / 255.0, 0.0, 1.0)


def decode_images(encoded: tf.Tensor, size: int) -> tf.Tensor:
    """A batch [B] of encoded images to [B, size, size, 3]."""
    return tf.map_fn(lambda e: decode_image(e, size), encoded,
                     fn_output_signature=tf.TensorSpec([size, size, 3], tf.float32))


def preprocessing_fn(inputs: dict, custom_config: dict) -> dict:
    """tf.Transform entry point; `custom_config` carries the pipeline's image_size."""
    encoded = tf.reshape(inputs[F.IMAGE_KEY], [-1])
    return {F.IMAGE_KEY: decode_images(encoded, int(custom_config["image_size"]))}
