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


def _one_hot_code(codes: tf.Tensor, size: int) -> tf.Tensor:
    """Codes 0..size-1 one-hot, with one more column for -1 and any code out of range (a
    release whose tables differ must not index past the vector)."""
    known = (codes >= 0) & (codes < size)
    return tf.one_hot(tf.where(known, codes, size), size + 1)


def encode_metadata(sex: tf.Tensor, age: tf.Tensor, site: tf.Tensor) -> tf.Tensor:
    """Sex, age and anatomic site codes [B] to the metadata vector [B, METADATA_DIM].

    Missing values (-1) get their own indicator rather than a made-up value, so the model
    can learn what "not recorded" means at a site that often omits it.
    """
    age_known = age >= 0
    age_scaled = tf.where(age_known, tf.cast(age, tf.float32) / 100.0, 0.0)
    return tf.concat([
        _one_hot_code(sex, len(F.SEXES)),
        tf.stack([age_scaled, 1.0 - tf.cast(age_known, tf.float32)], axis=1),
        _one_hot_code(site, len(F.SITES)),
    ], axis=1)


def preprocessing_fn(inputs: dict, custom_config: dict) -> dict:
    """tf.Transform entry point; `custom_config` carries the pipeline's image_size."""
    encoded = tf.reshape(inputs[F.IMAGE_KEY], [-1])
    sex, age, site = (tf.reshape(inputs[key], [-1]) for key in F.METADATA_RAW_KEYS)
    return {F.IMAGE_KEY: decode_images(encoded, int(custom_config["image_size"])),
            F.METADATA_KEY: encode_metadata(sex, age, site)}
