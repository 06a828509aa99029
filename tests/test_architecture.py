"""The layout's rules, checked on every file: dependencies point one way, and the cache
fingerprint of each component covers the code its executor runs."""

from __future__ import annotations

import json
import os
import shutil

import pytest

from pipeline.fingerprint import (code_fingerprint, imported_modules, module_file,
                                  project_closure)
from tests.helpers import FINGERPRINTED, REPO

# What components/ may use of pipeline/: readers of results, the serving directory, and
# the warm-up requests and load check of a packaged model, which import nothing of the
# pipeline definition, its runners or the CLI.
SHARED = ("pipeline.errors", "pipeline.files", "pipeline.results.eval_results",
          "pipeline.results.intervals", "pipeline.results.classes",
          "pipeline.results.statistics", "pipeline.results.model_card",
          "pipeline.results.calibration", "pipeline.results.report_ood",
          "pipeline.ops.serving_dir", "pipeline.serving.warmup",
          "pipeline.serving.load_check")
# The definition, runners and CLI: nothing below them may import these.
TOP = ("pipeline.pipeline", "pipeline.local_runner", "pipeline.kubeflow_runner",
       "pipeline.cli")


def python_files(*packages: str) -> list[str]:
    return [os.path.join(folder, name) for package in packages
            for folder, _, files in os.walk(os.path.join(REPO, package))
            for name in files if name.endswith(".py")]


def project_imports(package: str) -> dict[str, set[str]]:
    """For each file under `package`, the project modules it imports."""
    return {os.path.relpath(path, REPO): {
        n for n in imported_modules(path) if n.split(".")[0] in ("modules", "components",
                                                                 "pipeline")}
        for path in python_files(package)}


def under(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def test_modules_import_nothing_from_the_pipeline_or_the_components():
    wrong = {path: sorted(n for n in names if not under(n, ("modules",)))
             for path, names in project_imports("modules").items()}
    assert not {p: n for p, n in wrong.items() if n}


def test_components_use_only_modules_and_the_shared_layer():
    wrong = {path: sorted(n for n in names
                          if under(n, ("pipeline",)) and not under(n, SHARED))
             for path, names in project_imports("components").items()}
    assert not {p: n for p, n in wrong.items() if n}


def test_the_shared_layer_imports_nothing_above_it():
    imports = project_imports("pipeline")
    for module in SHARED:
        path = module.replace(".", os.sep) + ".py"
        above = sorted(n for n in imports[path]
                       if under(n, ("components",)) or (under(n, ("pipeline",))
                                                        and not under(n, SHARED)))
        assert not above, (path, above)


def test_the_definition_is_imported_only_by_the_runners_and_the_cli():
    for path, names in project_imports("pipeline").items():
        if path.startswith(os.path.join("pipeline", "cli", "")):
            continue
        allowed = ("pipeline.pipeline",) if path.endswith("_runner.py") else ()
        wrong = sorted(n for n in names if under(n, TOP) and not under(n, allowed))
        assert not wrong, (path, wrong)


def test_only_the_kubeflow_compiler_imports_tfx_v1():
    """`tfx.v1` loads the Vertex AI client (about 6 s); a local run or a component's
    container has no use for it."""
    users = {os.path.relpath(path, REPO) for path in python_files("modules", "components",
                                                                  "pipeline")
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
    (("pipeline", "ops", "serving_dir.py"), {"components.serving_pusher"}),
    (("components", "tfrecord_copy.py"), {"components.example_gen"}),
    (("pipeline", "serving", "load_check.py"), {"components.model_packager"}),
    (("modules", "augment.py"), set(FINGERPRINTED)),
    (("components", "serving_validator.py"), {"components.serving_validator"}),
    (("pipeline", "results", "report.py"), set()),
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
