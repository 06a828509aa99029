"""The Pusher's executor, made idempotent: a package already serving is not copied again.

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

from components.model_packager import PACKAGE_FILE


def serving_versions(base_directory: str) -> list[str]:
    """Version directories in TF Serving's layout, oldest first."""
    if not fileio.exists(base_directory):
        return []
    names = [n.rstrip("/") for n in fileio.listdir(base_directory)]
    return sorted((n for n in names if n.isdigit()), key=int)


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


class Executor(pusher_executor.Executor):
    def Do(self, input_dict, output_dict, exec_properties) -> None:
        if self.CheckBlessing(input_dict):
            package = read_package(self.GetModelPath(input_dict))
            destination = proto_utils.json_to_proto(
                exec_properties[standard_component_specs.PUSH_DESTINATION_KEY],
                pusher_pb2.PushDestination())
            base = destination.filesystem.base_directory
            version = version_serving(base, package) if package else None
            if version is not None:
                pushed = artifact_utils.get_single_instance(
                    output_dict[standard_component_specs.PUSHED_MODEL_KEY])
                self._MarkPushed(pushed, pushed_destination=os.path.join(base, version),
                                 pushed_version=version)
                return
        super().Do(input_dict, output_dict, exec_properties)
