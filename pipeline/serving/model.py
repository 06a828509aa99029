"""One served model, loaded the way a client calls it: its `serving_image` signature, so the
image is decoded and scaled by the served Transform graph and a decision is taken at the
served threshold, exactly as TF Serving would answer.

What the answers mean (the class names, what a decision of 1 flags) comes from the model
card the packager put beside the model; a model without one (a Trainer's own export) is
read with the classes of the config's task.
"""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np
import tensorflow as tf
from tfx.dsl.io import fileio

from modules.artifacts import CARD_DIR, THRESHOLD_ASSET
from modules.errors import MedtfxError
from modules.gradcam import HEATMAP_KEY, HEIGHT_KEY, WIDTH_KEY
from modules.ood import IN_DISTRIBUTION_KEY
from modules.signatures import DECISION_KEY, EXPLAIN, PROBABILITIES_KEY
from modules.task import TaskSpec
from pipeline.ops.serving_dir import serving_versions

SIGNATURE = "serving_image"
CARD_FILE = "model_card.json"
# The serving graph checks each request against the batch bound it was exported with, and
# says so in this message (modules/signatures.py:within_batch).
BATCH_CHECK = b"limits.batch"


class ModelError(MedtfxError):
    """There is no usable model where one was asked for."""


def find_model(model: str | None, serving_base: str) -> str:
    """The SavedModel directory to score with: `model` itself, or the newest version when
    `model` (default: `serving_base`) is a serving directory of versions."""
    base = model or serving_base
    if fileio.exists(os.path.join(base, "saved_model.pb")):
        return base
    versions = serving_versions(base)
    if versions:
        return os.path.join(base, versions[-1])
    if model is None:
        raise ModelError(f"{base}: no served model (run `medtfx run` first, or give --model)")
    if not fileio.exists(model):
        raise ModelError(f"{model}: no such directory")
    raise ModelError(f"{model}: neither a SavedModel (saved_model.pb) nor a serving "
                     "directory of numbered versions")


@dataclasses.dataclass
class ServedModel:
    path: str
    classes: list[str]
    flagged: str  # what a decision of 1 means, e.g. "malignant"
    negative: str  # ... and a decision of 0
    threshold: float | None  # the served operating threshold; None: the model decides nothing
    batch_limit: int | None  # images per request the serving graph accepts
    missing: int  # the code of a missing metadata value
    signature: tf.types.experimental.ConcreteFunction
    image_input: str
    metadata_inputs: list[str]  # empty unless the model has a metadata branch
    loaded: object  # the SavedModel object, kept alive with its signature
    guarded: bool = False  # answers ood_score and in_distribution (modules/ood.py)
    explainer: tf.types.experimental.ConcreteFunction | None = None  # its `explain` signature

    @property
    def binary(self) -> bool:
        return len(self.classes) == 2

    def __call__(self, images: list[bytes], metadata: list[dict[str, int]]
                 ) -> dict[str, np.ndarray]:
        """The signature's outputs for encoded images and each image's metadata codes (a
        feature the model reads that an image's dict lacks is sent as missing)."""
        columns = {key: tf.constant([codes.get(key, self.missing) for codes in metadata],
                                    tf.int64) for key in self.metadata_inputs}
        outputs = self.signature(**{self.image_input: tf.constant(images)}, **columns)
        return {key: value.numpy() for key, value in outputs.items()}

    def require_explainer(self) -> tf.types.experimental.ConcreteFunction:
        """The `explain` signature; a model without one is refused in one line."""
        if self.explainer is None:
            raise ModelError(f"{self.path}: the model has no {EXPLAIN} signature (exported "
                             "before explanations, or a hub backbone, which has none)")
        return self.explainer

    def explain(self, image: bytes, metadata: dict[str, int]) -> np.ndarray:
        """The Grad-CAM map [H, W] in [0, 1] of one encoded image, at its own size."""
        columns = {key: tf.constant([metadata.get(key, self.missing)], tf.int64)
                   for key in self.metadata_inputs}
        out = self.require_explainer()(**{self.image_input: tf.constant([image])}, **columns)
        return out[HEATMAP_KEY][0, :out[HEIGHT_KEY][0], :out[WIDTH_KEY][0]].numpy()


def load_model(path: str, task: TaskSpec) -> ServedModel:
    """The model in SavedModel directory `path`; `task` names its classes when it has no
    model card."""
    loaded = tf.saved_model.load(path)
    if SIGNATURE not in loaded.signatures:
        raise ModelError(f"{path}: the model has no {SIGNATURE} signature")
    signature = loaded.signatures[SIGNATURE]
    inputs = signature.structured_input_signature[1]
    outputs = signature.structured_outputs
    card = _card(path)
    if card:
        classes = card["classes"]["names"]
        flagged, negative = card["classes"]["positive"], card["classes"]["negative"]
    else:
        classes, flagged = task.label.classes, task.flagged
        negative = task.negative if task.binary else "any other class"
    answered = outputs[PROBABILITIES_KEY].shape[-1] if PROBABILITIES_KEY in outputs else 2
    if answered != len(classes):
        named_by = "its model card" if card else "the config's task"
        raise ModelError(f"{path}: the model answers {answered} classes, {named_by} names "
                         f"{len(classes)}: {', '.join(classes)}")
    return ServedModel(
        path=path, classes=classes, flagged=flagged, negative=negative,
        threshold=_threshold(path) if DECISION_KEY in outputs else None,
        batch_limit=_batch_limit(signature), missing=task.missing, signature=signature,
        image_input=next(k for k, spec in inputs.items() if spec.dtype == tf.string),
        metadata_inputs=sorted(k for k, spec in inputs.items() if spec.dtype == tf.int64),
        loaded=loaded, guarded=IN_DISTRIBUTION_KEY in outputs,
        explainer=loaded.signatures.get(EXPLAIN))


def _card(path: str) -> dict | None:
    card = os.path.join(path, CARD_DIR, CARD_FILE)
    if not fileio.exists(card):
        return None
    with fileio.open(card) as f:
        return json.load(f)


def _threshold(path: str) -> float:
    """The threshold the served graph compares with: its asset, which the packager wrote."""
    with fileio.open(os.path.join(path, "assets", THRESHOLD_ASSET)) as f:
        return float(f.read())


def _batch_limit(signature: tf.types.experimental.ConcreteFunction) -> int | None:
    """The batch bound compiled into the signature's graph: the constant its batch check
    compares the request's size with; None when the graph has no such check."""
    for function in signature.graph.as_graph_def().library.function:
        nodes = {node.name: node for node in function.node_def}
        if not any(node.op == "StringFormat" and BATCH_CHECK in node.attr["template"].s
                   for node in nodes.values()):
            continue
        for node in nodes.values():
            bound = nodes.get(node.input[-1].split(":")[0]) if node.op == "LessEqual" else None
            if bound is not None and bound.op == "Const":
                return int(tf.make_ndarray(bound.attr["value"].tensor))
    return None
