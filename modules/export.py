"""Where a model is exported: the SavedModel that serves, and the native Keras files that
later runs warm-start from.

Format-Serving holds the SavedModel with its signatures (modules/signatures.py); beside it in
the same Model artifact, Format-Keras holds each network as a `.keras` file: one for a single
model, one per fold for an ensemble.
"""

from __future__ import annotations

import os
import tempfile

import tensorflow_transform as tft
import tf_keras as keras

from modules.calibration import CalibrationMap
from modules.model import save_keras
from modules.ood import Guard
from modules.settings import RunSettings
from modules.signatures import make_signatures

KERAS_DIR = "Format-Keras"


def keras_path(serving_model_dir: str, member: int | None = None) -> str:
    """The .keras file beside a Model artifact's Format-Serving directory."""
    name = "model.keras" if member is None else f"member-{member}.keras"
    return os.path.join(os.path.dirname(serving_model_dir.rstrip("/")), KERAS_DIR, name)


def export_model(model: keras.Model, tf_transform_output: tft.TFTransformOutput,
                 settings: RunSettings, serving_model_dir: str,
                 members: list[keras.Model] | None = None,
                 guard: Guard | None = None,
                 calibration: CalibrationMap | None = None) -> None:
    """Writes the serving SavedModel of `model`, its probabilities mapped by `calibration`
    in every signature, and the .keras file of each network (`members` of an ensemble,
    else the model itself).

    The SavedModel keeps the signatures and each layer's config but not a trace of every
    layer's call (`save_traces=False`): serving, TFMA (`tf_generic`) and Keras' own loader
    need no more, and writing the traces doubled the save (98 s against 48 s for
    EfficientNetB0 at 32 px, measured on 2 busy cores). Nor the optimizer's state, which
    serving never reads. Warm starts read the .keras file. `guard`: the out-of-distribution
    detector the signatures apply (modules/ood.py)."""
    if members is None:
        save_keras(model, keras_path(serving_model_dir))
    for index, member in enumerate(members or []):
        save_keras(member, keras_path(serving_model_dir, index))
    with tempfile.TemporaryDirectory() as asset_dir:
        signatures = make_signatures(model, tf_transform_output, settings.task,
                                     asset_dir, tta=settings.tta,
                                     limits=settings.limits, guard=guard,
                                     calibration=calibration)
        model.save(serving_model_dir, save_format="tf", signatures=signatures,
                   save_traces=False, include_optimizer=False)
