"""DataGate: stops the pipeline when ExampleValidator found anomalies.

ExampleValidator records anomalies but lets every downstream component run; a screening
model must not be trained on data that breaks its schema. The gate fails with one line per
anomaly, naming the split (which is the shard) and the feature.
"""

from tfx.dsl.component.experimental.annotations import InputArtifact, Parameter
from tfx.dsl.component.experimental.decorators import component
from tfx.types import artifact_utils, standard_artifacts

from modules.errors import MedtfxError
from pipeline.results.anomalies import describe_anomalies

class DataAnomaliesError(MedtfxError):
    """The data breaks the curated schema; training on it is refused."""


@component
def DataGate(anomalies: InputArtifact[standard_artifacts.ExampleAnomalies],
             code: Parameter[str] = "") -> None:
    """`code`: the fingerprint of this gate's code (pipeline/core/fingerprint.py), for the cache."""
    splits = artifact_utils.decode_split_names(anomalies.split_names)
    problems = describe_anomalies(anomalies.uri, splits)
    if problems:
        raise DataAnomaliesError("data anomalies against the schema: " + "; ".join(problems))
