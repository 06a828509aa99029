"""TFRecord files opened as TF's, tfx-bsl's and Beam's readers open them: compressed or not
by their name. ImportExampleGen writes its splits uncompressed (JPEG bytes do not shrink);
BulkInferrer writes its PredictionLogs gzipped (`.gz`)."""

from __future__ import annotations

import tensorflow as tf

GZIP_SUFFIX = ".gz"


def compression_type(files: list[str]) -> str:
    """"GZIP" when every file ends in .gz, "" when none does. A mix cannot be one dataset."""
    gzipped = {f.endswith(GZIP_SUFFIX) for f in files}
    if len(gzipped) > 1:
        raise ValueError(f"some of these TFRecord files are gzipped and some not: {files}")
    return "GZIP" if gzipped == {True} else ""


def record_dataset(files: list[str], num_parallel_reads: int | None = None) -> tf.data.Dataset:
    """The serialized records of `files`, in file order unless read in parallel."""
    return tf.data.TFRecordDataset(files, compression_type(files),
                                   num_parallel_reads=num_parallel_reads)
