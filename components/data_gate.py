"""DataGate: stops the pipeline when ExampleValidator found anomalies.

ExampleValidator records anomalies but lets every downstream component run; a screening
model must not be trained on data that breaks its schema. The gate fails with one line per
anomaly, naming the split (which is the shard) and the feature.
"""

import os

import tensorflow as tf
from tensorflow_metadata.proto.v0 import anomalies_pb2
from tfx.dsl.component.experimental.annotations import InputArtifact, Parameter
from tfx.dsl.component.experimental.decorators import component
from tfx.types import artifact_utils, standard_artifacts

from modules.errors import MedtfxError

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


class DataAnomaliesError(MedtfxError):
    """The data breaks the curated schema; training on it is refused."""


@component
def DataGate(anomalies: InputArtifact[standard_artifacts.ExampleAnomalies],
             code: Parameter[str] = "") -> None:
    """`code`: the fingerprint of this gate's code (pipeline/fingerprint.py), for the cache."""
    splits = artifact_utils.decode_split_names(anomalies.split_names)
    problems = describe_anomalies(anomalies.uri, splits)
    if problems:
        raise DataAnomaliesError("data anomalies against the schema: " + "; ".join(problems))
