"""The Pusher's executor, made idempotent: a model already serving is not copied again.

TFX's filesystem Pusher copies every blessed model it sees into a new timestamped version.
When a rerun meets a model that is already serving (the same Trainer output, re-evaluated
because the resolver now offers it as its own baseline), this executor records the version
that holds it instead of adding a duplicate.
"""

from __future__ import annotations

import json
import os

from tfx.components.pusher import executor as pusher_executor
from tfx.dsl.io import fileio
from tfx.proto import pusher_pb2
from tfx.types import artifact_utils, standard_component_specs
from tfx.utils import proto_utils

SOURCE_FILE = "medtfx-source.json"  # beside saved_model.pb; TF Serving ignores it


def serving_versions(base_directory: str) -> list[str]:
    """Version directories in TF Serving's layout, oldest first."""
    if not fileio.exists(base_directory):
        return []
    names = [n.rstrip("/") for n in fileio.listdir(base_directory)]
    return sorted((n for n in names if n.isdigit()), key=int)


def version_holding(base_directory: str, model_path: str) -> str | None:
    for version in reversed(serving_versions(base_directory)):
        source = os.path.join(base_directory, version, SOURCE_FILE)
        if fileio.exists(source):
            with fileio.open(source) as f:
                if json.load(f).get("model") == model_path:
                    return version
    return None


class Executor(pusher_executor.Executor):
    def Do(self, input_dict, output_dict, exec_properties) -> None:
        pushed = artifact_utils.get_single_instance(
            output_dict[standard_component_specs.PUSHED_MODEL_KEY])
        destination = proto_utils.json_to_proto(
            exec_properties[standard_component_specs.PUSH_DESTINATION_KEY],
            pusher_pb2.PushDestination())
        base = destination.filesystem.base_directory
        if self.CheckBlessing(input_dict):
            model_path = self.GetModelPath(input_dict)
            version = version_holding(base, model_path)
            if version is not None:
                self._MarkPushed(pushed, pushed_destination=os.path.join(base, version),
                                 pushed_version=version)
                return
        super().Do(input_dict, output_dict, exec_properties)
        if pushed.get_int_custom_property("pushed") == 1:
            serving_path = pushed.get_string_custom_property("pushed_destination")
            with fileio.open(os.path.join(serving_path, SOURCE_FILE), "w") as f:
                json.dump({"model": self.GetModelPath(input_dict)}, f)
