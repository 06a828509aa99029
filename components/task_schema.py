"""TaskSchema: the curated schema, with the label's domain set from the task's classes.

The curated file (schema/<task>.pbtxt) says what every feature of the records looks like;
the label's range is the one thing a label map changes (DDSM's five classes, its four
abnormal ones, normal vs abnormal), so it is taken from the task rather than from one
file per map. Everything else is the file as curated; a file without the label feature is
refused, since ExampleValidator would then never check it.
"""

import os

from google.protobuf import text_format
from tensorflow_metadata.proto.v0 import schema_pb2
from tfx.dsl.component.experimental.annotations import OutputArtifact, Parameter
from tfx.dsl.component.experimental.decorators import component
from tfx.dsl.io import fileio
from tfx.types import standard_artifacts

from modules.errors import MedtfxError

SCHEMA_FILE = "schema.pbtxt"  # the name TFX's own schema components write


class SchemaError(MedtfxError):
    """The curated schema does not fit the task."""


def task_schema(schema_file: str, label_key: str, classes: int) -> schema_pb2.Schema:
    """The schema in `schema_file` with `label_key` an int code in [0, classes - 1]."""
    with fileio.open(schema_file) as f:
        schema = text_format.Parse(f.read(), schema_pb2.Schema())
    labels = [feature for feature in schema.feature if feature.name == label_key]
    if not labels:
        raise SchemaError(f"{schema_file}: no feature {label_key!r}, the task's label")
    domain = labels[0].int_domain
    domain.min, domain.max, domain.is_categorical = 0, classes - 1, True
    return schema


@component
def TaskSchema(schema: OutputArtifact[standard_artifacts.Schema], schema_file: Parameter[str],
               label_key: Parameter[str], classes: Parameter[int],
               code: Parameter[str] = "") -> None:
    """`code`: the fingerprint of this component's code (pipeline/core/fingerprint.py)."""
    fileio.makedirs(schema.uri)  # Kubeflow's launcher leaves creating it to the executor
    with fileio.open(os.path.join(schema.uri, SCHEMA_FILE), "w") as f:
        f.write(text_format.MessageToString(task_schema(schema_file, label_key, classes)))
