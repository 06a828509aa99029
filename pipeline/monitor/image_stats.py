"""What an image looks like, without labels: the numbers drift is watched on.

Size, aspect and channels come from the encoded header; brightness, contrast and whether the
picture is grey from a small copy (PIL's draft mode decodes a JPEG at 1/8 scale), so a
window of 10,000 logged requests is measured in seconds. A new scanner, another clinic's
cropping or images of another kind move these before any label arrives.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

THUMBNAIL = 64  # pixels on the longer side of the copy measured
GREY_TOLERANCE = 8.0  # mean |R-G| + |G-B| below this is grey in an RGB file
CONTINUOUS = ("height", "width", "aspect", "brightness", "contrast")
SHARES = ("grayscale", "single_channel")


def image_features(encoded: bytes) -> dict[str, float] | None:
    """Header size, aspect (width / height), brightness (mean 0-255), contrast (standard
    deviation), whether the picture is grey and whether the file has one channel; None
    for bytes that are not an image PIL reads."""
    try:
        with Image.open(io.BytesIO(encoded)) as image:
            width, height = image.size
            single = image.mode in ("L", "I", "I;16", "I;16B", "F", "1", "LA")
            image.draft("RGB", (THUMBNAIL, THUMBNAIL))
            image.thumbnail((THUMBNAIL, THUMBNAIL))
            pixels = _eight_bit(image)
    except (OSError, ValueError, Image.DecompressionBombError):
        return None
    grey = single or float(np.abs(np.diff(pixels, axis=-1)).mean()) * 2 < GREY_TOLERANCE
    luminance = pixels.mean(axis=-1)
    return {"height": float(height), "width": float(width), "aspect": width / height,
            "brightness": float(luminance.mean()), "contrast": float(luminance.std()),
            "grayscale": float(grey), "single_channel": float(single)}


def _eight_bit(image: Image.Image) -> np.ndarray:
    """[H, W, 3] in 0-255, a 16-bit grey image scaled down by its own range."""
    if image.mode in ("I", "I;16", "I;16B", "F"):
        values = np.asarray(image, dtype=np.float64)
        top = values.max() or 1.0
        values = values / top * 255.0
        return np.repeat(values[..., None], 3, axis=-1)
    return np.asarray(image.convert("RGB"), dtype=np.float64)
