"""ServingExampleValidator: ExampleValidator for unlabelled examples (the test shards).

TFX's ExampleValidator checks every feature of the schema, so a split without the label
would report the label as dropped; leaving such splits out (`exclude_splits`) would check
nothing of them at all. This one validates in the schema's SERVING environment, where the
curated schemas mark the label (and other training-only features) absent: the test shards'
image, name and metadata are held to the same domains as the training data's.
"""

from __future__ import annotations

import os

import tensorflow_data_validation as tfdv
from tensorflow_metadata.proto.v0 import anomalies_pb2
from tfx.components import ExampleValidator
from tfx.components.example_validator import executor as tfx_executor
from tfx.components.example_validator import labels
from tfx.components.util import value_utils
from tfx.dsl.components.base import executor_spec
from tfx.types import standard_component_specs
from tfx.utils import writer_utils

from components.data_gate import ANOMALIES_FILE

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


class ServingExampleValidator(ExampleValidator):
    """ExampleValidator's inputs, outputs and anomalies files, in the SERVING environment."""
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(Executor)
