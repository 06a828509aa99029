"""Draws a synthetic dermoscopy image: a lesion on skin whose look rises monotonically with
each of its four latent attributes, so the image carries exactly their evidence."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image


def render_lesion(attributes: tuple[float, float, float, float], seed: int, size: int,
                  grayscale: bool = False) -> bytes:
    """A dermoscopy-like JPEG whose look rises monotonically with each attribute."""
    rng = np.random.default_rng(seed)
    irregular, variegated, asymmetric, diameter = (1 / (1 + np.exp(-0.9 * a)) for a in attributes)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    cx, cy = size / 2 + rng.normal(0, size * 0.04, 2)
    dx, dy = xx - cx, yy - cy
    r = np.hypot(dx, dy)
    theta = np.arctan2(dy, dx)

    harmonics = np.arange(2, 10)
    amps = rng.normal(0, 1, len(harmonics)) / np.sqrt(harmonics)
    phases = rng.uniform(0, 2 * np.pi, len(harmonics))
    wobble = np.tensordot(amps, np.cos(harmonics[:, None, None] * theta + phases[:, None, None]),
                          axes=1)
    bulge_at, stretch_at = rng.uniform(0, 2 * np.pi, 2)
    border = (1 + 0.35 * irregular ** 2 * wobble
              + 0.45 * asymmetric * np.maximum(np.cos(theta - bulge_at), 0) ** 2
              + 0.05 * rng.normal() * np.cos(2 * (theta - stretch_at)))
    edge = size * (0.12 + 0.18 * diameter) * border
    softness = size * rng.uniform(0.004, 0.015)
    mask = 1 / (1 + np.exp(-(edge - r) / softness))

    skin = np.array([0.86, 0.68, 0.58]) * rng.uniform(0.75, 1.05) + rng.normal(0, 0.02, 3)
    base = np.array([0.47, 0.31, 0.21]) * rng.uniform(0.6, 1.1)
    centre_dark = 1 - 0.25 * rng.uniform() * np.exp(-(r / (edge + 1e-6)) ** 2 * 2)
    lesion = base[None, None, :] * centre_dark[..., None]
    blotch_colours = np.array([[0.12, 0.08, 0.07], [0.36, 0.42, 0.52], [0.62, 0.26, 0.22]])
    for colour in blotch_colours:
        field = _smooth_field(rng, size)
        weight = (0.85 * variegated * field ** 2)[..., None]
        lesion = lesion * (1 - weight) + colour * weight

    light = 1 + 0.08 * ((xx - size / 2) * rng.normal() + (yy - size / 2) * rng.normal()) / size
    picture = (skin * (1 - mask[..., None]) + lesion * mask[..., None]) * light[..., None]
    picture += rng.normal(0, 0.015, picture.shape)
    pixels = (np.clip(picture, 0, 1) * 255).astype(np.uint8)
    image = Image.fromarray(pixels, "RGB")
    if grayscale:
        image = image.convert("L")
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=int(rng.integers(85, 96)))
    return out.getvalue()


def _smooth_field(rng: np.random.Generator, size: int) -> np.ndarray:
    coarse = Image.fromarray(rng.uniform(0, 1, (5, 5)).astype(np.float32), "F")
    return np.asarray(coarse.resize((size, size), Image.BICUBIC)).clip(0, 1)
