"""The Pusher's executor: atomic (pipeline/serving/directory.py publish), idempotent (the
model that already serves is not copied again) and tidy (only the newest `keep_versions`
versions medtfx pushed stay).

TFX's filesystem Pusher copies every blessed model it sees straight into BASE/<time>: a
push that dies half way leaves a version TF Serving may load, and two pushes in a second
share a number. A rerun re-evaluates the same trained model (the resolver now offers it as
its own baseline) and packages it again with the same threshold; when that exact model is
the highest version, the push records it instead of adding a duplicate. The model is not
archived a second time in the PushedModel artifact: the version is the record. A model that
ModelPackager did not package (it failed the load check) is not pushed, blessed or not.
"""

from __future__ import annotations

import json
import os

from tfx.components.pusher import executor as pusher_executor
from tfx.proto import pusher_pb2
from tfx.types import artifact_utils, standard_component_specs
from tfx.utils import proto_utils

from pipeline.serving.directory import prune, publish, serving_now


def _base_directory(exec_properties: dict) -> str:
    destination = proto_utils.json_to_proto(
        exec_properties[standard_component_specs.PUSH_DESTINATION_KEY],
        pusher_pb2.PushDestination())
    return destination.filesystem.base_directory


class Executor(pusher_executor.Executor):
    def Do(self, input_dict, output_dict, exec_properties) -> None:
        self._log_startup(input_dict, output_dict, exec_properties)
        pushed = artifact_utils.get_single_instance(
            output_dict[standard_component_specs.PUSHED_MODEL_KEY])
        model_artifact = artifact_utils.get_single_instance(
            input_dict[standard_component_specs.MODEL_KEY])
        if (not self.CheckBlessing(input_dict)
                or model_artifact.get_int_custom_property("packaged") != 1):
            self._MarkNotPushed(pushed)
            return
        base = _base_directory(exec_properties)
        model = self.GetModelPath(input_dict)
        version = serving_now(base, model) or publish(model, base)
        self._MarkPushed(pushed, pushed_destination=os.path.join(base, version),
                         pushed_version=version)
        custom = json.loads(exec_properties.get(
            standard_component_specs.CUSTOM_CONFIG_KEY) or "null") or {}
        prune(base, custom.get("keep_versions", 5))
