"""The layout's rules, checked on every file: dependencies point one way, and the cache
fingerprint of each component covers the code its executor runs."""

from __future__ import annotations

import functools
import json
import os
import shutil

import pytest

from pipeline.core.fingerprint import (code_fingerprint, imported_modules, module_file,
                                       project_closure)
from tests.helpers import FINGERPRINTED, REPO

# The layers, bottom first: a module imports only from its own layer and those below it
# (imports inside functions included), and no two modules import each other. Folders show
# them: modules/, pipeline/core/, pipeline/{data,results,serving,sample}/, components/, the
# definition and runners at pipeline/, pipeline/{ops,monitor}/, pipeline/cli/.
LAYERS = (
    ("modules",),  # model code for the Trainer, Transform and Evaluator
    ("pipeline.core", "pipeline.compat"),  # errors, files, fingerprints, console, locks
    ("pipeline.data", "pipeline.results", "pipeline.serving", "pipeline.sample"),
    ("components",),
    ("pipeline.config", "pipeline.kubeflow_config", "pipeline.eval_config",
     "pipeline.pipeline"),  # the definition
    ("pipeline.local_runner", "pipeline.kubeflow_runner", "pipeline.kubeflow_entrypoint"),
    ("pipeline.ops", "pipeline.monitor"),  # use cases: run, retrain, report, monitor
    ("pipeline.cli",),  # argparse and one call per command
)
PACKAGES = ("modules", "components", "pipeline")


def python_files(*packages: str) -> list[str]:
    return [os.path.join(folder, name) for package in packages
            for folder, _, files in os.walk(os.path.join(REPO, package))
            for name in files if name.endswith(".py")]


def module_name(path: str) -> str:
    name = os.path.relpath(path, REPO)[:-3].replace(os.sep, ".")
    return name.removesuffix(".__init__")


@functools.cache
def project_imports() -> dict[str, set[str]]:
    """For each project module, the project modules it imports anywhere in the file."""
    return {module_name(path): {n for n in imported_modules(path)
                                if n.split(".")[0] in PACKAGES}
            for path in python_files(*PACKAGES)}


def under(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def layer(module: str) -> int | None:
    """The layer of a module; the bare `pipeline` package (which only picks Keras 2) sits
    with the core."""
    if module == "pipeline":
        return 1
    return next((i for i, prefixes in enumerate(LAYERS) if under(module, prefixes)), None)


def test_every_module_belongs_to_a_layer():
    assert [m for m in project_imports() if layer(m) is None] == []


def test_no_module_imports_from_a_layer_above_its_own():
    upward = {module: sorted(n for n in names if (layer(n) or 0) > layer(module))
              for module, names in project_imports().items() if layer(module) is not None}
    assert {m: n for m, n in upward.items() if n} == {}


def test_no_two_modules_import_each_other_even_for_type_hints():
    imports = project_imports()
    graph = {module: {n for n in names if n in imports} for module, names in imports.items()}
    assert cycles(graph) == []


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The import cycles of `graph`: each strongly connected part of more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in graph[node]:
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            part = []
            while part[-1:] != [node]:
                part.append(stack.pop())
            if len(part) > 1:
                found.append(sorted(part))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_cycle_finder_finds_a_cycle_through_a_package():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]


def test_only_the_kubeflow_compiler_imports_tfx_v1():
    """`tfx.v1` loads the Vertex AI client (about 6 s); a local run or a component's
    container has no use for it."""
    users = {os.path.relpath(path, REPO) for path in python_files(*PACKAGES)
             if any(under(name, ("tfx.v1",)) for name in imported_modules(path))}
    assert users == {os.path.join("pipeline", "kubeflow_runner.py")}


def test_a_components_fingerprint_covers_the_helpers_its_executor_imports():
    files = {os.path.relpath(p, REPO) for p in project_closure(("components.model_packager",))}
    assert {os.path.join("pipeline", "results", "model_card.py"),
            os.path.join("pipeline", "results", "eval_results.py"),
            os.path.join("components", "model_packager.py")} <= files
    assert os.path.join("pipeline", "cli", "run.py") not in files


@pytest.fixture
def repo_copy(tmp_path) -> str:
    for package in ("modules", "components", "pipeline"):
        shutil.copytree(os.path.join(REPO, package), tmp_path / package,
                        ignore=shutil.ignore_patterns("__pycache__"))
    return str(tmp_path)


def fingerprints(root: str) -> dict[str, str]:
    return {entry: code_fingerprint(entry, root=root) for entry in FINGERPRINTED}


@pytest.mark.parametrize("edited, changed", [
    (("components", "model_packager.py"), {"components.model_packager"}),
    (("pipeline", "results", "model_card.py"), {"components.model_packager"}),
    (("pipeline", "results", "intervals.py"), {"components.model_packager"}),
    (("pipeline", "serving", "directory.py"), {"components.serving_pusher"}),
    (("components", "tfrecord_copy.py"), {"components.example_gen"}),
    (("pipeline", "serving", "load_check.py"), {"components.model_packager"}),
    (("modules", "augment.py"), set(FINGERPRINTED)),
    (("components", "serving_validator.py"), {"components.serving_validator"}),
    (("pipeline", "ops", "report.py"), set()),
    (("pipeline", "cli", "run.py"), set()),
])
def test_an_edit_changes_the_fingerprint_of_exactly_the_components_that_run_it(
        repo_copy, edited, changed):
    before = fingerprints(repo_copy)
    with open(os.path.join(repo_copy, *edited), "a") as f:
        f.write("\n# an edit\n")
    after = fingerprints(repo_copy)
    assert {entry for entry in FINGERPRINTED if before[entry] != after[entry]} == changed


def project_modules_of(component) -> set[str]:
    """The project modules a component runs: its class's and its executor's when they are
    project code, and the user modules its properties name (run_fn, preprocessing_fn,
    module_path...)."""
    found = {type(component).__module__}
    executor_class = getattr(component.executor_spec, "executor_class", None)
    if executor_class is not None:
        found.add(executor_class.__module__)
    for value in component.exec_properties.values():
        if isinstance(value, str) and module_file(value) is None:
            value = value.rpartition(".")[0]  # a function's path: its module
        if isinstance(value, str) and module_file(value):
            found.add(value)
    return {name for name in found if module_file(name)}


@pytest.fixture(scope="module")
def built_components() -> list:
    """Every component of the pipeline, with scoring and with an ensemble."""
    from pipeline.config import load_config
    from pipeline.pipeline import create_pipeline

    built = []
    for overrides in (["scoring.test_shards=true"], ["trainer.ensemble_folds=3"]):
        pipeline = create_pipeline(load_config(None, overrides), data_root="/data",
                                   pipeline_root="/root", serving_dir="/serving")
        built.extend(pipeline.components)
    return built


def test_every_component_built_from_project_code_carries_its_codes_fingerprint(
        built_components):
    """A component whose class, executor or user module is project code keys TFX's cache
    on that code: the fingerprint of each such module is in its execution properties."""
    checked, missing, everything = set(), {}, set()
    for component in built_components:
        modules = project_modules_of(component)
        everything |= modules
        properties = json.dumps(component.exec_properties, default=str)
        lacking = sorted(m for m in modules if code_fingerprint(m) not in properties)
        if lacking:
            missing[component.id] = lacking
        if modules:
            checked.add(component.id)
    assert not missing
    assert everything <= set(FINGERPRINTED)  # the golden Kubeflow spec masks them all
    assert {"TaskSchema", "TestExampleValidator", "Transform", "Trainer", "Trainer_fold0",
            "Ensemble", "Evaluator", "Pusher"} <= checked  # the rule reaches them all
