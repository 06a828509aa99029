"""The anomalies ExampleValidator found, one line each: for the DataGate, which stops a run
on them, and for the report, which lists them."""

from __future__ import annotations

import os

import tensorflow as tf
from tensorflow_metadata.proto.v0 import anomalies_pb2

ANOMALIES_FILE = "SchemaDiff.pb"


def describe_anomalies(anomalies_uri: str, splits: list[str]) -> list[str]:
    """'split: feature: description' for every anomaly ExampleValidator wrote."""
    problems = []
    for split in splits:
        path = os.path.join(anomalies_uri, f"Split-{split}", ANOMALIES_FILE)
        with tf.io.gfile.GFile(path, "rb") as f:
            anomalies = anomalies_pb2.Anomalies.FromString(f.read())
        for feature, info in sorted(anomalies.anomaly_info.items()):
            problems.append(f"{split}: {feature}: {info.description or info.short_description}")
        if anomalies.HasField("dataset_anomaly_info"):
            problems.append(f"{split}: {anomalies.dataset_anomaly_info.description}")
    return problems
