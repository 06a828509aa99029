"""BulkInferrer: TFX's BulkInferrer with a bound on the examples of one model call.

TFX's executor leaves batching to Beam, which grows batches while they stay under ten
seconds, up to 10,000 examples: on an accelerator that is 3 GB of 512 px pixels before the
network, and more than the serving signature takes (limits.batch). Here the executor asks
for batches of at most `max_batch`; everything else (the blessing check, reading the
splits named in `data_spec`, the PredictionLog files) is TFX's.
"""

from __future__ import annotations

from tfx import types
from tfx.components.bulk_inferrer import executor as tfx_executor
from tfx.dsl.components.base import base_beam_component, executor_spec
from tfx.proto import bulk_inferrer_pb2
from tfx.types import standard_artifacts, standard_component_specs
from tfx.types.component_spec import ExecutionParameter
from tfx_bsl.public.proto import model_spec_pb2

MAX_BATCH_KEY = "max_batch"


class BulkInferrerSpec(standard_component_specs.BulkInferrerSpec):
    """TFX's BulkInferrer spec, with the batch bound and the code fingerprint."""
    PARAMETERS = {**standard_component_specs.BulkInferrerSpec.PARAMETERS,
                  MAX_BATCH_KEY: ExecutionParameter(type=int),
                  "code": ExecutionParameter(type=str)}


class Executor(tfx_executor.Executor):
    """TFX's executor; the inference spec carries Beam's batch bound."""

    def _get_inference_spec(self, model_path: str,
                            exec_properties: dict) -> model_spec_pb2.InferenceSpecType:
        spec = super()._get_inference_spec(model_path, exec_properties)
        spec.batch_parameters.max_batch_size = exec_properties[MAX_BATCH_KEY]
        return spec


class BulkInferrer(base_beam_component.BaseBeamComponent):
    """PredictionLogs (`inference_result`) of the `data_spec` splits, from a blessed model.

    `code`: the fingerprint of this executor's code (pipeline/core/fingerprint.py)."""
    SPEC_CLASS = BulkInferrerSpec
    EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(Executor)

    def __init__(self, examples: types.BaseChannel, model: types.BaseChannel,
                 model_blessing: types.BaseChannel, data_spec: bulk_inferrer_pb2.DataSpec,
                 model_spec: bulk_inferrer_pb2.ModelSpec, max_batch: int, code: str):
        super().__init__(spec=BulkInferrerSpec(
            examples=examples, model=model, model_blessing=model_blessing,
            data_spec=data_spec, model_spec=model_spec, max_batch=max_batch, code=code,
            inference_result=types.Channel(type=standard_artifacts.InferenceResult)))
