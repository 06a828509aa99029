"""The Transform graph: where an image is decoded, resized and normalised; and the image
limits every entry point checks before it hands untrusted bytes to that graph.

The pipeline runs Transform with materialize=False: it saves this graph and nothing else.
The Trainer's input pipeline applies the graph to the encoded images as it reads them, and
the exported model applies it at serving, so training and serving share one decode. Writing
transformed images instead would store float32 pixels (48 KB an image at 64 px, 3 MB at
512 px) for every example of every run.

The graph holds no check with a side effect: tf.Transform counts the inputs of such an op
as data to analyse, so a limit checked inside the graph made TFX's Transform read and decode
every training image for nothing. The limits are checked by `transform` instead, the one way
the Trainer and the serving signatures run the graph.
"""

from __future__ import annotations

import tensorflow as tf

from modules.settings import ImageLimits
from modules.task import IMAGE_INPUT, METADATA_KEY, Categorical, Numeric, TaskSpec

_HEADER = 32  # bytes read for the declared size; shorter images are padded with zeros


def declared_size(encoded: tf.Tensor) -> tf.Tensor:
    """[height, width] (int64) that one encoded image declares in its header, read without
    decoding it: JPEG, PNG, GIF and BMP; [0, 0] for anything else, which the decoder then
    refuses."""
    padded = tf.strings.substr(encoded + b"\0" * _HEADER, 0, _HEADER)
    head = tf.cast(tf.io.decode_raw(padded, tf.uint8), tf.int64)

    def number(start: int, length: int, big_endian: bool) -> tf.Tensor:
        shifts = [8 * (length - 1 - i if big_endian else i) for i in range(length)]
        return tf.add_n([tf.bitwise.left_shift(head[start + i], shift)
                         for i, shift in enumerate(shifts)])

    def starts(magic: bytes) -> tf.Tensor:
        return tf.strings.substr(padded, 0, len(magic)) == magic

    bmp_height = number(22, 4, False)  # signed: negative for top-down rows
    bmp_height = tf.where(bmp_height >= 2**31, 2**32 - bmp_height, bmp_height)
    return tf.case([
        (tf.io.is_jpeg(encoded),
         lambda: tf.cast(tf.image.extract_jpeg_shape(encoded)[:2], tf.int64)),
        (starts(b"\x89PNG"), lambda: tf.stack([number(20, 4, True), number(16, 4, True)])),
        (starts(b"GIF8"), lambda: tf.stack([number(8, 2, False), number(6, 2, False)])),
        (starts(b"BM"), lambda: tf.stack([bmp_height, number(18, 4, False)])),
    ], default=lambda: tf.zeros([2], tf.int64))


def within_limits(encoded: tf.Tensor, limits: ImageLimits) -> tf.Tensor:
    """`encoded`, once its size and declared pixels are checked against `limits`; an image
    beyond them fails with a message naming the limit, before any pixel is decoded."""
    size = tf.cast(tf.strings.length(encoded), tf.int64)
    height, width = tf.unstack(declared_size(encoded))
    checks = [
        tf.debugging.Assert(size <= limits.image_bytes, [tf.strings.format(
            "image of {} bytes, above limits.image_bytes ({})", (size, limits.image_bytes))]),
        tf.debugging.Assert(height * width <= limits.image_pixels, [tf.strings.format(
            "image declares {} x {} pixels, above limits.image_pixels ({})",
            (width, height, limits.image_pixels))]),
    ]
    with tf.control_dependencies(checks):
        return tf.identity(encoded)


def each_image(fn, encoded: tf.Tensor, signature: tf.TensorSpec) -> tf.Tensor:
    """`fn` of every image of a batch [B]: a loop, or one call for a batch of one (a serving
    request of one image, the common one, skips the loop's start-up: 0.1 ms of a 64 px
    model's 0.7 ms)."""
    return tf.cond(tf.size(encoded) == 1, lambda: tf.expand_dims(fn(encoded[0]), 0),
                   lambda: tf.map_fn(fn, encoded, fn_output_signature=signature))


def images_within_limits(encoded: tf.Tensor, limits: ImageLimits) -> tf.Tensor:
    """A batch [B] of encoded images, each checked by `within_limits`."""
    return each_image(lambda image: within_limits(image, limits), encoded,
                      tf.TensorSpec([], tf.string))


def decode_pixels(encoded: tf.Tensor) -> tf.Tensor:
    """One JPEG/PNG/BMP/GIF, colour or grayscale, to float32 RGB [H, W, 3] in [0, 1].
    Decoding straight to float keeps a 16-bit PNG (as radiology exports them) at its full
    range over 65535; to uint8 the decoder would drop its low byte."""
    return tf.io.decode_image(encoded, channels=3, dtype=tf.float32, expand_animations=False)


def decode(encoded: tf.Tensor, limits: ImageLimits) -> tf.Tensor:
    """`decode_pixels` of one image within `limits`, as the input checks try each image."""
    return decode_pixels(within_limits(encoded, limits))


def _stretch(image: tf.Tensor, size: int, antialias: bool) -> tf.Tensor:
    return tf.image.resize(image, [size, size], method="bilinear", antialias=antialias)


def _pad(image: tf.Tensor, size: int, antialias: bool) -> tf.Tensor:
    return tf.image.resize_with_pad(image, size, size, method="bilinear", antialias=antialias)


def _crop(image: tf.Tensor, size: int, antialias: bool) -> tf.Tensor:
    side = tf.reduce_min(tf.shape(image)[:2])
    return _stretch(tf.image.resize_with_crop_or_pad(image, side, side), size, antialias)


# How a non-square image becomes a square: stretched, fitted with zeros around it (the
# aspect kept), or cropped to its centre square.
_RESIZERS = {"stretch": _stretch, "pad": _pad, "crop": _crop}


def decode_image(encoded: tf.Tensor, size: int, resize: str = "stretch") -> tf.Tensor:
    """One encoded image of any size to float32 [size, size, 3] in [0, 1], made square by
    the `resize` policy.

    An image already square at `size` is left as decoded (every policy is the identity
    there). The antialiasing filter, which shrinking needs, costs 13x a plain bilinear
    resample at 512 px, and enlarging gives the same pixels without it (to 2e-7)."""
    if resize not in _RESIZERS:
        raise ValueError(f"resize must be one of {', '.join(_RESIZERS)}, not {resize!r}")
    image = decode_pixels(encoded)
    shape, resizer = tf.shape(image)[:2], _RESIZERS[resize]
    image = tf.case([(tf.reduce_all(shape == size), lambda: image),
                     (tf.reduce_any(shape > size), lambda: resizer(image, size, True))],
                    default=lambda: resizer(image, size, False))
    return tf.ensure_shape(tf.clip_by_value(image, 0.0, 1.0), [size, size, 3])


def decode_images(encoded: tf.Tensor, size: int, resize: str = "stretch") -> tf.Tensor:
    """A batch [B] of encoded images to [B, size, size, 3]."""
    return each_image(lambda e: decode_image(e, size, resize), encoded,
                      tf.TensorSpec([size, size, 3], tf.float32))


def _one_hot_code(codes: tf.Tensor, size: int) -> tf.Tensor:
    """Codes 0..size-1 one-hot, with one more column for missing and any code out of range
    (a release whose tables differ must not index past the vector)."""
    known = (codes >= 0) & (codes < size)
    return tf.one_hot(tf.where(known, codes, size), size + 1)


def _scaled(values: tf.Tensor, feature: Numeric, missing: int) -> tf.Tensor:
    """A number scaled to [0, 1] over its range, and a missing flag: [B, 2]."""
    known = values != missing
    scaled = (tf.cast(values, tf.float32) - feature.min) / (feature.max - feature.min)
    scaled = tf.where(known, tf.clip_by_value(scaled, 0.0, 1.0), 0.0)
    return tf.stack([scaled, 1.0 - tf.cast(known, tf.float32)], axis=1)


def encode_metadata(raw: dict[str, tf.Tensor], task: TaskSpec) -> tf.Tensor:
    """The task's model features [B] each to one vector [B, task.metadata_dim].

    Missing values get their own indicator rather than a made-up value, so the model can
    learn what "not recorded" means at a site that often omits it.
    """
    parts = []
    for key in task.model_features:
        feature, values = task.metadata[key], tf.reshape(raw[key], [-1])
        parts.append(_one_hot_code(values, len(feature.values))
                     if isinstance(feature, Categorical) else
                     _scaled(values, feature, task.missing))
    return tf.concat(parts, axis=1)


def preprocessing_fn(inputs: dict, custom_config: dict) -> dict:
    """tf.Transform entry point; `custom_config` carries the task and the pipeline's
    image_size."""
    task = TaskSpec.model_validate(custom_config["task"])
    encoded = tf.reshape(inputs[task.image_key], [-1])
    outputs = {IMAGE_INPUT: decode_images(encoded, int(custom_config["image_size"]),
                                          task.resize)}
    if task.model_features:
        outputs[METADATA_KEY] = encode_metadata(inputs, task)
    return outputs


def transform(tft_layer, raw: dict[str, tf.Tensor], task: TaskSpec,
              limits: ImageLimits) -> dict[str, tf.Tensor]:
    """Raw features [B] through the Transform graph (`tft_layer`), their images checked
    against `limits` first: how the Trainer and every serving signature run the graph."""
    checked = images_within_limits(tf.reshape(raw[task.image_key], [-1]), limits)
    return tft_layer({**raw, task.image_key: checked})
