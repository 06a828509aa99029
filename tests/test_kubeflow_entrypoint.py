"""The container tasks' entrypoint (pipeline/kubeflow_entrypoint.py): the executor's exit
status is the process's, what it printed or logged is written out, the interpreter's exit
handlers and teardown do not run, and a failure exits non-zero with its traceback."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.helpers import REPO

# An executor module that leaves a buffered print, a buffered log record and an exit
# handler behind, then ends as its first argument says.
FAKE_EXECUTOR = """
import atexit, logging, logging.handlers, sys

atexit.register(print, "exit handler ran", flush=True)
buffered = logging.handlers.MemoryHandler(1000, target=logging.StreamHandler(sys.stderr))
logging.getLogger("fake").addHandler(buffered)
logging.getLogger("fake").warning("logged by the executor")
print("executor ran with", sys.argv[1:])
if sys.argv[1] == "exit":
    sys.exit(int(sys.argv[2]))
if sys.argv[1] == "raise":
    raise RuntimeError("the executor failed")
"""


def entrypoint(tmp_path, *args: str, module: str = "fake_executor"
               ) -> subprocess.CompletedProcess:
    """`python -m pipeline.kubeflow_entrypoint ARGS`, running `module` as the executor."""
    (tmp_path / "fake_executor.py").write_text(FAKE_EXECUTOR)
    main = (f"import pipeline.kubeflow_entrypoint as e; e.EXECUTOR_MODULE = {module!r}; "
            "e.main()")
    return subprocess.run(
        [sys.executable, "-c", main, *args], capture_output=True, text=True, timeout=300,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([REPO, str(tmp_path)])})


@pytest.mark.parametrize("args, status", [(["return"], 0), (["exit", "0"], 0),
                                          (["exit", "3"], 3)])
def test_the_process_ends_with_the_executors_status_and_no_exit_handlers(
        tmp_path, args, status):
    done = entrypoint(tmp_path, *args)
    assert done.returncode == status, done.stderr
    assert done.stdout == f"executor ran with {args}\n"
    assert "logged by the executor" in done.stderr
    assert "exit handler ran" not in done.stdout


def test_an_exception_exits_non_zero_with_its_traceback(tmp_path):
    done = entrypoint(tmp_path, "raise")
    assert done.returncode == 1
    assert "Traceback (most recent call last)" in done.stderr
    assert "RuntimeError: the executor failed" in done.stderr
    assert "logged by the executor" in done.stderr
    assert "exit handler ran" not in done.stdout


def test_the_executor_module_is_tfxs_own_and_runs_as_its_command_runs_it(tmp_path):
    """TFX's entrypoint itself, without its required arguments: argparse's usage error and
    status, as `python -m tfx...` gives."""
    from tfx.orchestration.kubeflow.v2.kubeflow_v2_dag_runner import KUBEFLOW_TFX_CMD

    from pipeline.kubeflow_entrypoint import EXECUTOR_MODULE

    assert list(KUBEFLOW_TFX_CMD) == ["python", "-m", EXECUTOR_MODULE]
    done = entrypoint(tmp_path, module=EXECUTOR_MODULE)
    assert done.returncode == 2, done.stderr
    assert "the following arguments are required: --executor_class_path" in done.stderr
