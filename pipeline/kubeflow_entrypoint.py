"""The command every container task of the compiled pipeline runs (`python -m
pipeline.kubeflow_entrypoint ARGS`): TFX's executor entrypoint for the v2 runner, run as
`python -m` runs it, then the process ends with its exit status without the interpreter's
teardown (pipeline/core/process_exit.py), as the medtfx CLI ends.

A task's outputs and its ExecutorOutput are written before TFX's entrypoint returns; the
teardown after it only frees memory, and it has aborted finished tasks. The exit handlers
(atexit) do not run either: besides flushing logs, which is done here, they remove
temporary files and stop helper processes (a job server Beam started), all of which end
with the container. An exception still fails the task: its traceback is printed and the
status is 1.
"""

from __future__ import annotations

import runpy
import sys
import traceback

from pipeline.core.process_exit import end_process

# TFX's own command for a v2 container task: kubeflow_v2_dag_runner.KUBEFLOW_TFX_CMD.
EXECUTOR_MODULE = "tfx.orchestration.kubeflow.v2.container.kubeflow_v2_run_executor"
COMMAND = ["python", "-m", "pipeline.kubeflow_entrypoint"]


def run_module(module: str) -> int:
    """Runs `module` as `python -m module` would, with this process's arguments; returns
    the status it would exit with."""
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    except SystemExit as exit:
        return exit_status(exit.code)
    except BaseException:  # noqa: BLE001 - reported, then the task fails
        traceback.print_exc()
        return 1
    return 0


def exit_status(code: object) -> int:
    """The status `sys.exit(code)` gives: 0 for None, the number, or 1 after printing it."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


def main() -> None:
    end_process(run_module(EXECUTOR_MODULE))


if __name__ == "__main__":
    main()
