"""StatisticsGen's output, read back per split: examples, and per feature what is missing and
which values occur (for the report's data section and the model card)."""

from __future__ import annotations

import dataclasses
import os

import tensorflow as tf
from tensorflow_metadata.proto.v0 import statistics_pb2


STATS_FILE = "FeatureStats.pb"


@dataclasses.dataclass
class FeatureSummary:
    missing: int
    kind: str  # "numeric", "categorical" or "bytes"
    values: dict[str, int] = dataclasses.field(default_factory=dict)  # categorical counts
    low: float | None = None  # numeric range and mean; bytes: sizes
    mean: float | None = None
    high: float | None = None


@dataclasses.dataclass
class SplitStats:
    examples: int
    features: dict[str, FeatureSummary]

    def positives(self, label_key: str, code: int = 1) -> int:
        """Examples of class `code`: by default 1, the positive class of a binary task."""
        label = self.features.get(label_key)
        return label.values.get(str(code), 0) if label else 0


def _summary(feature: statistics_pb2.FeatureNameStatistics) -> FeatureSummary:
    kind = feature.WhichOneof("stats")
    if kind == "num_stats":
        s = feature.num_stats
        return FeatureSummary(s.common_stats.num_missing, "numeric", low=s.min, mean=s.mean,
                              high=s.max)
    if kind == "bytes_stats":
        s = feature.bytes_stats
        return FeatureSummary(s.common_stats.num_missing, "bytes", low=s.min_num_bytes,
                              mean=s.avg_num_bytes, high=s.max_num_bytes)
    s = feature.string_stats
    return FeatureSummary(s.common_stats.num_missing, "categorical",
                          values={v.value: int(v.frequency) for v in s.top_values})


def load_statistics(statistics_uri: str, splits: list[str]) -> dict[str, SplitStats]:
    result = {}
    for split in splits:
        path = os.path.join(statistics_uri, f"Split-{split}", STATS_FILE)
        with tf.io.gfile.GFile(path, "rb") as f:
            dataset = statistics_pb2.DatasetFeatureStatisticsList.FromString(f.read()).datasets[0]
        result[split] = SplitStats(dataset.num_examples,
                                   {".".join(f.path.step): _summary(f) for f in dataset.features})
    return result
