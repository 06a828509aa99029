"""Statistics of several named collections of record files in one TFDV pass, each
collection's name its slice key: StatisticsGen's splits (components/statistics_gen.py) and
`medtfx retrain`'s incoming files (pipeline/data/incoming.py). The records are read inside
the graph's first stage, from the file names, so the DirectRunner never holds them all.
"""

from __future__ import annotations

import apache_beam as beam
import tensorflow_data_validation as tfdv
from tensorflow_data_validation.statistics import stats_impl
from tensorflow_metadata.proto.v0 import statistics_pb2
from tfx_bsl.coders import example_coder

from modules.records import record_dataset

BATCH = 64  # records decoded together: bounds the memory of a batch at any image size


class _RecordBatches(beam.DoFn):
    """(split, file) -> (split, Arrow record batch) for every BATCH records of the file,
    decoded as tfx-bsl decodes tf.Examples without a schema (as StatisticsGen's reader)."""

    def setup(self):
        self._decoder = example_coder.ExamplesToRecordBatchDecoder()

    def process(self, split_file: tuple[str, str]):
        split, path = split_file
        for records in record_dataset([path]).batch(BATCH).as_numpy_iterator():
            yield split, self._decoder.DecodeBatch(list(records))


class GenerateStatisticsByName(beam.PTransform):
    """Statistics of the record files of several named collections in one TFDV pass: the
    sliced half of tfdv.GenerateStatistics, with each collection's name as its slice key.
    Gives one DatasetFeatureStatisticsList with a dataset per non-empty collection."""

    def __init__(self, options: tfdv.StatsOptions):
        super().__init__()
        self._options = options

    def expand(self, files: beam.PCollection) -> beam.PCollection:
        return (files
                | "Read" >> beam.ParDo(_RecordBatches())
                | "Statistics" >> stats_impl.GenerateSlicedStatisticsImpl(
                    self._options, is_slicing_enabled=True))


def by_name(statistics: statistics_pb2.DatasetFeatureStatisticsList,
            names: list[str]) -> dict[str, statistics_pb2.DatasetFeatureStatisticsList]:
    """Each collection's statistics as TFDV computes them for it alone (a collection
    without records has no slice: it gets the empty statistics TFDV gives an empty file)."""
    found = {dataset.name: dataset for dataset in statistics.datasets}
    result = {}
    for name in names:
        dataset = statistics_pb2.DatasetFeatureStatistics()
        if name in found:
            dataset.CopyFrom(found[name])
            dataset.ClearField("name")
        result[name] = statistics_pb2.DatasetFeatureStatisticsList(datasets=[dataset])
    return result
