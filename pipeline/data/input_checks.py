"""Checks on the input shards before the pipeline runs.

Inside the pipeline a corrupt file or an undecodable image surfaces as a Beam or tf.data
error far from its cause; here each problem gets one line naming the file and the record.
Images are decoded with the Transform graph's own decoder. Results are cached by file size
and modification time, so a rerun only reads files that changed.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import json
import multiprocessing
import os
import re
from typing import Callable

import tensorflow as tf

from modules import features as F
from modules.errors import MedtfxError
from modules.preprocessing import decode
from modules.settings import ImageLimits
from pipeline.data.shards import DataLayoutError, Shard, list_shards
from pipeline.core.files import write_json

# Reading is worth a second process (which pays ~5 s to import TensorFlow) above this.
PARALLEL_BYTES = 200 * 2**20
LIMIT_FAILURE = "assertion failed: ["  # how TF words a failed check of modules/preprocessing


class InputError(MedtfxError):
    """Input data the pipeline cannot use; the message names the file and record."""


@dataclasses.dataclass(frozen=True)
class DataSummary:
    data_root: str
    shards: tuple[Shard, ...]

    @property
    def examples(self) -> int:
        return sum(s.count for s in self.shards)


def check_data_root(data_root: str, train_shards: int, limits: ImageLimits,
                    cache_file: str | None = None, workers: int | None = None) -> DataSummary:
    """Raises InputError on the first problem; returns the train shards when all is well.
    Images must decode within `limits`; a cached result holds only for the same limits."""
    try:
        shards = list_shards(data_root, kind="train")
    except DataLayoutError as err:
        raise InputError(str(err)) from err
    if not shards:
        raise InputError(f"{data_root}: no train shards (trainNN-COUNT.tfrec) in the data root")
    found = [s.index for s in shards]
    if found != list(range(train_shards)):
        raise InputError(
            f"{data_root}: expected train shards train00..train{train_shards - 1:02d}, found "
            f"{', '.join(f'train{i:02d}' for i in found)} (set data.train_shards to match)")
    _check_cached(shards, limits, cache_file, workers)
    return DataSummary(data_root, tuple(shards))


def check_test_shards(data_root: str, limits: ImageLimits, cache_file: str | None = None,
                      workers: int | None = None) -> tuple[Shard, ...]:
    """The unlabelled test shards under `data_root`, checked as the train shards are: an
    image that does not decode would otherwise fail the BulkInferrer after training."""
    try:
        shards = list_shards(data_root, kind="test")
    except DataLayoutError as err:
        raise InputError(str(err)) from err
    _check_cached(shards, limits, cache_file, workers)
    return tuple(shards)


def _check_cached(shards: list[Shard], limits: ImageLimits, cache_file: str | None,
                  workers: int | None) -> None:
    """Raises InputError on the first problem among the shards not checked before."""
    cache = _load_cache(cache_file)
    stale = [s for s in shards if cache.get(s.path) != _stamp(s.path, limits)]
    for problem in _check_all(stale, limits, workers):
        if problem:
            raise InputError(problem)
    cache.update({s.path: _stamp(s.path, limits) for s in stale})
    _save_cache(cache_file, cache)


def _check_all(shards: list[Shard], limits: ImageLimits, workers: int | None):
    if workers is None:
        size = sum(tf.io.gfile.stat(s.path).length for s in shards)
        workers = min(len(shards), os.cpu_count() or 1) if size > PARALLEL_BYTES else 1
    check = functools.partial(check_shard, limits=limits)
    if workers <= 1:
        return map(check, shards)
    pool = concurrent.futures.ProcessPoolExecutor(
        workers, mp_context=multiprocessing.get_context("spawn"))
    with pool:
        return list(pool.map(check, shards))


def check_shard(shard: Shard, limits: ImageLimits) -> str | None:
    """The first problem in one shard, as a one-line message, or None."""
    records = 0
    checked_decode = image_checker(limits)
    try:
        for records, record in enumerate(tf.data.TFRecordDataset(shard.path), start=1):
            problem = _check_record(record.numpy(), checked_decode)
            if problem:
                return f"{shard.path}: record {records - 1}{problem}"
    except tf.errors.DataLossError as err:
        return (f"{shard.path}: not a readable TFRecord file (failed after {records} records: "
                f"{_tf_reason(err)})")
    if records != shard.count:
        return (f"{shard.path}: the file name says {shard.count} records but it holds "
                f"{records}")
    return None


def _check_record(record: bytes, checked_decode: Callable) -> str | None:
    try:
        example = tf.train.Example.FromString(record)
    except Exception as err:  # protobuf's DecodeError has no stable import path
        return f": not a tf.train.Example ({type(err).__name__})"
    feature = example.features.feature
    name = feature[F.IMAGE_NAME_KEY].bytes_list.value[:1] if F.IMAGE_NAME_KEY in feature else []
    where = f" ({name[0].decode(errors='replace')})" if name else ""
    if F.IMAGE_KEY not in feature or len(feature[F.IMAGE_KEY].bytes_list.value) != 1:
        return f"{where}: no '{F.IMAGE_KEY}' feature holding one encoded image"
    problem = image_problem(feature[F.IMAGE_KEY].bytes_list.value[0], checked_decode)
    return f"{where}: {problem}" if problem else None


def image_checker(limits: ImageLimits) -> Callable:
    """The Transform graph's decoder as a graph function: a failed limit reads the same
    here as in the pipeline."""
    return tf.function(lambda image: decode(image, limits),
                       input_signature=[tf.TensorSpec([], tf.string)])


def image_problem(encoded: bytes, checked_decode: Callable) -> str | None:
    """Why one encoded image cannot be used, in a few words, or None."""
    try:
        checked_decode(encoded)
    except (tf.errors.InvalidArgumentError, tf.errors.UnknownError) as err:
        reason = _tf_reason(err)
        if reason.startswith(LIMIT_FAILURE):  # the limit's own message, without TF's framing
            return reason.removeprefix(LIMIT_FAILURE).rstrip("]")
        return f"image does not decode ({reason})"
    return None


def _tf_reason(err: tf.errors.OpError) -> str:
    """'jpeg::Uncompress failed. Invalid JPEG data...' without TF's op and device names."""
    text = re.sub(r"\{\{.*?\}\}|\[Op:\w+\]", "", err.message.splitlines()[0])
    return text.strip()


def _stamp(path: str, limits: ImageLimits) -> list[int]:
    stat = tf.io.gfile.stat(path)
    return [stat.length, stat.mtime_nsec, limits.image_bytes, limits.image_pixels]


def _load_cache(cache_file: str | None) -> dict:
    if not cache_file or not os.path.exists(cache_file):
        return {}
    with open(cache_file) as f:
        return json.load(f)


def _save_cache(cache_file: str | None, cache: dict) -> None:
    if not cache_file:
        return
    write_json(cache_file, cache, indent=None)
