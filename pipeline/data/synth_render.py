"""Draws the synthetic pictures: a dermoscopy lesion whose look rises monotonically with each
of its four latent attributes, and the radiographs and faces of the other layouts, each with a
label signal large enough for a small CNN to learn at 32-64 px. Coordinates and sizes are
fractions of the picture's height, so a picture looks the same at every size."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image


def render_lesion(attributes: tuple[float, float, float, float], seed: int, size: int,
                  grayscale: bool = False) -> bytes:
    """A dermoscopy-like JPEG whose look rises monotonically with each attribute."""
    rng = np.random.default_rng(seed)
    variegated = _looks(attributes)[1]
    xx, yy, r, edge, mask = _outline(rng, attributes, size)

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
    return encode(picture, "JPEG", quality=int(rng.integers(85, 96)),
                  channels=1 if grayscale else 3)


def lesion_mask(attributes: tuple[float, float, float, float], seed: int, size: int
                ) -> np.ndarray:
    """Where render_lesion draws the lesion of these attributes and seed: [size, size] in
    [0, 1] (its soft edge included), for checking that a heat map points at the lesion."""
    return _outline(np.random.default_rng(seed), attributes, size)[-1]


def _looks(attributes: tuple[float, float, float, float]) -> list[float]:
    """Irregularity, variegation, asymmetry and diameter in (0, 1)."""
    return [1 / (1 + np.exp(-0.9 * a)) for a in attributes]


def _outline(rng: np.random.Generator, attributes: tuple[float, float, float, float],
             size: int) -> tuple:
    """The lesion's place and border, the first draws of its seed: the pixel grid, each
    pixel's distance from the centre, the border's distance there, and the soft mask."""
    irregular, _, asymmetric, diameter = _looks(attributes)
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
    return xx, yy, r, edge, 1 / (1 + np.exp(-(edge - r) / softness))


def encode(picture: np.ndarray, fmt: str, quality: int = 90, channels: int | None = None,
           bits: int = 8) -> bytes:
    """A picture with values in [0, 1], (H, W) or (H, W, 3), as JPEG or PNG bytes: converted
    to `channels` when given, 16-bit grayscale when `bits` is 16 (PNG only)."""
    dtype, top = (np.uint16, 65535) if bits == 16 else (np.uint8, 255)
    image = Image.fromarray((np.clip(picture, 0, 1) * top).astype(dtype))
    if channels is not None:
        image = image.convert("L" if channels == 1 else "RGB")
    out = io.BytesIO()
    image.save(out, format=fmt, **({"quality": quality} if fmt == "JPEG" else {}))
    return out.getvalue()


def _smooth_field(rng: np.random.Generator, height: int, width: int | None = None
                  ) -> np.ndarray:
    coarse = Image.fromarray(rng.uniform(0, 1, (5, 5)).astype(np.float32), "F")
    return np.asarray(coarse.resize((width or height, height), Image.BICUBIC)).clip(0, 1)


def render_chest(seed: int, height: int, width: int, opacities: int = 0,
                 breast_shadow: float = 0.0) -> np.ndarray:
    """A frontal chest radiograph, values in [0, 1]: two dark lungs beside a bright midline and
    a side marker. Pneumonia shows as `opacities` soft bright patches inside the lungs; breast
    shadows (of strength `breast_shadow`) as bright lobes over both lower lungs."""
    rng = np.random.default_rng(seed)
    yy, xx = _grid(height, width)
    midline = width / height / 2
    picture = 0.5 + 0.25 * (_smooth_field(rng, height, width) - 0.5)
    picture += 0.15 * np.exp(-((xx - midline) / 0.05) ** 2)
    lungs = [(0.5 + rng.normal(0, 0.02), midline + side * (0.22 + rng.normal(0, 0.01)))
             for side in (-1, 1)]
    for centre in lungs:
        picture -= 0.3 * _ellipse(yy, xx, centre, (0.32, 0.17))
    for _ in range(opacities):
        cy, cx = lungs[int(rng.integers(2))]
        centre = (cy + rng.uniform(-0.18, 0.18), cx + rng.uniform(-0.07, 0.07))
        picture += rng.uniform(0.2, 0.35) * _spots(yy, xx, [centre], rng.uniform(0.06, 0.1))
    for cy, cx in lungs:
        shadow = (0.76, cx + np.sign(cx - midline) * 0.05)
        picture += breast_shadow * _spots(yy, xx, [shadow], 0.11)
    side = 0.06 if rng.random() < 0.5 else width / height - 0.1
    picture += 0.5 * ((np.abs(yy - 0.08) < 0.03) & (np.abs(xx - side - 0.02) < 0.02))
    return np.clip(picture + rng.normal(0, 0.03, picture.shape), 0, 1)


def render_mammogram(seed: int, size: int, finding: int) -> np.ndarray:
    """A mammogram, values in [0, 1]: a breast against the dark on one side, holding the
    finding of its class (0 none, 1 scattered specks, 2 a round mass, 3 a tight cluster of
    specks, 4 a mass with spicules), each a shape of its own."""
    rng = np.random.default_rng(seed)
    yy, xx = _grid(size, size)
    left = rng.random() < 0.5
    depth = xx if left else 1 - xx
    breast = _ellipse(yy, depth, (0.5, 0.0), (0.45, 0.6))
    picture = 0.03 + breast * (0.3 + 0.2 * _smooth_field(rng, size))
    if finding:
        cy, depth_at = rng.uniform(0.3, 0.7), rng.uniform(0.15, 0.4)
        centre = np.array([cy, depth_at if left else 1 - depth_at])
        picture += breast * _finding(rng, yy, xx, centre, finding, 0.7 / size)
    return np.clip(picture + rng.normal(0, 0.02, picture.shape), 0, 1)


def _finding(rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray, centre: np.ndarray,
             finding: int, pixel: float) -> np.ndarray:
    speck = max(0.015, pixel)
    if finding in (1, 3):
        count, spread = (rng.integers(4, 8), 0.1) if finding == 1 else (rng.integers(10, 17),
                                                                       0.025)
        return 0.6 * _spots(yy, xx, centre + rng.normal(0, spread, (int(count), 2)), speck)
    if finding == 2:
        return 0.45 * _spots(yy, xx, [centre], 0.07)
    angles = rng.uniform(0, 2 * np.pi, int(rng.integers(6, 10)))
    radii = np.linspace(0.05, 0.15, 6)
    spicules = centre + np.stack([np.outer(radii, np.sin(angles)),
                                  np.outer(radii, np.cos(angles))], axis=-1).reshape(-1, 2)
    return 0.45 * _spots(yy, xx, [centre], 0.045) + 0.35 * _spots(yy, xx, spicules, speck)


def render_face(seed: int, width: int, height: int, male: bool, eyeglasses: bool,
                beard: bool) -> np.ndarray:
    """An aligned face, RGB values in [0, 1]. Women's hair falls lower beside the face (the
    lengths overlap a little); a beard darkens the jaw, eyeglasses are dark rings."""
    rng = np.random.default_rng(seed)
    yy, xx = _grid(height, width)
    mid = width / height / 2
    picture = (rng.uniform(0.1, 0.9, 3)
               + 0.2 * (_smooth_field(rng, height, width)[..., None] - 0.5))
    hair_colour = (rng.uniform(0.05, 0.35) * np.array([1.0, 0.8, 0.6]) if rng.random() < 0.8
                   else rng.uniform(0.75, 0.95) * np.array([1.0, 0.85, 0.5]))
    skin = np.array([0.87, 0.68, 0.56]) * rng.uniform(0.7, 1.1)
    bottom = 0.45 + (rng.uniform(0.0, 0.25) if male else rng.uniform(0.15, 0.5))
    hair = _ellipse(yy, xx, (0.55, mid), (0.45, 0.28)) / (1 + np.exp((yy - bottom) * 40))
    face = _ellipse(yy, xx, (0.52, mid), (0.24, 0.19))
    jaw = face / (1 + np.exp((0.63 - yy) * 40)) * (rng.uniform(0.4, 0.8) if beard else 0)
    eyes = [(0.46, mid - 0.075), (0.46, mid + 0.075)]
    layers = [(hair, hair_colour), (face, skin), (jaw, hair_colour),
              (0.8 * _spots(yy, xx, eyes, 0.018), np.array([0.1, 0.07, 0.06])),
              (0.7 * _spots(yy, xx, [(0.66, mid)], 0.022), np.array([0.6, 0.2, 0.2]))]
    if eyeglasses:
        width_of_rim = max(0.01, 0.8 / height)
        rims = sum(np.exp(-((np.hypot(yy - ey, xx - ex) - 0.05) / width_of_rim) ** 2)
                   for ey, ex in eyes)
        layers.append((np.clip(rims, 0, 1), np.array([0.05, 0.05, 0.05])))
    for weight, colour in layers:
        picture = picture * (1 - weight[..., None]) + colour * weight[..., None]
    light = 1 + 0.1 * (xx - mid) * rng.normal()
    return np.clip(picture * light[..., None] + rng.normal(0, 0.02, picture.shape), 0, 1)


def _grid(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel centres in units of the height, so circles stay round in any aspect."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32) + 0.5
    return yy / height, xx / height


def _spots(yy: np.ndarray, xx: np.ndarray, centres, sigma: float) -> np.ndarray:
    """Round Gaussian spots of height one (they add up where they overlap)."""
    out = np.zeros_like(yy)
    for cy, cx in centres:
        out += np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * sigma ** 2))
    return out


def _ellipse(yy: np.ndarray, xx: np.ndarray, centre, radii) -> np.ndarray:
    """One inside the ellipse, zero outside, with a soft edge."""
    inside = 1 - np.hypot((yy - centre[0]) / radii[0], (xx - centre[1]) / radii[1])
    return 0.5 + 0.5 * np.tanh(10 * inside)
