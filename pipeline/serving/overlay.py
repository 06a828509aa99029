"""Heat maps a person can look at: a Grad-CAM map (the model's `explain` signature,
modules/gradcam.py) blended in colour over the image it explains, as a PNG of the image's
own size, for `medtfx predict --explain DIR` and the report's gallery.

The image is decoded as the served graph decodes it (16-bit PNGs over their full range), so
the overlay shows what the model saw. Cold areas keep the image as it is; the colour rises
with the heat, from dark purple through red to pale yellow.
"""

from __future__ import annotations

import io
import os

import numpy as np
from PIL import Image

from modules.errors import MedtfxError

# A perceptually ordered ramp (after matplotlib's "inferno"): heat 0 to 1.
_STOPS = np.array([0.0, 0.25, 0.5, 0.75, 1.0])
_COLOURS = np.array([[0.00, 0.00, 0.02], [0.34, 0.06, 0.43], [0.73, 0.21, 0.33],
                     [0.98, 0.55, 0.04], [0.99, 1.00, 0.64]])
MAX_OPACITY = 0.6  # at the hottest point the image still shows through
OVERLAY_SUFFIX = "-explained.png"


class OverlayExistsError(MedtfxError):
    """An overlay would replace a file that is already there."""


def colour(heat: np.ndarray) -> np.ndarray:
    """[H, W] heat in [0, 1] to [H, W, 3] RGB in [0, 1]."""
    return np.stack([np.interp(heat, _STOPS, _COLOURS[:, c]) for c in range(3)], axis=-1)


def decoded(encoded: bytes) -> np.ndarray:
    """An encoded image as the served graph decodes it: RGB [H, W, 3] in [0, 1]."""
    from modules.preprocessing import decode_pixels

    return decode_pixels(encoded).numpy()


def blend(image: np.ndarray, heat: np.ndarray) -> np.ndarray:
    """The heat's colour over the image, more opaque where hotter: [H, W, 3] in [0, 1]."""
    opacity = (MAX_OPACITY * np.clip(heat, 0, 1))[..., None]
    return image * (1 - opacity) + colour(heat) * opacity


def png(picture: np.ndarray) -> bytes:
    """RGB [H, W, 3] in [0, 1] as 8-bit PNG bytes."""
    out = io.BytesIO()
    Image.fromarray((np.clip(picture, 0, 1) * 255).round().astype(np.uint8)).save(out, "PNG")
    return out.getvalue()


def overlay_png(encoded: bytes, heat: np.ndarray) -> bytes:
    """The PNG `medtfx predict --explain` writes: the map over the image, at its size."""
    return png(blend(decoded(encoded), heat))


def overlay_paths(files: list[str], out_dir: str, overwrite: bool) -> dict[str, str]:
    """Where each file's overlay goes: FILE-explained.png in `out_dir`, in the subfolders the
    files share below their common folder (two files never share a name). Refuses, before
    anything is scored, to replace a file that exists unless `overwrite`."""
    root = os.path.commonpath([os.path.dirname(os.path.abspath(f)) for f in files])
    targets = {}
    for path in files:
        relative = os.path.relpath(os.path.abspath(path), root)
        targets[path] = os.path.join(out_dir, relative + OVERLAY_SUFFIX)
    taken = [t for t in targets.values() if os.path.exists(t)]
    if taken and not overwrite:
        more = f" and {len(taken) - 1} more" if len(taken) > 1 else ""
        raise OverlayExistsError(f"{taken[0]}{more} already exist{'s' if not more else ''}; "
                                 "not replacing: choose another --explain folder, or add "
                                 "--overwrite to replace them")
    return targets


def write_png(path: str, data: bytes) -> None:
    """Written under a hidden name, then renamed into place."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    hidden = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.tmp")
    with open(hidden, "wb") as f:
        f.write(data)
    os.replace(hidden, path)
