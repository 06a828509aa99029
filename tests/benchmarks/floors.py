"""Floors: the bare work of a pipeline component, done in one process on the files the
component reads, so that the component's seconds and memory have something to be measured
against. `measure_floors` runs a list of them in a spawned child whose memory is sampled
like a pipeline run's (tests/benchmarks/runs.py)."""

from __future__ import annotations

import glob
import json
import os
import shutil
import time
from typing import Callable

import numpy as np
import tensorflow as tf
import tensorflow_transform as tft
from sklearn.metrics import roc_auc_score

from modules.records import record_dataset
from modules.signatures import PREDICTION_KEY
from modules.task import TaskSpec
from tests.benchmarks.runs import tree_bytes, watch

SERVING_SIGNATURE = "serving_default"


def split_files(uri: str, splits: list[str] | None = None) -> list[str]:
    """The record files of an Examples artifact's `splits` (default: every split), found by
    listing each split folder (ImportExampleGen's are uncompressed, BulkInferrer's `.gz`)."""
    folders = ([os.path.join(uri, f"Split-{split}") for split in splits] if splits
               else sorted(glob.glob(os.path.join(uri, "Split-*"))))
    return sorted(os.path.join(folder, name) for folder in folders
                  for name in os.listdir(folder) if not name.startswith("."))


def copy_records(files: list[str], out_dir: str) -> dict:
    """ImportExampleGen's floor: every record read and written again, uncompressed, with
    tf.data and tf.io.TFRecordWriter. The copies are deleted after their size is taken."""
    os.makedirs(out_dir)
    for path in files:
        name = os.path.basename(path).removesuffix(".gz")
        with tf.io.TFRecordWriter(os.path.join(out_dir, name)) as writer:
            for record in record_dataset([path]):
                writer.write(record.numpy())
    written = tree_bytes(out_dir)
    shutil.rmtree(out_dir)
    return {"written": written}


def present_spec(files: list[str], spec: dict) -> dict:
    """`spec` without the features the first record lacks (test shards carry no label)."""
    first = tf.train.Example.FromString(next(iter(record_dataset(files[:1]))).numpy())
    return {key: feature for key, feature in spec.items() if key in first.features.feature}


def parse_records(files: list[str], graph_dir: str) -> dict:
    """StatisticsGen's floor: every record read and parsed (each feature it holds, with the
    raw spec the Transform graph keeps)."""
    spec = present_spec(files, tft.TFTransformOutput(graph_dir).raw_feature_spec())
    for _ in record_dataset(files, num_parallel_reads=tf.data.AUTOTUNE) \
            .batch(256).map(lambda r: tf.io.parse_example(r, spec)):
        pass
    return {}


def transform_images(files: list[str], graph_dir: str, batch: int) -> dict:
    """Transform's floor if it read its data: every training image decoded and resized once
    by the Transform graph."""
    graph = tft.TFTransformOutput(graph_dir)
    layer, spec = graph.transform_features_layer(), graph.raw_feature_spec()
    for _ in record_dataset(files).batch(batch) \
            .map(lambda r: layer(tf.io.parse_example(r, spec)),
                 num_parallel_calls=tf.data.AUTOTUNE).prefetch(1):
        pass
    return {}


def _score(serving_dir: str, files: list[str], batch: int,
           keys: dict[str, tf.io.FixedLenFeature]) -> tuple[np.ndarray, dict]:
    """The model's serving signature on batches of the serialized examples (as TFMA and
    BulkInferrer call it), and the columns `keys` of the same examples."""
    serve = tf.saved_model.load(serving_dir).signatures[SERVING_SIGNATURE]
    scores, columns = [], {key: [] for key in keys}
    for records in record_dataset(files).batch(batch):
        scores.append(serve(examples=records)[PREDICTION_KEY].numpy().ravel())
        for key, values in (tf.io.parse_example(records, keys) if keys else {}).items():
            columns[key].append(values.numpy().ravel())
    return np.concatenate(scores), {k: np.concatenate(v) for k, v in columns.items()}


def score_examples(serving_dir: str, files: list[str], batch: int) -> dict:
    """BulkInferrer's floor: the serving signature on every example."""
    _score(serving_dir, files, batch, {})
    return {}


def slice_aucs(columns: dict[str, np.ndarray], scores: np.ndarray, slices: list[list[str]],
               task: TaskSpec) -> dict[str, float]:
    """AUC overall and on every slice with both classes, as the Evaluator slices."""
    labels = columns[task.label.key]
    keys = {**columns, **{n.slice_key: np.where(
        columns[n.key] == task.missing, task.missing,
        np.searchsorted(sorted(n.buckets), columns[n.key], side="right"))
        for n in task.bucketed}}
    aucs = {"overall": roc_auc_score(labels, scores)}
    for family in slices:
        values = np.stack([keys[key] for key in family], axis=1)
        for value in np.unique(values, axis=0):
            mask = (values == value).all(axis=1)
            if 0 < labels[mask].sum() < mask.sum():
                aucs[f"{family}={value.tolist()}"] = roc_auc_score(labels[mask], scores[mask])
    return aucs


def evaluate(serving_dir: str, files: list[str], batch: int, task: TaskSpec,
             slices: list[list[str]]) -> dict:
    """The Evaluator's floor: the serving signature on the evaluation examples, then the
    AUC overall and per slice."""
    # The label and what slices read; optional features (diagnosis, source) are left out.
    names = {task.label.key, *(n.key for n in task.bucketed),
             *(f for family in slices for f in family if f in task.metadata)}
    keys = {key: tf.io.FixedLenFeature([], tf.int64, default_value=task.missing)
            for key in names}
    scores, columns = _score(serving_dir, files, batch, keys)
    return {"aucs": slice_aucs(columns, scores, slices, task)}


# ---------------------------------------------------------------- in a watched child

Floor = tuple[str, Callable[..., dict], tuple]  # (component, function, its arguments)


def _run_floors(floors: list[Floor], out: str) -> None:
    """In the child: each floor in turn, a JSON line each (its window, seconds, results)."""
    for name, function, args in floors:
        start, clock = time.time(), time.perf_counter()
        result = function(*args)
        line = {"name": name, "start": start, "end": time.time(),
                "seconds": time.perf_counter() - clock, **result}
        with open(out, "a") as f:
            f.write(json.dumps(line) + "\n")


def _done(out: str) -> dict[str, dict]:
    if not os.path.exists(out):
        return {}
    with open(out) as f:
        return {line["name"]: line for line in map(json.loads, f)}


def measure_floors(floors: list[Floor], work: str) -> dict[str, dict]:
    """Every floor in one spawned child, its memory sampled: for each, its seconds, peak
    PSS (MiB, of what the child holds by then) and results."""
    os.makedirs(work)
    out, label = os.path.join(work, "floors.jsonl"), os.path.basename(work)
    print(f"{label}: {len(floors)} floors in one process")
    log = os.path.join(work, "floors.log")
    watched = watch(label, log, _run_floors, (floors, out),
                    lambda: {n: (d["start"], d["end"]) for n, d in _done(out).items()})
    watched.check(label, log)
    return {name: {**line, "peak_mib": watched.peak_mib(line["start"], line["end"])}
            for name, line in _done(out).items()}
