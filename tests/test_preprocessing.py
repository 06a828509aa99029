"""The Transform graph under tf.Transform's Beam implementation, and the same graph on the
serving path: the model sees the same pixels in training and in serving."""

from __future__ import annotations

import io

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_transform as tft
from PIL import Image

from modules import features as F
from modules.preprocessing import declared_size, within_limits
from modules.settings import ImageLimits
from modules.signatures import transform_examples, within_batch
from modules.task import TaskSpec
from tests.helpers import run_transform, shard_records

SIZE = 32


def with_image(record: bytes, image: Image.Image, fmt: str) -> bytes:
    example = tf.train.Example.FromString(record)
    encoded = io.BytesIO()
    image.save(encoded, format=fmt)
    example.features.feature[F.IMAGE_KEY].bytes_list.value[:] = [encoded.getvalue()]
    return example.SerializeToString()


@pytest.fixture(scope="module")
def records(tiny_data) -> list[bytes]:
    """Synthetic records plus the awkward cases of real releases: a grayscale JPEG, a PNG,
    and a non-square image of another size."""
    plain = shard_records(tiny_data, "train00-*.tfrec", limit=6)
    rng = np.random.default_rng(0)
    colour = Image.fromarray(rng.integers(0, 255, (50, 70, 3), dtype=np.uint8))
    return plain + [with_image(plain[0], colour.convert("L"), "JPEG"),
                    with_image(plain[1], colour, "PNG"),
                    with_image(plain[2], colour.resize((90, 40)), "JPEG")]


@pytest.fixture(scope="module")
def beam_output(records, tmp_path_factory) -> tuple[list[np.ndarray], str]:
    """Images transformed by tft_beam, and the transform graph it wrote."""
    out = str(tmp_path_factory.mktemp("transform"))
    return list(run_transform(records, SIZE, out)), out


def test_every_image_becomes_a_float_rgb_square_in_0_1(beam_output, records):
    images, _ = beam_output
    assert len(images) == len(records)
    for image in images:
        assert image.shape == (SIZE, SIZE, 3)
        assert 0.0 <= image.min() and image.max() <= 1.0
    gray = [i for i in images if np.allclose(i[..., 0], i[..., 1])]
    assert gray, "the grayscale JPEG comes out with three equal channels"


def test_serving_path_gives_the_same_pixels_as_tf_transform(beam_output, records):
    images, transform_dir = beam_output
    layer = tft.TFTransformOutput(transform_dir).transform_features_layer()
    served = transform_examples(layer, tf.constant(records), TaskSpec())[F.IMAGE_KEY].numpy()
    assert served.dtype == np.float32 and served.shape == (len(records), SIZE, SIZE, 3)
    # Beam does not keep record order: pair the images by content.
    order = lambda batch: sorted(batch, key=lambda i: float(i.sum()))  # noqa: E731
    for ours, theirs in zip(order(list(served)), order(images)):
        np.testing.assert_allclose(ours, theirs, atol=1e-6)


def encoded(image: Image.Image, fmt: str) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt)
    return out.getvalue()


def bomb() -> bytes:
    """A real PNG of 12000 x 12000 blank pixels: about 40 KB that decode to 432 MB."""
    return encoded(Image.new("1", (12000, 12000)), "PNG")


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "GIF", "BMP"])
def test_the_declared_size_is_read_from_the_header_of_each_format(fmt):
    image = Image.fromarray(np.zeros((50, 70, 3), np.uint8))
    assert declared_size(tf.constant(encoded(image, fmt))).numpy().tolist() == [50, 70]
    assert declared_size(tf.constant(b"not an image")).numpy().tolist() == [0, 0]


def test_a_decompression_bomb_is_refused_at_serving_before_it_is_decoded(beam_output,
                                                                           records):
    _, transform_dir = beam_output
    layer = tft.TFTransformOutput(transform_dir).transform_features_layer()
    example = tf.train.Example.FromString(records[0])
    example.features.feature[F.IMAGE_KEY].bytes_list.value[:] = [bomb()]
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=r"declares 12000 x 12000 pixels, above limits.image_pixels"):
        transform_examples(layer, tf.constant([example.SerializeToString()]), TaskSpec())


def test_image_bytes_and_request_batch_have_bounds_that_name_themselves():
    small = encoded(Image.new("RGB", (8, 8)), "PNG")
    limits = ImageLimits(image_bytes=len(small) - 1)
    with pytest.raises(tf.errors.InvalidArgumentError, match="above limits.image_bytes"):
        tf.function(lambda e: within_limits(e, limits))(tf.constant(small))
    assert within_limits(tf.constant(small), ImageLimits()).numpy() == small
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=r"a request of 3 images, above limits.batch \(2\)"):
        within_batch(tf.constant([small] * 3), 2)
