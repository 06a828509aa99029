"""`medtfx predict`: image files and folders scored by a served model, one answer per file.

JPEG and PNG (8- or 16-bit) go to the model as their file bytes, which the served Transform
graph decodes; a DICOM instance is first converted to the 8-bit PNG that `medtfx data import`
stores, with the same settings, and its header attributes named in `source.dicom.columns`
are its metadata, mapped by the import's own function, so the model sees what it was trained
and evaluated on. Other metadata is sent as missing. A file that cannot be read, converted
or decoded gets its own error and the others are still scored: a request that fails is
split until the failing file stands alone.
"""

from __future__ import annotations

import dataclasses
import os
import re
from typing import Callable, Iterator

import tensorflow as tf

from modules.errors import MedtfxError
from modules.ood import IN_DISTRIBUTION_KEY, OOD_SCORE_KEY
from modules.signatures import (CLASS_NAME_KEY, DECISION_KEY, PREDICTION_KEY,
                                PROBABILITIES_KEY)
from pipeline.data import dicom
from modules.task import TaskSpec
from pipeline.data.catalog import IMAGE_SUFFIXES, list_files, metadata_codes
from pipeline.data.sources import DicomSettings
from pipeline.serving.load_check import complaint
from pipeline.serving.model import ServedModel
from pipeline.serving.overlay import overlay_png, write_png


class NothingToScoreError(MedtfxError):
    """The paths given hold no image."""


@dataclasses.dataclass
class Prediction:
    file: str
    error: str = ""  # why the file has no answer
    # A model of K classes: each class's probability, and the most probable class.
    probabilities: list[float] = dataclasses.field(default_factory=list)
    class_name: str = ""
    # The probability of the flagged class (binary) or of the urgent classes, and the
    # decision taken on it at the threshold (1: refer); None when the model takes none.
    probability: float | None = None
    decision: int | None = None
    # A model with an out-of-distribution guard: the image's distance to the training
    # images' features, and 1 when it is within the threshold (0: unlike them).
    ood_score: float | None = None
    in_distribution: int | None = None


def find_images(paths: list[str], skip: list[str]) -> tuple[list[str], int]:
    """The files to score: each file named, and below each folder named the images (by
    suffix) and DICOM instances (by suffix or content), sorted, except the names `skip`
    matches (macOS and Finder litter); and how many files in the folders were passed over.
    A path that does not exist is kept, to be reported as such; no file at all is an
    error."""
    patterns = [re.compile(p) for p in skip]
    files, passed_over = [], 0
    for path in paths:
        if not os.path.isdir(path):
            files.append(path)
            continue
        listed, skipped = list_files(path, "", patterns)
        found = [os.path.join(path, name) for name in listed]
        images = [f for f in found if f.lower().endswith(IMAGE_SUFFIXES) or _is_dicom(f)]
        files += images
        passed_over += skipped + len(found) - len(images)
    if not files:
        raise NothingToScoreError(f"no image files in {', '.join(paths)}")
    return files, passed_over


def _is_dicom(path: str) -> bool:
    try:
        return dicom.is_instance(path)
    except OSError:
        return False


def read_image(path: str, settings: DicomSettings, task: TaskSpec
               ) -> tuple[bytes, dict[str, int]]:
    """What the model is given for a file: its bytes, or a DICOM instance's pixels as the
    PNG that import stores; and its metadata codes, which import would read from a DICOM
    header (none from other files). Raises OSError or DicomError."""
    with open(path, "rb") as f:
        data = f.read()
    if not dicom.is_instance(path):
        return data, {}
    png = dicom.to_png(data, settings)
    if not settings.columns:
        return png, {}
    header = dicom.header(path, dicom.header_keywords(list(settings.columns), None))
    return png, metadata_codes(header, settings, task)


Answered = Callable[[list[bytes], list[dict[str, int]], dict], None]


def predict(model: ServedModel, files: list[str], settings: DicomSettings, task: TaskSpec,
            batch: int, explain_to: dict[str, str] | None = None,
            answered: Answered | None = None) -> Iterator[Prediction]:
    """One prediction per file, in order, in requests of at most `batch` images (and never
    more than the model accepts); files are read one request at a time. With `explain_to`
    (file: PNG path), each file scored also gets its heat map overlay written there;
    `answered` gets each request the model answered, with its outputs (the request log)."""
    size = min(batch, model.batch_limit or batch)
    for start in range(0, len(files), size):
        answers, readable = {}, []
        for path in files[start:start + size]:
            try:
                readable.append((path, *read_image(path, settings, task)))
            except OSError as err:
                answers[path] = Prediction(path, error=f"cannot read: {err.strerror}")
            except dicom.DicomError as err:
                answers[path] = Prediction(path, error=str(err))
        answers.update((p.file, p) for p in _score(model, readable, answered))
        for path, data, codes in readable if explain_to else []:
            if not answers[path].error:
                write_png(explain_to[path], overlay_png(data, model.explain(data, codes)))
        yield from (answers[path] for path in files[start:start + size])


def _score(model: ServedModel, images: list[tuple[str, bytes, dict[str, int]]],
           answered: Answered | None) -> list[Prediction]:
    """Predictions for one request; when the model refuses it (an image that does not decode
    or is beyond the image limits), each half is asked again, down to the file at fault."""
    if not images:
        return []
    try:
        outputs = model([data for _, data, _ in images], [codes for *_, codes in images])
    except tf.errors.InvalidArgumentError as err:
        if len(images) == 1:
            return [Prediction(images[0][0], error=_reason(err))]
        half = len(images) // 2
        return _score(model, images[:half], answered) + _score(model, images[half:], answered)
    if answered is not None:
        answered([data for _, data, _ in images], [codes for *_, codes in images], outputs)
    return [_answer(path, outputs, i, model) for i, (path, *_) in enumerate(images)]


def _answer(path: str, outputs: dict, i: int, model: ServedModel) -> Prediction:
    answer = Prediction(path)
    if not model.binary:
        answer.probabilities = outputs[PROBABILITIES_KEY][i].tolist()
        answer.class_name = outputs[CLASS_NAME_KEY][i].decode()
    if PREDICTION_KEY in outputs:
        answer.probability = float(outputs[PREDICTION_KEY][i, 0])
        answer.decision = int(outputs[DECISION_KEY][i, 0])
    if IN_DISTRIBUTION_KEY in outputs:
        answer.ood_score = float(outputs[OOD_SCORE_KEY][i, 0])
        answer.in_distribution = int(outputs[IN_DISTRIBUTION_KEY][i, 0])
    return answer


def _reason(err: tf.errors.OpError) -> str:
    """What the served graph says is wrong with the image, e.g. "Unknown image file
    format..." or, from a check of the image limits, "image of N bytes, above
    limits.image_bytes (M)"."""
    return complaint(err).removeprefix("assertion failed: [").removesuffix("]")
