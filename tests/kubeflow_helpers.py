"""Helpers for the Kubeflow tests: settings to compile with, and a stand-in for the part of
a Kubeflow / Vertex AI launcher that turns a compiled task into a container command."""

from __future__ import annotations

import json
import os
import subprocess

# What `medtfx compile-kfp` needs beyond the default config, as --set overrides.
KUBEFLOW_SET = [
    "kubeflow.image=registry.example/medtfx:test",
    "kubeflow.pipeline_root=gs://medtfx-test/root",
    "kubeflow.data_root=gs://medtfx-test/melanoma-512",
    "kubeflow.serving_dir=gs://medtfx-test/serving",
]


def set_args(overrides: list[str]) -> list[str]:
    return [arg for override in overrides for arg in ("--set", override)]


class LocalLauncher:
    """Runs compiled tasks the way a launcher does: resolves each task's parameters and
    input artifacts from the spec, passes the ExecutorInput as `{{$}}`, and runs the
    container's command and args as they are, `python` being the interpreter in
    `python_dir`. Artifacts live under `root`; outputs feed the tasks run after."""

    def __init__(self, spec: dict, root: str, parameter_values: dict, python_dir: str,
                 cwd: str):
        self.spec = spec
        self.root = root
        self.parameter_values = parameter_values
        self.env = {**os.environ, "PATH": python_dir + os.pathsep + os.environ["PATH"]}
        self.cwd = cwd
        self.outputs: dict[str, dict[str, dict]] = {}  # task: output key: artifact

    def container(self, task: str) -> dict:
        label = self.spec["components"][self._component(task)]["executorLabel"]
        return self.spec["deploymentSpec"]["executors"][label]["container"]

    def run(self, task: str) -> dict[str, dict]:
        """Runs the task's driver hook, if any, then its executor; returns its outputs."""
        executor_input = json.dumps(self.executor_input(task))
        container = self.container(task)
        commands = [container["command"] + container["args"]]
        if "lifecycle" in container:  # a file-based ExampleGen's driver: span, fingerprint
            hook = container["lifecycle"]["preCacheCheck"]
            commands.insert(0, hook["command"] + hook["args"])
        for command in commands:
            argv = [executor_input if arg == "{{$}}" else arg for arg in command]
            unresolved = [arg for arg in argv if "{{$" in arg and arg != executor_input]
            assert not unresolved, f"{task}: placeholders this launcher cannot fill: {unresolved}"
            done = subprocess.run(argv, env=self.env, cwd=self.cwd, capture_output=True,
                                  text=True, timeout=900)
            if done.returncode:
                raise TaskFailed(task, done.stderr)
        with open(self._output_file(task)) as f:
            produced = json.load(f).get("artifacts", {})
        definitions = self._output_definitions(task)
        self.outputs[task] = {
            key: {**produced[key]["artifacts"][0], "type": definitions[key]["artifactType"]}
            for key in definitions}
        return self.outputs[task]

    def executor_input(self, task: str) -> dict:
        spec = self.spec["root"]["dag"]["tasks"][task]["inputs"]
        declared = self.spec["root"]["inputDefinitions"]["parameters"]
        parameters = {}
        for name, source in spec.get("parameters", {}).items():
            if "componentInputParameter" in source:
                parameter = source["componentInputParameter"]
                parameters[name] = self.parameter_values.get(
                    parameter, declared[parameter]["defaultValue"])
            else:
                parameters[name] = source["runtimeValue"]["constant"]
        artifacts = {
            name: {"artifacts": [self.outputs[source["taskOutputArtifact"]["producerTask"]][
                source["taskOutputArtifact"]["outputArtifactKey"]]]}
            for name, source in spec.get("artifacts", {}).items()}
        outputs = {
            key: {"artifacts": [{"name": f"{task}.{key}", "uri": os.path.join(self.root, task, key),
                                 "type": definition["artifactType"], "metadata": {}}]}
            for key, definition in self._output_definitions(task).items()}
        return {"inputs": {"parameterValues": parameters, "artifacts": artifacts},
                "outputs": {"artifacts": outputs, "outputFile": self._output_file(task)}}

    def _component(self, task: str) -> str:
        return self.spec["root"]["dag"]["tasks"][task]["componentRef"]["name"]

    def _output_definitions(self, task: str) -> dict:
        definition = self.spec["components"][self._component(task)]
        return definition.get("outputDefinitions", {}).get("artifacts", {})

    def _output_file(self, task: str) -> str:
        return os.path.join(self.root, task, "executor_output.json")


class TaskFailed(Exception):
    def __init__(self, task: str, stderr: str):
        self.stderr = stderr
        super().__init__(f"{task} failed:\n{stderr[-3000:]}")
