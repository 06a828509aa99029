"""ServingExampleValidator: ExampleValidator for unlabelled examples (the test shards).

TFX's ExampleValidator checks every feature of the schema, so a split without the label
would report the label as dropped; leaving such splits out (`exclude_splits`) would check
nothing of them at all. This one validates in the schema's SERVING environment, where the
curated schemas mark the label (and other training-only features) absent: the test shards'
image, name and metadata are held to the same domains as the training data's. Its spec is
ExampleValidator's with the code fingerprint (pipeline/core/fingerprint.py) as a property, so an
edit of this executor reruns it.
"""

from __future__ import annotations

import os

import tensorflow_data_validation as tfdv
from tensorflow_metadata.proto.v0 import anomalies_pb2
from tfx import types
from tfx.components.example_validator import executor as tfx_executor
from tfx.components.example_validator import labels
from tfx.components.util import value_utils
from tfx.dsl.components.base import base_component, executor_spec
from tfx.types import standard_artifacts, standard_component_specs
from tfx.types.component_spec import ExecutionParameter
from tfx.utils import writer_utils

from pipeline.results.anomalies import ANOMALIES_FILE

SERVING = "SERVING"


class Executor(tfx_executor.Executor):
    """TFX's executor, validating each split in the SERVING environment."""

    def _Validate(self, inputs: dict, outputs: dict) -> anomalies_pb2.Anomalies:
        anomalies = tfdv.validate_statistics(
            statistics=value_utils.GetSoleValue(inputs, standard_component_specs.STATISTICS_KEY),
            schema=value_utils.GetSoleValue(inputs, standard_component_specs.SCHEMA_KEY),
            environment=SERVING)
        writer_utils.write_anomalies(os.path.join(
            value_utils.GetSoleValue(outputs, labels.SCHEMA_DIFF_PATH), ANOMALIES_FILE),
            anomalies)
        return anomalies


class ServingExampleValidatorSpec(standard_component_specs.ExampleValidatorSpec):
    """TFX's ExampleValidator spec, with the code fingerprint."""
    PARAMETERS = {**standard_component_specs.ExampleValidatorSpec.PARAMETERS,
                  "code": ExecutionParameter(type=str)}


class ServingExampleValidator(base_component.BaseComponent):
    """ExampleValidator's inputs, outputs and anomalies files, in the SERVING environment.

    `code`: the fingerprint of this executor's code (pipeline/core/fingerprint.py)."""
    SPEC_CLASS = ServingExampleValidatorSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(Executor)

    def __init__(self, statistics: types.BaseChannel, schema: types.BaseChannel, code: str):
        super().__init__(spec=ServingExampleValidatorSpec(
            statistics=statistics, schema=schema, exclude_splits="[]", code=code,
            anomalies=types.Channel(type=standard_artifacts.ExampleAnomalies)))
