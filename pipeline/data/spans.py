"""Numbered spans of labelled data, and the arrivals they are built from.

A data root with spans looks like this:

    DATA/arrivals/N/trainNN-COUNT.tfrec   the files accepted by `medtfx retrain`, as they came
    DATA/arrivals/N/medtfx-arrival.json   their digests, and the shard of each patient
    DATA/span-N/trainNN-COUNT.tfrec       what the pipeline reads: the window of arrivals
    DATA/span-N/medtfx-span.json          which arrival files span N holds

Span N's shard NN is the byte concatenation of shard NN of every arrival in the window (a
TFRecord file is a sequence of framed records, so concatenated files are one valid file):
folds stay sets of whole shards, and ImportExampleGen reads the newest span with a
`span-{SPAN}` pattern on any orchestrator. Directories appear whole: each is written under
a hidden temporary name and renamed into place, and an existing one is never replaced.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil

from modules.errors import MedtfxError
from pipeline.data.shards import SHARD_RE, shard_filename
from pipeline.core.files import staged_dir

SPAN_RE = re.compile(r"^span-(?P<number>\d+)$")
ARRIVALS = "arrivals"
SPAN_MANIFEST = "medtfx-span.json"
ARRIVAL_MANIFEST = "medtfx-arrival.json"  # each file's digest, and each patient's shard


class SpanError(MedtfxError):
    """The spans under a data root cannot be read or extended."""


def span_dir(data_root: str, span: int) -> str:
    return os.path.join(data_root, f"span-{span}")


def span_input_pattern(shard_pattern: str) -> str:
    """An ImportExampleGen pattern that reads the shard from the newest span."""
    return f"span-{{SPAN}}/{shard_pattern}"


def list_spans(data_root: str) -> list[int]:
    if not os.path.isdir(data_root):
        return []
    return sorted(int(m["number"]) for m in map(SPAN_RE.match, os.listdir(data_root)) if m)


def latest_span_dir(data_root: str) -> str:
    spans = list_spans(data_root)
    if not spans:
        raise SpanError(f"{data_root}: no span-N directories (data.spans is true); register "
                        "data with `medtfx retrain --incoming DIR`")
    return span_dir(data_root, spans[-1])


def list_arrivals(data_root: str) -> list[int]:
    root = os.path.join(data_root, ARRIVALS)
    if not os.path.isdir(root):
        return []
    return sorted(int(name) for name in os.listdir(root) if name.isdigit())


def arrival_dir(data_root: str, arrival: int) -> str:
    return os.path.join(data_root, ARRIVALS, str(arrival))


def window_of(arrivals: list[int], window: int | str) -> list[int]:
    if window == "latest":
        return arrivals[-1:]
    if window == "all":
        return list(arrivals)
    return arrivals[-window:]


def arrival_shards(directory: str) -> dict[int, tuple[str, int]]:
    """Train shard index: (path, record count), from the public file names."""
    shards = {}
    for name in sorted(os.listdir(directory)):
        match = SHARD_RE.match(name)
        if match and match["kind"] == "train":
            shards[int(match["index"])] = (os.path.join(directory, name), int(match["count"]))
    return shards


def file_digest(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(2**20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_patients(path: str) -> set[int]:
    """The patient ids a shard holds (-1, unknown, left out)."""
    import tensorflow as tf

    from modules import features as F

    spec = {F.PATIENT_KEY: tf.io.FixedLenFeature([], tf.int64, default_value=F.MISSING)}
    patients: set[int] = set()
    for batch in tf.data.TFRecordDataset(path).batch(1024):
        patients.update(tf.io.parse_example(batch, spec)[F.PATIENT_KEY].numpy().tolist())
    return patients - {F.MISSING}


def describe_files(files: list[str]) -> dict:
    """What an arrival records of its files: each one's digest, and the shard each patient
    is in."""
    patients = {}
    for path in files:
        match = SHARD_RE.match(os.path.basename(path))
        for patient in file_patients(path):
            patients[str(patient)] = int(match["index"])
    return {"files": {os.path.basename(p): file_digest(p) for p in files},
            "patients": patients}


def arrival_record(data_root: str, number: int) -> dict:
    """An arrival's digests and patients, from its manifest (or read from its files, for an
    arrival registered before manifests were written)."""
    folder = arrival_dir(data_root, number)
    path = os.path.join(folder, ARRIVAL_MANIFEST)
    if os.path.exists(path):
        with open(path) as f:
            return json.load(f)
    return describe_files(sorted(os.path.join(folder, n) for n in os.listdir(folder)
                                 if SHARD_RE.match(n)))


def add_arrival(data_root: str, files: list[str]) -> int:
    """Copies accepted files in as the next arrival, with a manifest of their digests and
    patients; returns its number. The sources are left where they are."""
    number = max(list_arrivals(data_root), default=0) + 1
    with staged_dir(arrival_dir(data_root, number)) as tmp:
        for path in files:
            shutil.copy2(path, os.path.join(tmp, os.path.basename(path)))
        record = describe_files(sorted(os.path.join(tmp, os.path.basename(p)) for p in files))
        with open(os.path.join(tmp, ARRIVAL_MANIFEST), "w") as f:
            json.dump(record, f, indent=2)
    return number


def build_span(data_root: str, arrival: int, window: int | str, train_shards: int) -> str:
    """Writes span `arrival` from the window of arrivals ending there; returns its path."""
    arrivals = window_of([a for a in list_arrivals(data_root) if a <= arrival], window)
    by_index: dict[int, list[tuple[str, int]]] = {}
    for number in arrivals:
        for index, shard in arrival_shards(arrival_dir(data_root, number)).items():
            by_index.setdefault(index, []).append(shard)
    missing = [f"train{i:02d}" for i in range(train_shards) if i not in by_index]
    if missing:
        raise SpanError(f"span {arrival} would lack {', '.join(missing)}: no arrival in its "
                        f"window ({', '.join(map(str, arrivals))}) holds them")
    final = span_dir(data_root, arrival)
    with staged_dir(final) as tmp:
        for index in range(train_shards):
            parts = by_index[index]
            name = shard_filename("train", index, sum(count for _, count in parts))
            with open(os.path.join(tmp, name), "wb") as out:
                for path, _ in parts:
                    with open(path, "rb") as part:
                        shutil.copyfileobj(part, out)
        with open(os.path.join(tmp, SPAN_MANIFEST), "w") as f:
            json.dump({"span": arrival, "window": window, "arrivals": arrivals,
                       "shards": {f"train{i:02d}": [os.path.relpath(p, data_root)
                                                   for p, _ in by_index[i]]
                                  for i in range(train_shards)}}, f, indent=2)
    return final


def build_missing_spans(data_root: str, window: int | str, train_shards: int) -> list[str]:
    """Spans for arrivals that have none yet (a run interrupted after adding the arrival)."""
    spans = set(list_spans(data_root))
    return [build_span(data_root, a, window, train_shards)
            for a in list_arrivals(data_root) if a not in spans]
