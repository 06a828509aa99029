"""Helpers for the Kubeflow tests: settings to compile with, and a stand-in for what a
Kubeflow Pipelines or Vertex AI backend does with a compiled PipelineSpec: run its tasks in
dependency order, answer its resolver queries from the artifacts of earlier runs, reuse a
cached task's outputs, and launch each container task with its command and an ExecutorInput."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess

import yaml

from tests.helpers import BLESS_ANY, FAST_RUN, REPO, portable_settings

# What `medtfx compile-kfp` needs beyond the default config, as --set overrides.
BUCKET = "gs://medtfx-test"
KUBEFLOW_SET = [
    "kubeflow.image=registry.example/medtfx:test",
    f"kubeflow.pipeline_root={BUCKET}/root",
    f"kubeflow.data_root={BUCKET}/melanoma-512",
    f"kubeflow.serving_dir={BUCKET}/serving",
]
# What the task-by-task runs add: resources to check in the spec, slices by the release's
# metadata, and the test shards' scoring.
RESOURCES = "kubeflow.resources={Trainer: {cpu: 2, memory: 8Gi}, Transform: {cpu: 1}}"
SLICES = "slices=[[sex], [source], [sex, anatom_site_general_challenge]]"
# A resolver's filter: clauses joined by AND, each `key=value` (the value maybe quoted).
CLAUSE_RE = re.compile(r'\s*([\w.]+)=("([^"]*)"|\S+)\s*')
INPUT_METADATA_RE = re.compile(r"\{\{\$\.inputs\.artifacts\['(\w+)'\]\.metadata\['(\w+)'\]\}\}")


def set_args(overrides: list[str]) -> list[str]:
    return [arg for override in overrides for arg in ("--set", override)]


def compiled(job_endpoint: str, path: str, *overrides: str) -> dict:
    """The spec as `medtfx compile-kfp` writes it for a quick run on this machine (this
    checkout as the image's project, Beam on the job service at `job_endpoint`), read
    back as a launcher reads it."""
    from pipeline.config import load_config
    from pipeline.kubeflow_runner import compile_pipeline

    settings = [arg for arg in FAST_RUN + BLESS_ANY if arg != "--set"]
    config = load_config(None, [*KUBEFLOW_SET, f"kubeflow.project_dir={REPO}", RESOURCES,
                                SLICES, "scoring.test_shards=true", *settings,
                                *portable_settings(job_endpoint), *overrides])
    compile_pipeline(config, path)
    with open(path) as f:
        return yaml.safe_load(f)


class LocalBackend:
    """Runs compiled pipelines on this machine. Artifacts of every run live under `root`;
    `bucket` (a local folder) stands in for gs://medtfx-test wherever a task's parameters
    name it; `python_dir` holds the `python` the containers' commands call. Runs share one
    artifact store (a resolver sees what earlier runs produced) and one task cache."""

    def __init__(self, root: str, bucket: str, python_dir: str):
        self.root = root
        self.bucket = bucket
        self.env = {**os.environ, "PATH": python_dir + os.pathsep + os.environ["PATH"]}
        self.store: list[dict] = []  # every artifact produced, oldest first
        self.cache: dict[str, dict] = {}  # cache key: the task's outputs
        self.runs = 0

    def submit(self, spec: dict, parameter_values: dict) -> Run:
        """Runs every task of `spec`, upstream first; the run's `executed` lists the tasks
        that ran (not cached), in order. Raises TaskFailed at the first failed task."""
        self.runs += 1
        run = Run(self, spec, parameter_values, f"run{self.runs}")
        for task in run.order():
            run.run(task)
        return run

    def local(self, text: str) -> str:
        return text.replace(BUCKET, self.bucket)


class Run:
    """One run of a compiled pipeline: its tasks' outputs, by task and output key."""

    def __init__(self, backend: LocalBackend, spec: dict, parameter_values: dict, name: str):
        self.backend = backend
        self.spec = spec
        self.parameter_values = parameter_values
        self.name = name
        self.root = os.path.join(backend.root, name)
        self.outputs: dict[str, dict[str, list[dict]]] = {}
        self.executed: list[str] = []
        self.logs: dict[str, str] = {}  # task: what its container printed to stderr

    @property
    def tasks(self) -> dict:
        return self.spec["root"]["dag"]["tasks"]

    def order(self, until: str | None = None) -> list[str]:
        """The tasks in an order where each comes after every task it depends on (its
        dependentTasks and the producers of its input artifacts); with `until`, only that
        task and the tasks it needs."""
        upstream = {task: set(spec.get("dependentTasks", [])) | {
            source["taskOutputArtifact"]["producerTask"]
            for source in spec.get("inputs", {}).get("artifacts", {}).values()}
            for task, spec in self.tasks.items()}
        if until is not None:
            needed, new = set(), {until}
            while new:
                needed |= new
                new = set().union(*(upstream[t] for t in new)) - needed
            upstream = {t: deps for t, deps in upstream.items() if t in needed}
        ordered: list[str] = []
        while len(ordered) < len(upstream):
            ready = sorted(t for t, deps in upstream.items()
                           if t not in ordered and deps <= set(ordered))
            assert ready, f"the spec's tasks form a cycle: {set(upstream) - set(ordered)}"
            ordered.extend(ready)
        return ordered

    def executor(self, task: str) -> dict:
        label = self.spec["components"][self._component(task)]["executorLabel"]
        return self.spec["deploymentSpec"]["executors"][label]

    def container(self, task: str) -> dict:
        return self.executor(task)["container"]

    def run(self, task: str, inputs: dict | None = None) -> dict[str, list[dict]]:
        """Runs one task (a resolver's queries, or its container: the driver hook if any,
        then the executor), or takes its outputs from the cache; returns them. `inputs`
        replaces input artifacts by name."""
        executor = self.executor(task)
        if "resolver" in executor:
            self.outputs[task] = self._resolve(task, executor["resolver"])
            return self.outputs[task]
        executor_input = self.executor_input(task, inputs or {})
        container = executor["container"]
        if "lifecycle" in container:  # a file-based ExampleGen's driver: span, fingerprint
            hook = container["lifecycle"]["preCacheCheck"]
            self._launch(task, hook["command"] + hook["args"], executor_input)
            self._take_driver_output(executor_input)
        key = self._cache_key(container, executor_input)
        cached = self.backend.cache.get(key) if self._caching(task) else None
        if cached is None:
            self._launch(task, container["command"] + container["args"], executor_input)
            self.outputs[task] = self._produced(task, executor_input)
            self.backend.cache[key] = self.outputs[task]
            self.backend.store.extend(a for arts in self.outputs[task].values() for a in arts)
            self.executed.append(task)
        else:
            self.outputs[task] = cached
        return self.outputs[task]

    def executor_input(self, task: str, replaced: dict) -> dict:
        """What a launcher passes as `{{$}}`: parameter values (runtime parameters, or the
        compiled constants), input artifacts from upstream tasks, output URIs under the
        run's root, and where to write the ExecutorOutput."""
        spec = self.tasks[task].get("inputs", {})
        declared = self.spec["root"]["inputDefinitions"]["parameters"]
        parameters = {}
        for name, source in spec.get("parameters", {}).items():
            if "componentInputParameter" in source:
                parameter = source["componentInputParameter"]
                value = self.parameter_values.get(parameter, declared[parameter]["defaultValue"])
            else:
                value = source["runtimeValue"]["constant"]
            parameters[name] = json.loads(self.backend.local(json.dumps(value)))
        artifacts = {
            name: {"artifacts": replaced.get(name) or self.outputs[
                source["taskOutputArtifact"]["producerTask"]][
                source["taskOutputArtifact"]["outputArtifactKey"]]}
            for name, source in spec.get("artifacts", {}).items()}
        outputs = {
            key: {"artifacts": [{"name": f"{self.name}/{task}/{key}",
                                 "uri": os.path.join(self.root, task, key),
                                 "type": definition["artifactType"], "metadata": {}}]}
            for key, definition in self._output_definitions(task).items()}
        return {"inputs": {"parameterValues": parameters, "artifacts": artifacts},
                "outputs": {"artifacts": outputs, "outputFile": self._output_file(task)}}

    def _launch(self, task: str, command: list[str], executor_input: dict) -> None:
        serialized = json.dumps(executor_input)
        argv = [serialized if arg == "{{$}}" else self.backend.local(arg) for arg in command]
        unresolved = [arg for arg in argv if "{{$" in arg and arg != serialized]
        assert not unresolved, f"{task}: placeholders this launcher cannot fill: {unresolved}"
        os.makedirs(os.path.join(self.root, task), exist_ok=True)
        done = subprocess.run(argv, env=self.backend.env, cwd=self.root, capture_output=True,
                              text=True, timeout=900)
        self.logs[task] = self.logs.get(task, "") + done.stderr
        if done.returncode:
            log = os.path.join(self.root, task, "stderr.log")
            with open(log, "w") as f:
                f.write(done.stderr)
            raise TaskFailed(task, done.stderr, log)

    def _take_driver_output(self, executor_input: dict) -> None:
        """The driver's resolved parameters (input_config with the span, the fingerprint)
        go into the executor's input, and its output artifacts' metadata too."""
        with open(executor_input["outputs"]["outputFile"]) as f:
            driven = json.load(f)
        executor_input["inputs"]["parameterValues"].update(driven.get("parameterValues", {}))
        for key, produced in driven.get("artifacts", {}).items():
            target = executor_input["outputs"]["artifacts"][key]["artifacts"][0]
            target["metadata"].update(produced["artifacts"][0].get("metadata", {}))

    def _produced(self, task: str, executor_input: dict) -> dict[str, list[dict]]:
        """Output artifacts as the executor reported them (URI, metadata), else as given."""
        with open(self._output_file(task)) as f:
            reported = json.load(f).get("artifacts", {})
        produced = {}
        for key, given in executor_input["outputs"]["artifacts"].items():
            artifact = {**given["artifacts"][0],
                        **(reported.get(key, {}).get("artifacts") or [{}])[0]}
            artifact["type"] = given["artifacts"][0]["type"]
            produced[key] = [artifact]
        return produced

    def _resolve(self, task: str, resolver: dict) -> dict[str, list[dict]]:
        """An artifact query: the newest artifact in the store that every clause of the
        filter matches, or none."""
        inputs = self.executor_input(task, {})["inputs"]["artifacts"]
        resolved = {}
        for key, query in resolver["outputArtifactQueries"].items():
            def input_metadata(match: re.Match) -> str:
                found = inputs[match[1]]["artifacts"]
                return str(found[0]["metadata"].get(match[2], "")) if found else ""

            clauses = {m[1]: m[3] if m[3] is not None else m[2] for m in CLAUSE_RE.finditer(
                INPUT_METADATA_RE.sub(input_metadata, query["filter"]).replace(" AND ", " "))}
            if clauses.get("name") == "":  # the query's input resolved to nothing
                resolved[key] = []
                continue
            matching = [a for a in self.backend.store if _matches(a, clauses)]
            resolved[key] = matching[-1:]
        return resolved

    def _caching(self, task: str) -> bool:
        return self.tasks[task].get("cachingOptions", {}).get("enableCache", False)

    @staticmethod
    def _cache_key(container: dict, executor_input: dict) -> str:
        """As KFP keys its cache: the container and the inputs (parameters, and the input
        artifacts by name), not where the outputs go."""
        inputs = executor_input["inputs"]
        key = {"container": {k: container[k] for k in ("image", "command", "args")},
               "parameters": inputs["parameterValues"],
               "artifacts": {name: [a["name"] for a in given["artifacts"]]
                             for name, given in inputs["artifacts"].items()}}
        return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()

    def _component(self, task: str) -> str:
        return self.tasks[task]["componentRef"]["name"]

    def _output_definitions(self, task: str) -> dict:
        definition = self.spec["components"][self._component(task)]
        return definition.get("outputDefinitions", {}).get("artifacts", {})

    def _output_file(self, task: str) -> str:
        return os.path.join(self.root, task, "executor_output.json")


def _title(artifact: dict) -> str:
    kind = artifact["type"]
    return kind.get("schemaTitle") or re.search(r"title: (\S+)", kind["instanceSchema"])[1]


def _matches(artifact: dict, clauses: dict[str, str]) -> bool:
    for field, value in clauses.items():
        if field == "schema_title" and _title(artifact) != value:
            return False
        if field == "name" and artifact["name"] != value:
            return False
        if field.startswith("metadata.") and field.endswith(".number_value"):
            got = artifact["metadata"].get(field[len("metadata."):-len(".number_value")])
            if got is None or float(got) != float(value):
                return False
        if field == "state" and value != "LIVE":  # nothing here is ever marked deleted
            return False
    return True


class TaskFailed(Exception):
    def __init__(self, task: str, stderr: str, log: str):
        self.task = task
        self.stderr = stderr
        crash = stderr.find("Fatal Python error")  # a crash's thread dump ends in module lists
        shown = stderr[crash:crash + 3000] if crash >= 0 else stderr[-3000:]
        super().__init__(f"{task} failed (all it printed: {log}):\n{shown}")
