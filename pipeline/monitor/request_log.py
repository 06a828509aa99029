"""Logged requests and their answers, in the two forms deployments record them.

- PredictionLog TFRecords (gzipped or not): what the BulkInferrer writes for batch scoring
  and what a TF Serving log collector writes, `predict_log` with the request's input tensors
  (`examples` of serving_default: serialized tf.Examples; or serving_image's image bytes and
  metadata codes) and the response's output tensors.
- JSON lines, one request per line, as a logging proxy in front of TF Serving's REST API
  records them (docs/monitoring.md has the schema):
  `{"time": "...", "request": {"signature_name": ..., "instances": [...]} | {"inputs": {...}},
  "response": {"predictions": [...]} | {"outputs": {...}}}`; binary values as `{"b64": ...}`.

Each request becomes one `LoggedImage` per image it carried: the encoded bytes, the metadata
codes the client sent, and the served model's outputs for that image.
"""

from __future__ import annotations

import base64
import dataclasses
import gzip
import json
import os
import time
from typing import Iterator

import numpy as np

from modules.errors import MedtfxError
from modules.task import TaskSpec

JSON_SUFFIXES = (".jsonl", ".json", ".jsonl.gz")
EXAMPLES_INPUT = "examples"  # serving_default's input


class RequestLogError(MedtfxError):
    """A log file or record that cannot be read as a logged request."""


@dataclasses.dataclass(frozen=True)
class LoggedImage:
    image: bytes
    metadata: dict[str, int]  # the task's model features the client sent
    # The model's answer: probability, decision, probabilities, ood_score, in_distribution...
    outputs: dict[str, list[float]]
    time: str | None = None  # when the request was logged, when the log says


class JsonLinesLog:
    """Writes requests and answers as a logging proxy in front of TF Serving's REST API
    would (`medtfx predict --log DIR`): a new file per session, never one that exists."""

    def __init__(self, folder: str, signature: str, image_input: str,
                 version: str | None = None):
        os.makedirs(folder, exist_ok=True)
        stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
        self.path = os.path.join(folder, f"requests-{stamp}-{os.getpid()}.jsonl")
        self._file = open(self.path, "x")
        self.signature, self.image_input, self.version = signature, image_input, version

    def write(self, images: list[bytes], metadata: list[dict[str, int]],
              outputs: dict[str, np.ndarray]) -> None:
        instances = [{self.image_input: {"b64": base64.b64encode(image).decode()}, **codes}
                     for image, codes in zip(images, metadata)]
        predictions = [{name: _jsonable(value[i]) for name, value in outputs.items()}
                       for i in range(len(images))]
        entry = {"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                 "model_version": self.version,
                 "request": {"signature_name": self.signature, "instances": instances},
                 "response": {"predictions": predictions}}
        self._file.write(json.dumps(entry) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def _jsonable(value: np.ndarray):
    value = np.asarray(value)
    if value.dtype.kind in "SO":
        return [v.decode() if isinstance(v, bytes) else v for v in value.ravel().tolist()]
    return value.tolist()


def log_files(logs: str) -> list[str]:
    """The log files under `logs` (a file, or a folder searched recursively), sorted;
    hidden files (uploads in progress) are left alone."""
    if os.path.isfile(logs):
        return [logs]
    if not os.path.isdir(logs):
        raise RequestLogError(f"{logs}: no such file or folder of request logs")
    found = sorted(os.path.join(root, name) for root, _, names in os.walk(logs)
                   for name in names if not name.startswith("."))
    if not found:
        raise RequestLogError(f"{logs}: no request log files")
    return found


def read_logs(logs: str, task: TaskSpec) -> Iterator[LoggedImage]:
    """Every image of every logged request under `logs`, file by file."""
    for path in log_files(logs):
        reader = _json_lines if path.endswith(JSON_SUFFIXES) else _prediction_logs
        yield from reader(path, task)


def read_records(path: str, limit: int | None = None) -> Iterator[bytes]:
    """The records of a TFRecord file, gzipped or not (the first `limit`)."""
    import tensorflow as tf

    dataset = tf.data.TFRecordDataset(path, "GZIP" if _gzipped(path) else "")
    try:
        for record in dataset.take(-1 if limit is None else limit):
            yield record.numpy()
    except tf.errors.DataLossError as err:
        raise RequestLogError(f"{path}: not a whole TFRecord file "
                              f"({err.message.splitlines()[0]})") from err


def _prediction_logs(path: str, task: TaskSpec) -> Iterator[LoggedImage]:
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    for index, record in enumerate(read_records(path)):
        try:
            log = prediction_log_pb2.PredictionLog.FromString(record)
        except Exception as err:  # protobuf's DecodeError
            raise RequestLogError(f"{path}: record {index}: not a PredictionLog") from err
        if not log.HasField("predict_log"):
            raise RequestLogError(f"{path}: record {index}: not a predict log")
        inputs = {k: tf.make_ndarray(v) for k, v in log.predict_log.request.inputs.items()}
        outputs = {k: tf.make_ndarray(v) for k, v in log.predict_log.response.outputs.items()}
        yield from _images(inputs, outputs, task, f"{path}: record {index}")


def _json_lines(path: str, task: TaskSpec) -> Iterator[LoggedImage]:
    opener = gzip.open if _gzipped(path) else open
    with opener(path, "rt") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path}: line {number}"
            try:
                entry = json.loads(line)
                inputs = _columns(entry["request"], "instances", "inputs")
                outputs = _columns(entry["response"], "predictions", "outputs")
            except (ValueError, KeyError, TypeError) as err:
                raise RequestLogError(f"{where}: not a logged predict request and response "
                                      f"({type(err).__name__}: {err})") from err
            yield from _images(inputs, outputs, task, where, entry.get("time"))


def _columns(body: dict, rows_key: str, columns_key: str) -> dict[str, np.ndarray]:
    """A REST body's tensors by name, from the row form (a list of instances, each a dict
    or, for a one-input signature, the value itself) or the columnar form."""
    if rows_key in body:
        rows = body[rows_key]
        if rows and not isinstance(rows[0], dict):
            rows = [{EXAMPLES_INPUT if rows_key == "instances" else "output": r} for r in rows]
        names = list(dict.fromkeys(k for row in rows for k in row))
        return {name: np.array([_value(row[name]) for row in rows], dtype=object)
                for name in names}
    columns = body[columns_key]
    if not isinstance(columns, dict):
        columns = {EXAMPLES_INPUT: columns}
    return {name: np.array([_value(v) for v in values], dtype=object)
            for name, values in columns.items()}


def _value(value):
    if isinstance(value, dict) and "b64" in value:
        return base64.b64decode(value["b64"])
    if isinstance(value, list) and len(value) == 1:
        return _value(value[0])
    return value


def _images(inputs: dict[str, np.ndarray], outputs: dict[str, np.ndarray], task: TaskSpec,
            where: str, time: str | None = None) -> Iterator[LoggedImage]:
    """A request's images with their metadata and answers, whichever signature it named."""
    if EXAMPLES_INPUT in inputs:
        records = [_from_example(bytes(e), task, where) for e in inputs[EXAMPLES_INPUT].ravel()]
    elif task.image_key in inputs:
        images = inputs[task.image_key].ravel()
        records = [(bytes(image), {key: int(np.ravel(inputs[key])[i])
                                   for key in task.model_features if key in inputs})
                   for i, image in enumerate(images)]
    else:
        raise RequestLogError(f"{where}: the request carries {sorted(inputs)}, neither "
                              f"'{EXAMPLES_INPUT}' nor '{task.image_key}'")
    for i, (image, metadata) in enumerate(records):
        yield LoggedImage(image, metadata, _answer(outputs, i), time)


def _answer(outputs: dict[str, np.ndarray], i: int) -> dict[str, list[float]]:
    """Image i's numeric outputs (a class name is not one), each as a list of numbers."""
    answer = {}
    for name, value in outputs.items():
        numbers = np.ravel(np.asarray(value[i], dtype=object))
        if len(numbers) and all(isinstance(v, (int, float, np.number, np.bool_)) for v in numbers):
            answer[name] = [float(v) for v in numbers]
    return answer


def _from_example(serialized: bytes, task: TaskSpec, where: str) -> tuple[bytes, dict]:
    from tensorflow.core.example import example_pb2

    try:
        features = example_pb2.Example.FromString(serialized).features.feature
    except Exception as err:  # protobuf's DecodeError
        raise RequestLogError(f"{where}: a request example that does not parse") from err
    images = features[task.image_key].bytes_list.value
    if len(images) != 1:
        raise RequestLogError(f"{where}: an example without one '{task.image_key}'")
    metadata = {key: int(features[key].int64_list.value[0]) for key in task.model_features
                if features[key].int64_list.value}
    return images[0], metadata


def _gzipped(path: str) -> bool:
    with open(path, "rb") as f:
        return f.read(2) == b"\x1f\x8b"
