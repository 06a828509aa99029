"""SubmissionWriter: the BulkInferrer's PredictionLogs as a submission CSV.

The melanoma notebook's submission file: one row per test image, `image_name,target` with
the probability of the positive class. A model of K classes gets one probability column per
class, named by the class, rather than the top class's name: a ranking metric (AUC) needs the
scores, and the top class is their argmax. Each row's image name is read from the example
the PredictionLog carries, so rows cannot be paired with the wrong image; rows are sorted
by image name.

For a model with an out-of-distribution guard, `in_distribution.csv` beside it gives each
test image's `ood_score` and `in_distribution` (0: unlike the training images), and the
artifact's `ood_flagged` property how many were flagged: a separate file, because Kaggle's
melanoma competition takes `image_name,target` and nothing else.
"""

import csv
import os
from typing import Iterable

import tensorflow as tf
from tensorflow_serving.apis import prediction_log_pb2
from tfx.dsl.component.experimental.annotations import (InputArtifact, OutputArtifact,
                                                          Parameter)
from tfx.dsl.component.experimental.decorators import component
from tfx.dsl.io import fileio
from tfx.types import artifact, standard_artifacts

from modules.artifacts import (IN_DISTRIBUTION_FILE, OOD_FLAGGED, SUBMISSION_FILE,
                               SUBMISSION_TYPE)
from modules.errors import MedtfxError
from modules.ood import IN_DISTRIBUTION_KEY, OOD_SCORE_KEY
from modules.signatures import PREDICTION_KEY, PROBABILITIES_KEY
from modules.task import TaskSpec

PREDICTION_LOGS = "prediction_logs*"  # the files BulkInferrer writes, gzipped TFRecords


class Submission(artifact.Artifact):
    """A CSV of the scores of a run's test images; custom property `examples`: its rows."""
    TYPE_NAME = SUBMISSION_TYPE


class SubmissionError(MedtfxError):
    """A PredictionLog that cannot become a row of the submission."""


def submission_header(task: TaskSpec) -> list[str]:
    """`image_name,target` for a binary task; the image name and every class otherwise."""
    columns = [task.label.key] if task.binary else task.label.classes
    return [task.image_name_key, *columns]


def submission_row(log: prediction_log_pb2.PredictionLog, task: TaskSpec) -> list:
    """The image name from the logged example, then the model's probabilities."""
    inputs = log.predict_log.request.inputs
    if len(inputs) != 1:
        raise SubmissionError(f"a PredictionLog with inputs {sorted(inputs)}: expected one "
                              "tensor of serialized tf.Examples (serving_default)")
    example = tf.train.Example.FromString(next(iter(inputs.values())).string_val[0])
    names = example.features.feature[task.image_name_key].bytes_list.value
    if len(names) != 1:
        raise SubmissionError(f"a test example without one '{task.image_name_key}': its "
                              "row could not be named")
    outputs = log.predict_log.response.outputs
    key = PREDICTION_KEY if task.binary else PROBABILITIES_KEY
    scores = tf.make_ndarray(outputs[key]).reshape(-1).tolist()
    return [names[0].decode(), *scores]


def submission_rows(logs: Iterable[prediction_log_pb2.PredictionLog], task: TaskSpec,
                    guarded: list[list] | None = None) -> list[list]:
    """One row per PredictionLog, sorted by image name. When the model answers the guard's
    outputs, each image's name, ood_score and in_distribution are added to `guarded`."""
    rows = []
    for log in logs:
        rows.append(submission_row(log, task))
        outputs = log.predict_log.response.outputs
        if guarded is not None and IN_DISTRIBUTION_KEY in outputs:
            guarded.append([rows[-1][0], *(tf.make_ndarray(outputs[key]).item()
                                           for key in (OOD_SCORE_KEY, IN_DISTRIBUTION_KEY))])
    if guarded:
        guarded.sort(key=lambda row: row[0])
    return sorted(rows, key=lambda row: row[0])


def read_prediction_logs(inference_uri: str) -> Iterable[prediction_log_pb2.PredictionLog]:
    files = sorted(fileio.glob(os.path.join(inference_uri, PREDICTION_LOGS)))
    for record in tf.data.TFRecordDataset(files, compression_type="GZIP"):
        yield prediction_log_pb2.PredictionLog.FromString(record.numpy())


def write_submission(rows: list[list], task: TaskSpec, path: str) -> None:
    fileio.makedirs(os.path.dirname(path))  # a Kubeflow launcher leaves it to the executor
    with fileio.open(path, "w") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(submission_header(task))
        writer.writerows([row[0], *(f"{score:.6g}" for score in row[1:])] for row in rows)


def write_guard_file(rows: list[list], task: TaskSpec, path: str) -> None:
    """`image_name,ood_score,in_distribution`, one row per test image."""
    with fileio.open(path, "w") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow([task.image_name_key, OOD_SCORE_KEY, IN_DISTRIBUTION_KEY])
        writer.writerows([name, f"{score:.6g}", int(inside)] for name, score, inside in rows)


@component
def SubmissionWriter(inference_result: InputArtifact[standard_artifacts.InferenceResult],
                     blessing: InputArtifact[standard_artifacts.ModelBlessing],
                     submission: OutputArtifact[Submission], task: Parameter[str],
                     code: Parameter[str] = "") -> None:
    """`task`: the TaskSpec as JSON; `code`: the fingerprint of this component's code
    (pipeline/fingerprint.py). A model that was not blessed scored nothing: no file, and
    no `examples` property."""
    if blessing.get_int_custom_property("blessed") != 1:
        return
    spec = TaskSpec.model_validate_json(task)
    guarded: list[list] = []
    rows = submission_rows(read_prediction_logs(inference_result.uri), spec, guarded)
    if not rows:  # BulkInferrer writes an empty file for a split it did not find
        raise SubmissionError(f"{inference_result.uri}: no PredictionLogs; the test split "
                              "was not scored")
    write_submission(rows, spec, os.path.join(submission.uri, SUBMISSION_FILE))
    submission.set_int_custom_property("examples", len(rows))
    if guarded:
        write_guard_file(guarded, spec, os.path.join(submission.uri, IN_DISTRIBUTION_FILE))
        submission.set_int_custom_property(OOD_FLAGGED, sum(1 for *_, inside in guarded
                                                            if not inside))
