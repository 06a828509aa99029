"""Checks of newly labelled files before they become a span, and the quarantine.

A file is accepted only when it is a train shard of the public layout that reads whole
(every record a tf.Example with a decodable image, as many records as its name says), fits
the curated schema, and has not drifted from the previous span beyond `retrain.drift`.
Each file is judged alone, so one bad file does not hold back the rest.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
import time

from modules.settings import ImageLimits
from pipeline.data.input_checks import check_shard
from pipeline.data.shards import SHARD_RE, Shard, fold_of
from pipeline.data.spans import file_digest, file_patients
from pipeline.core.files import move_file

QUARANTINE_REPORT = "quarantine-report.json"
PREVIOUS = "previous span"  # the statistics key of the span the files are compared with


@dataclasses.dataclass(frozen=True)
class Verdict:
    path: str
    problems: tuple[str, ...] = ()

    @property
    def accepted(self) -> bool:
        return not self.problems


def list_incoming(incoming: str) -> list[str]:
    """Files directly in the incoming folder; hidden files (uploads in progress) and
    subfolders are left alone."""
    return sorted(os.path.join(incoming, n) for n in os.listdir(incoming)
                  if not n.startswith(".") and os.path.isfile(os.path.join(incoming, n)))


def split_settled(paths: list[str], settle_seconds: float,
                  now: float | None = None) -> tuple[list[str], list[str]]:
    """(settled, still written): a file is settled once it has not changed for
    `settle_seconds`; one changed more recently may be an upload in progress."""
    now = time.time() if now is None else now
    settled = [p for p in paths if now - os.stat(p).st_mtime >= settle_seconds]
    return settled, [p for p in paths if p not in settled]


def check_incoming(paths: list[str], schema_file: str, train_shards: int,
                   previous_span: str | None, drift: dict[str, float],
                   limits: ImageLimits) -> list[Verdict]:
    shards, verdicts = {}, {}
    seen: dict[int, str] = {}
    for path in paths:
        name = os.path.basename(path)
        match = SHARD_RE.match(name)
        if not match or match["kind"] != "train":
            verdicts[path] = Verdict(path, ("not a labelled shard of the public layout "
                                            "(trainNN-COUNT.tfrec)",))
        elif int(match["index"]) >= train_shards:
            verdicts[path] = Verdict(path, (f"shard index {match['index']} is beyond "
                                            f"data.train_shards ({train_shards})",))
        elif int(match["index"]) in seen:
            other = seen[int(match["index"])]
            verdicts[path] = Verdict(path, (f"a second file for train{match['index']} "
                                            f"(also {os.path.basename(other)})",))
            verdicts[other] = Verdict(other, verdicts[path].problems)
        else:
            seen[int(match["index"])] = path
            shards[path] = Shard(path, "train", int(match["index"]), int(match["count"]))
    readable = []
    for path, shard in shards.items():
        if path in verdicts:
            continue
        problem = check_shard(shard, limits)
        if problem:
            verdicts[path] = Verdict(path, (problem.removeprefix(f"{path}: "),))
        else:
            readable.append(path)
    if readable:
        verdicts.update(_validate(readable, schema_file, previous_span, drift))
    return [verdicts[path] for path in paths]


def _validate(paths: list[str], schema_file: str, previous_span: str | None,
              drift: dict[str, float]) -> dict[str, Verdict]:
    """Schema anomalies and drift per file, with TFDV's own validator and comparators."""
    import tensorflow_data_validation as tfdv

    schema = tfdv.load_schema_text(schema_file)
    for feature in schema.feature:
        if feature.name in drift:
            # Codes drift as a change in their distribution (L-infinity), numbers by the
            # Jensen-Shannon divergence of their histograms: the schema says which is which.
            comparator = feature.drift_comparator
            bound = (comparator.infinity_norm if feature.int_domain.is_categorical
                     else comparator.jensen_shannon_divergence)
            bound.threshold = drift[feature.name]
    patterns = {os.path.basename(path): path for path in paths}
    if previous_span is not None:
        patterns[PREVIOUS] = os.path.join(previous_span, "train*.tfrec")
    statistics = _statistics(patterns, tfdv.StatsOptions(schema=schema))
    verdicts = {}
    for path in paths:
        anomalies = tfdv.validate_statistics(
            statistics[os.path.basename(path)], schema, environment="TRAINING",
            previous_statistics=statistics.get(PREVIOUS))
        verdicts[path] = Verdict(path, tuple(
            f"{name}: {info.description}" for name, info in
            sorted(anomalies.anomaly_info.items())))
    return verdicts


def _statistics(patterns: dict[str, str], options) -> dict:
    """The statistics of each file pattern, in one Beam pipeline (one per file cost ~3 s
    each)."""
    import apache_beam as beam
    import tensorflow_data_validation as tfdv
    from tfx.dsl.io import fileio

    from pipeline.data.named_statistics import GenerateStatisticsByName, by_name

    files = [(name, path) for name, pattern in patterns.items()
             for path in sorted(fileio.glob(pattern))]
    with tempfile.TemporaryDirectory(prefix="medtfx-intake-") as tmp:
        output = os.path.join(tmp, "statistics.pb")
        with beam.Pipeline() as pipeline:
            _ = (pipeline
                 | "Files" >> beam.Create(files)
                 | "Statistics" >> GenerateStatisticsByName(options)
                 | "Write" >> tfdv.WriteStatisticsToBinaryFile(output))
        return by_name(tfdv.load_stats_binary(output), list(patterns))


def registered_before(paths: list[str], arrivals: dict[int, dict]) -> dict[str, int]:
    """Incoming files whose exact bytes an arrival already holds (delivered twice, or left
    by a crash between registering and clearing the incoming folder): path -> arrival."""
    digests = {d: number for number, record in arrivals.items()
               for d in record["files"].values()}
    found = {path: digests.get(file_digest(path)) for path in paths}
    return {path: number for path, number in found.items() if number is not None}


def fold_moves(paths: list[str], arrivals: dict[int, dict], train_shards: int,
               folds: int) -> dict[str, Verdict]:
    """Files holding a patient whom an earlier arrival placed in another fold: refused, or
    the patient would train in one span and gate the model in the next."""
    seen = {patient: (number, index) for number, record in arrivals.items()
            for patient, index in record["patients"].items()}
    verdicts = {}
    for path in paths:
        index = int(SHARD_RE.match(os.path.basename(path))["index"])
        fold = fold_of(index, train_shards, folds)
        for patient in sorted(file_patients(path)):
            number, earlier = seen.get(str(patient), (None, index))
            if fold_of(earlier, train_shards, folds) != fold:
                verdicts[path] = Verdict(path, (
                    f"patient {patient} is in fold {fold} here but in fold "
                    f"{fold_of(earlier, train_shards, folds)} (train{earlier:02d}) in arrival "
                    f"{number}: one patient's images stay in one fold",))
                break
    return verdicts


def quarantine(verdicts: list[Verdict], quarantine_root: str) -> str:
    """Moves rejected files into a new folder with a report of why; returns the folder."""
    folder = os.path.join(quarantine_root, time.strftime("%Y%m%d-%H%M%S"))
    suffix = 1
    while os.path.exists(folder):  # never mix two batches
        suffix += 1
        folder = os.path.join(quarantine_root, f"{time.strftime('%Y%m%d-%H%M%S')}-{suffix}")
    os.makedirs(folder)
    for verdict in verdicts:
        move_file(verdict.path, os.path.join(folder, os.path.basename(verdict.path)))
    with open(os.path.join(folder, QUARANTINE_REPORT), "w") as f:
        json.dump({"files": {os.path.basename(v.path): list(v.problems) for v in verdicts}},
                  f, indent=2)
    return folder

