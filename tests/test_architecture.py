"""The layout's rules, checked on every file: dependencies point one way, and the cache
fingerprint of each component covers the code its executor runs."""

from __future__ import annotations

import os
import shutil

import pytest

from pipeline.fingerprint import code_fingerprint, imported_modules, project_closure
from tests.helpers import REPO

# What components/ may use of pipeline/: readers of results, the serving directory, and
# the warm-up requests and load check of a packaged model, which import nothing of the
# pipeline definition, its runners or the CLI.
SHARED = ("pipeline.errors", "pipeline.files", "pipeline.results.eval_results",
          "pipeline.results.intervals", "pipeline.results.classes",
          "pipeline.results.statistics", "pipeline.results.model_card",
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


ENTRIES = ("modules.preprocessing", "modules.trainer", "modules.evaluation",
           "components.data_gate", "components.model_packager", "components.serving_pusher",
           "components.ensemble", "components.statistics_gen", "components.bulk_inferrer",
           "components.submission_writer", "components.example_gen")


def fingerprints(root: str) -> dict[str, str]:
    return {entry: code_fingerprint(entry, root=root) for entry in ENTRIES}


@pytest.mark.parametrize("edited, changed", [
    (("components", "model_packager.py"), {"components.model_packager"}),
    (("pipeline", "results", "model_card.py"), {"components.model_packager"}),
    (("pipeline", "results", "intervals.py"), {"components.model_packager"}),
    (("pipeline", "ops", "serving_dir.py"), {"components.serving_pusher"}),
    (("components", "tfrecord_copy.py"), {"components.example_gen"}),
    (("pipeline", "serving", "load_check.py"), {"components.model_packager"}),
    (("modules", "augment.py"), set(ENTRIES)),
    (("pipeline", "results", "report.py"), set()),
    (("pipeline", "cli", "run.py"), set()),
])
def test_an_edit_changes_the_fingerprint_of_exactly_the_components_that_run_it(
        repo_copy, edited, changed):
    before = fingerprints(repo_copy)
    with open(os.path.join(repo_copy, *edited), "a") as f:
        f.write("\n# an edit\n")
    after = fingerprints(repo_copy)
    assert {entry for entry in ENTRIES if before[entry] != after[entry]} == changed
