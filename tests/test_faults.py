"""Fault injection: `medtfx run` killed with SIGKILL inside the Trainer, a Beam component
(the Evaluator) and the Pusher, then a disk that fills during the push. After each, the
previous model still serves and every serving version is whole; rerunning the command
resumes and finishes. The tests share one work dir and run in order."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from tests.helpers import BLESS_ANY, FAST_RUN, REPO, medtfx, require_capability

pytestmark = pytest.mark.slow

# The Trainer exporting and a Beam component writing its output, in pipeline order (a rerun
# redoes only what did not finish): ImportExampleGen and StatisticsGen fail the same way as
# the Evaluator (an unfinished execution that TFX reruns), and each kill costs a run's
# start-up. A push killed mid-copy is tests/test_serving_dir.py's: the sample's model is
# copied within the 50 ms this loop polls in, so a kill here could land after it.
KILLED_IN = ["Trainer", "Evaluator"]


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


@pytest.fixture(scope="module")
def site(tiny_data, tmp_path_factory):
    """A work dir whose serving directory is a small tmpfs where the test may mount one (it
    can then fill the disk), a plain folder where it may not."""
    root = tmp_path_factory.mktemp("faults")
    data, work = root / "data", root / "work"
    shutil.copytree(tiny_data, data)
    (work / "serving").mkdir(parents=True)
    try:
        mount = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs",
                                str(work / "serving")], capture_output=True, text=True)
    except FileNotFoundError:  # no mount command (Debian's package `mount`)
        mount = subprocess.CompletedProcess([], 127, "", "no mount command")
    yield {"data": data, "work": work,
           "tmpfs": None if mount.returncode == 0 else mount.stderr.strip() or "refused"}
    if mount.returncode == 0:
        subprocess.run(["umount", "--lazy", str(work / "serving")], check=True)


def run_args(site: dict, *extra: str) -> list[str]:
    return ["run", "--data-root", str(site["data"]), "--work-dir", str(site["work"]),
            *FAST_RUN, *BLESS_ANY, *extra]


def test_a_run_killed_in_each_component_leaves_the_last_model_serving(site):
    data, work = site["data"], site["work"]
    first = medtfx(*run_args(site))
    assert first.returncode == 0, first.stdout + first.stderr
    site["serving"] = versions(work)
    assert len(site["serving"]) == 1

    # New files (same records, new times) and a new seed: every component runs again.
    for shard in data.iterdir():
        os.utime(shard)
    for component in KILLED_IN:
        kill_inside(command(site), work, component)
        assert versions(work) == site["serving"], component  # the previous model serves
        assert_whole(work)


def test_a_full_disk_during_the_push_leaves_the_last_model_serving(site):
    """Runs after the kills: the rerun finishes what they left, then the push fails."""
    require_capability(not site["tmpfs"], "a tmpfs to fill, which the test mounts as root "
                       f"(mount -t tmpfs: {site['tmpfs']})")
    work = site["work"]
    filler = work / "serving" / ".filler"  # ours, and a name TF Serving ignores
    with open(filler, "wb") as f:
        f.write(b"\0" * (shutil.disk_usage(work / "serving").free - 64 * 1024))
    try:
        full = subprocess.run(command(site), capture_output=True, text=True, cwd=REPO,
                              timeout=1200)
    finally:
        filler.unlink()
    assert full.returncode == 1, full.stdout + full.stderr
    (error,) = [line for line in full.stdout.splitlines() if line.startswith("error:")]
    assert "No space left on device" in error
    assert versions(work) == site["serving"]  # nothing half-written became a version
    assert_whole(work)


def test_the_rerun_finishes_and_serves_the_new_model(site):
    work = site["work"]
    last = subprocess.run(command(site), capture_output=True, text=True, cwd=REPO,
                          timeout=1200)
    assert last.returncode == 0, last.stdout + last.stderr
    summary = json.loads((work / "run_summary.json").read_text())
    assert summary["blessed"] and summary["pushed_model"] == str(
        work / "serving" / versions(work)[-1])
    assert versions(work)[:-1] == site["serving"]
    assert_whole(work)
    assert not [n for n in os.listdir(work / "serving") if n.startswith(".")]  # no staging left


def command(site: dict) -> list[str]:
    """The run after the first: a new seed, so that the model and all after it change."""
    return [os.path.join(os.path.dirname(sys.executable), "medtfx"),
            *run_args(site, "--set", "seed=7")]
