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
from modules.preprocessing import decode, decode_image, declared_size, within_limits
from modules.settings import ImageLimits
from modules.signatures import transform_examples, within_batch
from modules.task import TaskSpec
from tests.helpers import load_schema, run_transform, shard_records

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
    a non-square image of another size, a 16-bit grayscale PNG, a BMP and a GIF."""
    plain = shard_records(tiny_data, "train00-*.tfrec", limit=6)
    rng = np.random.default_rng(0)
    colour = Image.fromarray(rng.integers(0, 255, (50, 70, 3), dtype=np.uint8))
    deep = Image.fromarray(rng.integers(0, 65535, (60, 40), dtype=np.uint16))
    return plain + [with_image(plain[0], colour.convert("L"), "JPEG"),
                    with_image(plain[1], colour, "PNG"),
                    with_image(plain[2], colour.resize((90, 40)), "JPEG"),
                    with_image(plain[3], deep, "PNG"),
                    with_image(plain[4], colour.resize((40, 90)), "BMP"),
                    with_image(plain[5], colour, "GIF")]


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
    served = transform_examples(layer, tf.constant(records), TaskSpec(),
                                ImageLimits())[F.IMAGE_KEY].numpy()
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
        transform_examples(layer, tf.constant([example.SerializeToString()]), TaskSpec(),
                           ImageLimits())


def test_image_bytes_and_request_batch_have_bounds_that_name_themselves():
    small = encoded(Image.new("RGB", (8, 8)), "PNG")
    limits = ImageLimits(image_bytes=len(small) - 1)
    with pytest.raises(tf.errors.InvalidArgumentError, match="above limits.image_bytes"):
        tf.function(lambda e: within_limits(e, limits))(tf.constant(small))
    assert within_limits(tf.constant(small), ImageLimits()).numpy() == small
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=r"a request of 3 images, above limits.batch \(2\)"):
        within_batch(tf.constant([small] * 3), 2)


def png16(pixels: np.ndarray) -> bytes:
    """A 16-bit PNG, as radiology exports them, of uint16 [H, W] (grayscale) or [H, W, 3]."""
    return tf.io.encode_png(pixels if pixels.ndim == 3 else pixels[..., None]).numpy()


def test_a_16_bit_png_keeps_its_full_range_in_three_equal_channels():
    ramp = np.linspace(0, 65535, 16 * 64).astype(np.uint16).reshape(16, 64)
    data = png16(ramp)
    assert data[24] == 16  # the bit depth in the PNG header
    assert declared_size(tf.constant(data)).numpy().tolist() == [16, 64]
    image = decode(tf.constant(data), ImageLimits()).numpy()
    assert image.shape == (16, 64, 3)
    for channel in range(3):  # neither wrapped nor cut to its high byte
        np.testing.assert_allclose(image[..., channel], ramp / 65535, atol=1e-6)
    assert image.min() == 0.0 and image.max() == 1.0
    assert image[8, 0, 0] == pytest.approx(0.5, abs=1e-3)


def test_8_and_16_bit_pngs_of_one_picture_give_the_same_floats():
    picture = np.random.default_rng(1).integers(0, 256, (40, 30, 3), dtype=np.uint8)
    eight = decode_image(tf.constant(encoded(Image.fromarray(picture), "PNG")), SIZE).numpy()
    sixteen = decode_image(tf.constant(png16(picture.astype(np.uint16) * 257)), SIZE).numpy()
    np.testing.assert_allclose(eight, sixteen, atol=1e-6)


def banded(landscape: bool) -> bytes:
    """A CelebA-sized portrait (178 wide, 218 high) of a grey centre square between white
    bands 20 rows high; the landscape X-ray is the same picture on its side."""
    picture = np.full((218, 178, 3), 128, np.uint8)
    picture[:20] = picture[-20:] = 255
    return encoded(Image.fromarray(picture.transpose(1, 0, 2) if landscape else picture), "PNG")


def squared(resize: str, landscape: bool) -> np.ndarray:
    """The banded picture made square by `resize`, turned back upright."""
    image = decode_image(tf.constant(banded(landscape)), SIZE, resize).numpy()
    assert image.shape == (SIZE, SIZE, 3)
    return image.transpose(1, 0, 2) if landscape else image


@pytest.mark.parametrize("landscape", [False, True])
def test_stretch_squeezes_the_whole_picture_into_the_square(landscape):
    image = squared("stretch", landscape)
    assert image[0].min() == pytest.approx(1.0) and image[-1].min() == pytest.approx(1.0)
    assert image[SIZE // 2].max() == pytest.approx(128 / 255)


@pytest.mark.parametrize("landscape", [False, True])
def test_pad_keeps_the_aspect_between_zero_margins(landscape):
    image = squared("pad", landscape)
    content = image.max(axis=(0, 2)) > 0
    left, right = content.argmax(), content[::-1].argmax()
    assert left > 0 and right > 0 and content[left:SIZE - right].all()
    assert not image[:, :left].any() and not image[:, SIZE - right:].any()
    # TF rounds the fitted width down and the margins down: centred to within a pixel
    assert abs(content.sum() - SIZE * 178 / 218) < 1 and abs(left - right) <= 2
    assert image[0, left:SIZE - right].min() == pytest.approx(1.0)  # the whole height kept


@pytest.mark.parametrize("landscape", [False, True])
def test_crop_keeps_the_centre_square(landscape):
    np.testing.assert_allclose(squared("crop", landscape), 128 / 255, atol=1e-6)  # no bands


def test_an_unknown_resize_policy_names_the_allowed_ones():
    with pytest.raises(ValueError, match="resize must be one of stretch, pad, crop, not 'fit'"):
        decode_image(tf.constant(banded(False)), SIZE, "fit")


def test_the_transform_graph_needs_no_data_so_tfx_transform_reads_no_image():
    """TFX's Transform runs in place, reading no example, only when no input feeds an
    analyzer or an op with a side effect (a limit check inside the graph once made it read
    and decode every training image)."""
    from tensorflow_transform import impl_helper
    from tensorflow_transform.tf_metadata import schema_utils

    from modules.preprocessing import preprocessing_fn

    specs = impl_helper.get_type_specs_from_feature_specs(
        schema_utils.schema_as_feature_spec(load_schema()).feature_spec)
    config = {"image_size": SIZE, "task": TaskSpec().model_dump()}
    assert tft.get_analyze_input_columns(
        lambda inputs: preprocessing_fn(inputs, config), specs) == []
