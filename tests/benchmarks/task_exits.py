"""How often a task of the compiled pipeline fails at exit: one task run again and again.

    .venv/bin/python -m tests.benchmarks.task_exits [--task Evaluator] [--runs 10]
        [--images 150] [--tfx-command]

Compiles the pipeline as tests/test_kubeflow_tasks.py does (tiny images, a few steps, Beam
on a local portable job service), runs the tasks `--task` needs once, then launches `--task`
through its container command `--runs` times, each time afresh (no cache, new outputs).
Prints a line per launch and the count of failures: a non-zero exit, or an abort in what
the task printed (`Fatal Python error`, `terminate called`, `Aborted`). `--tfx-command`
launches TFX's own command instead of medtfx's entrypoint, to compare.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

from tests.helpers import local_job_service
from tests.kubeflow_helpers import LocalBackend, Run, TaskFailed, compiled

ABORT_SIGNS = ("Fatal Python error", "terminate called", "Aborted")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", default="Evaluator")
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--images", type=int, default=150)
    parser.add_argument("--tfx-command", action="store_true",
                        help="launch TFX's own executor command, not medtfx's entrypoint")
    args = parser.parse_args(argv)
    from pipeline.sample.synth import SynthSpec, generate

    with tempfile.TemporaryDirectory(prefix="task-exits-") as root, \
            local_job_service() as endpoint:
        data = os.path.join(root, "data")
        generate(data, SynthSpec(images=args.images, size=32, seed=9, release="70k",
                                 malignant_share=0.3))
        spec = compiled(endpoint, os.path.join(root, "pipeline.yaml"))
        if args.tfx_command:
            use_tfx_command(spec)
        backend = LocalBackend(os.path.join(root, "artifacts"), os.path.join(root, "bucket"),
                               python_dir=os.path.dirname(sys.executable))
        first = Run(backend, spec, {"data_root": data}, "upstream")
        for task in [t for t in first.order(until=args.task) if t != args.task]:
            first.run(task)
        print(f"{args.task}: {' '.join(first.container(args.task)['command'])}", flush=True)
        failed = 0
        for i in range(args.runs):
            ok, seconds, detail = launch_again(first, args.task, f"again{i}")
            failed += not ok
            print(f"run {i + 1}/{args.runs}: {'ok' if ok else 'FAILED'} in {seconds:.0f} s"
                  f"{detail}", flush=True)
    print(f"{args.task}: {failed} of {args.runs} runs failed or aborted")
    return 1 if failed else 0


def launch_again(first: Run, task: str, name: str) -> tuple[bool, float, str]:
    """Launches `task` afresh in a new run holding `first`'s outputs; whether it exited 0
    without an abort, its seconds, and the abort's first line if any."""
    first.backend.cache.clear()
    run = Run(first.backend, first.spec, first.parameter_values, name)
    run.outputs = dict(first.outputs)
    start = time.monotonic()
    try:
        run.run(task)
        status = ""
    except TaskFailed:
        status = " (exit status non-zero)"
    seconds = time.monotonic() - start
    log = run.logs.get(task, "")
    signs = [line for line in log.splitlines() if any(s in line for s in ABORT_SIGNS)]
    return not status and not signs, seconds, status + (f": {signs[0]}" if signs else "")


def use_tfx_command(spec: dict) -> None:
    """Every container task of `spec` with TFX's own command (KUBEFLOW_TFX_CMD)."""
    from tfx.orchestration.kubeflow.v2.kubeflow_v2_dag_runner import KUBEFLOW_TFX_CMD

    for executor in spec["deploymentSpec"]["executors"].values():
        if "container" in executor:
            executor["container"]["command"] = list(KUBEFLOW_TFX_CMD)


if __name__ == "__main__":
    sys.exit(main())
