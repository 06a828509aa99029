"""Fault injection: `medtfx run` killed with SIGKILL inside ImportExampleGen, Transform,
the Trainer, the Evaluator and the Pusher. After each kill the previous model still serves
and every serving version is whole; rerunning the command resumes and finishes."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from tests.helpers import BLESS_ANY, FAST_RUN, REPO, medtfx

pytestmark = pytest.mark.slow

KILLED_IN = ["ImportExampleGen", "Transform", "Trainer", "Evaluator", "Pusher"]


def versions(work) -> list[str]:
    return sorted((n for n in os.listdir(work / "serving") if n.isdigit()), key=int)


def assert_whole(work) -> None:
    """Every version TF Serving would load holds a complete SavedModel."""
    for version in versions(work):
        folder = work / "serving" / version
        assert (folder / "saved_model.pb").is_file(), version
        assert (folder / "variables" / "variables.index").is_file(), version


def started(work, component: str) -> set[str]:
    """The output folders of `component`'s executions: TFX makes one as an execution
    starts."""
    root = work / "pipeline" / component
    if not root.is_dir():
        return set()
    return {os.path.join(key, run) for key in os.listdir(root) if (root / key).is_dir()
            for run in os.listdir(root / key)}


def kill_inside(command: list[str], work, component: str) -> None:
    before = started(work, component)
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               cwd=REPO, start_new_session=True)
    deadline = time.monotonic() + 900
    while started(work, component) == before:
        assert process.poll() is None, f"the run ended before {component} started"
        assert time.monotonic() < deadline, f"{component} never started"
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)  # the run and any worker it started
    process.wait()


def test_a_run_killed_in_each_component_resumes_and_the_last_model_keeps_serving(
        tiny_data, tmp_path):
    data, work = tmp_path / "data", tmp_path / "work"
    shutil.copytree(tiny_data, data)
    args = ["run", "--data-root", str(data), "--work-dir", str(work), *FAST_RUN, *BLESS_ANY]
    first = medtfx(*args)
    assert first.returncode == 0, first.stdout + first.stderr
    serving = versions(work)
    assert len(serving) == 1

    # New files (same records, new times) and a new seed: every component runs again.
    for shard in data.iterdir():
        os.utime(shard)
    command = [os.path.join(os.path.dirname(sys.executable), "medtfx"), *args,
               "--set", "seed=7"]
    for component in KILLED_IN:
        kill_inside(command, work, component)
        assert versions(work) == serving, component  # the previous model still serves
        assert_whole(work)

    last = subprocess.run(command, capture_output=True, text=True, cwd=REPO, timeout=1200)
    assert last.returncode == 0, last.stdout + last.stderr
    summary = json.loads((work / "run_summary.json").read_text())
    assert summary["blessed"] and summary["pushed_model"] == str(
        work / "serving" / versions(work)[-1])
    assert versions(work)[:-1] == serving
    assert_whole(work)
