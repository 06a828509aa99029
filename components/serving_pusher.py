"""The Pusher's executor, made idempotent (a package already serving is not copied again)
and tidy (only the newest `keep_versions` versions stay).

TFX's filesystem Pusher copies every blessed model it sees into a new timestamped version.
A rerun re-evaluates the same trained model (the resolver now offers it as its own
baseline) and packages it again with the same threshold; this executor finds the version
that already serves that package and records it instead of adding a duplicate.
"""

from __future__ import annotations

import json
import os

from tfx.components.pusher import executor as pusher_executor
from tfx.dsl.io import fileio
from tfx.proto import pusher_pb2
from tfx.types import artifact_utils, standard_component_specs
from tfx.utils import proto_utils

from modules.artifacts import PACKAGE_FILE
from pipeline.ops.serving_dir import prune, serving_versions


def read_package(model_dir: str) -> dict | None:
    path = os.path.join(model_dir, PACKAGE_FILE)
    if not fileio.exists(path):
        return None
    with fileio.open(path) as f:
        return json.load(f)


def version_serving(base_directory: str, package: dict) -> str | None:
    for version in reversed(serving_versions(base_directory)):
        if read_package(os.path.join(base_directory, version)) == package:
            return version
    return None


def _base_directory(exec_properties: dict) -> str:
    destination = proto_utils.json_to_proto(
        exec_properties[standard_component_specs.PUSH_DESTINATION_KEY],
        pusher_pb2.PushDestination())
    return destination.filesystem.base_directory


class Executor(pusher_executor.Executor):
    def Do(self, input_dict, output_dict, exec_properties) -> None:
        base = _base_directory(exec_properties)
        pushed = artifact_utils.get_single_instance(
            output_dict[standard_component_specs.PUSHED_MODEL_KEY])
        package = (read_package(self.GetModelPath(input_dict))
                   if self.CheckBlessing(input_dict) else None)
        version = version_serving(base, package) if package else None
        if version is not None:
            self._MarkPushed(pushed, pushed_destination=os.path.join(base, version),
                             pushed_version=version)
        else:
            super().Do(input_dict, output_dict, exec_properties)
        if pushed.get_int_custom_property("pushed") == 1:  # nothing pruned unless pushed
            custom = json.loads(exec_properties.get(
                standard_component_specs.CUSTOM_CONFIG_KEY) or "null") or {}
            prune(base, custom.get("keep_versions", 5))
