"""The serving directory: a version appears whole or not at all, numbers only go up, the
newest N of medtfx's versions are kept and no other model's, and rollback deletes
nothing."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time

import pytest

from modules.artifacts import CARD_DIR, PACKAGE_FILE
from pipeline.serving import directory as serving_dir
from pipeline.serving.directory import (ROLLBACK_FILE, ServingDirError, prune, publish,
                                      rollback, serving_now)
from pipeline.core import files
from tests.helpers import REPO, medtfx


def write_model(folder, name: str) -> str:
    """A packaged model as ModelPackager leaves it (the files, not a real network)."""
    (folder / "variables").mkdir(parents=True)
    (folder / "saved_model.pb").write_text(f"model {name}")
    (folder / "variables" / "variables.index").write_text(f"weights {name}")
    (folder / PACKAGE_FILE).write_text(json.dumps({"trained_model": name}))
    (folder / CARD_DIR).mkdir()
    (folder / CARD_DIR / "model_card.md").write_text(f"card of {name}")
    return str(folder)


@pytest.fixture
def serving(tmp_path) -> str:
    base = tmp_path / "serving"
    for version in ("100", "200", "300"):
        write_model(base / version, version)
    (base / ".upload-in-progress").mkdir()  # not a version: TF Serving ignores it
    return str(base)


def contents(version_dir: str) -> dict:
    return {os.path.relpath(os.path.join(root, name), version_dir):
            open(os.path.join(root, name)).read()
            for root, _, names in os.walk(version_dir) for name in names}


def test_prune_keeps_the_newest_of_medtfxs_versions_and_never_touches_another_models(
        serving):
    foreign = os.path.join(serving, "150")
    os.makedirs(foreign)  # another model's version in a shared base: no medtfx package
    with open(os.path.join(foreign, "saved_model.pb"), "w") as f:
        f.write("someone else's model")
    assert prune(serving, 2) == ["100"]
    assert serving_dir.serving_versions(serving) == ["150", "200", "300"]
    assert prune(serving, 5) == []
    assert os.path.isdir(os.path.join(serving, ".upload-in-progress"))


def test_a_push_that_fails_midway_leaves_no_version_and_the_old_one_serving(
        serving, tmp_path, monkeypatch):
    model = write_model(tmp_path / "model", "new")

    def copy_half(source, target, **kwargs):
        os.makedirs(target, exist_ok=True)
        with open(os.path.join(target, PACKAGE_FILE), "w") as f:
            f.write("{}")
        raise OSError("No space left on device")

    monkeypatch.setattr(serving_dir.io_utils, "copy_dir", copy_half)
    with pytest.raises(OSError, match="No space left"):
        publish(model, serving)
    assert sorted(os.listdir(serving)) == [".upload-in-progress", "100", "200", "300"]


# A push that copies one file, says so and waits to be killed.
PUSH_KILLED_MID_COPY = """
import os, sys, time
from pipeline.serving import directory as serving_dir

def copy_half(source, target, **kwargs):
    os.makedirs(target, exist_ok=True)
    with open(os.path.join(target, "saved_model.pb"), "w") as f:
        f.write("half a model")
    print(target, flush=True)
    time.sleep(600)

serving_dir.io_utils.copy_dir = copy_half
serving_dir.publish(sys.argv[1], sys.argv[2])
"""


def foreign_look_alikes(serving: str) -> list[str]:
    """Staging-like names medtfx did not make: one bare, one beside a file in the owner
    file's name that medtfx did not write."""
    for name in (".150.tmp", ".160.tmp"):
        os.makedirs(os.path.join(serving, name))
        with open(os.path.join(serving, name, "saved_model.pb"), "w") as f:
            f.write("someone else's upload")
    with open(os.path.join(serving, ".160.tmp" + files.OWNER_SUFFIX), "w") as f:
        f.write('{"pid": 1}')
    return sorted(os.listdir(serving))


def test_a_push_killed_mid_copy_leaves_nothing_after_the_next_push(serving, tmp_path, caplog):
    before = foreign_look_alikes(serving)
    model = write_model(tmp_path / "model", "new")
    push = subprocess.Popen([sys.executable, "-c", PUSH_KILLED_MID_COPY, model, serving],
                            stdout=subprocess.PIPE, text=True, cwd=REPO,
                            env={**os.environ, "PYTHONPATH": REPO})
    staging = push.stdout.readline().strip()  # the copy has begun
    push.send_signal(signal.SIGKILL)
    push.wait()
    assert os.path.basename(staging).startswith(".") and os.path.isdir(staging)
    assert os.path.isfile(staging + files.OWNER_SUFFIX)

    with caplog.at_level(logging.WARNING, logger="medtfx"):
        version = publish(model, serving)
    assert sorted(os.listdir(serving)) == sorted([*before, version])
    assert serving_now(serving, model) == version
    (removed,) = [r.getMessage() for r in caplog.records if r.name == "medtfx"]
    assert removed.startswith(f"removed {staging} (staged by medtfx pid {push.pid} on ")
    assert removed.endswith("which did not finish)")


def test_a_staging_whose_writer_runs_is_left_alone(serving, tmp_path):
    """Another medtfx process still copying (here: this one) keeps its staging."""
    with files.staged_dir(os.path.join(serving, "400")) as staging:
        assert files.remove_stale_staging(serving) == []
        assert os.path.isdir(staging)
    assert not [n for n in os.listdir(serving) if n.endswith((".tmp", files.OWNER_SUFFIX))]


def test_an_interrupted_version_is_not_taken_for_the_model_it_was_meant_to_hold(
        serving, tmp_path):
    model = write_model(tmp_path / "model", "new")
    half = write_model(tmp_path / "serving" / "400", "new")  # as TFX's own Pusher left it
    os.remove(os.path.join(half, "saved_model.pb"))
    assert serving_now(serving, model) is None
    version = publish(model, serving)
    assert int(version) > 400 and serving_now(serving, model) == version
    with open(os.path.join(model, CARD_DIR, "model_card.md"), "w") as f:
        f.write("a rerun's card")  # the same model and threshold: still the one serving
    assert serving_now(serving, model) == version


def test_versions_only_go_up_across_pushes_and_rollbacks_in_one_second(serving, tmp_path):
    future = str(int(time.time()) + 1000)  # e.g. the clock was set back since
    write_model(tmp_path / "serving" / future, "future")
    pushed = [publish(write_model(tmp_path / f"m{i}", f"m{i}"), serving) for i in range(2)]
    rolled, _ = rollback(serving)
    again = publish(write_model(tmp_path / "m2", "m2"), serving)
    numbers = [int(future), *map(int, pushed), int(rolled), int(again)]
    assert numbers == sorted(set(numbers))


def test_after_a_rollback_the_replaced_model_is_pushed_as_a_new_version(serving, tmp_path):
    """The model of 300 was replaced by a copy of 200: pushing it again must not be taken
    as already serving, or the summary would name a version that does not serve."""
    new, _ = rollback(serving)
    assert serving_now(serving, os.path.join(serving, "300")) is None
    assert serving_now(serving, os.path.join(serving, "200")) == new


def test_rollback_serves_an_earlier_model_as_the_newest_version_and_deletes_nothing(serving):
    before = {v: contents(os.path.join(serving, v)) for v in ("100", "200", "300")}
    new, source = rollback(serving)
    assert source == "200" and int(new) > 300
    assert serving_dir.serving_versions(serving) == ["100", "200", "300", new]
    copied = contents(os.path.join(serving, new))
    record = json.loads(copied.pop(ROLLBACK_FILE))
    assert copied == before["200"]
    assert record["rollback_of"] == "200" and record["replaced"] == "300"
    assert {v: contents(os.path.join(serving, v)) for v in before} == before


def test_a_rollback_that_fails_midway_leaves_no_partial_version(serving, monkeypatch):
    def failing_rename(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(serving_dir.fileio, "rename", failing_rename)
    with pytest.raises(OSError, match="disk full"):
        rollback(serving, "100")
    assert sorted(os.listdir(serving)) == [".upload-in-progress", "100", "200", "300"]


def test_rollback_with_one_version_is_refused(tmp_path):
    (tmp_path / "serving" / "100").mkdir(parents=True)
    with pytest.raises(ServingDirError, match="nothing earlier to roll back to"):
        rollback(str(tmp_path / "serving"))


def test_the_rollback_command_names_an_unknown_version_and_changes_nothing(serving):
    result = medtfx("rollback", "--serving-dir", serving, "--to", "7")
    assert result.returncode == 1
    assert result.stdout == f"error: {serving}: no version 7; versions: 100, 200, 300\n"
    assert serving_dir.serving_versions(serving) == ["100", "200", "300"]
    gone = subprocess.Popen(["true"])
    gone.wait()  # its pid: a process that no longer runs
    stale = os.path.join(serving, ".250.tmp")
    os.makedirs(stale)
    files.write_json(stale + files.OWNER_SUFFIX, {**files._owner(), "pid": gone.pid})
    result = medtfx("rollback", "--serving-dir", serving, "--to", "100")
    assert result.returncode == 0 and result.stderr == ""
    assert f"medtfx: removed {stale} (staged by medtfx pid " in result.stdout
    assert not os.path.exists(stale) and not os.path.exists(stale + files.OWNER_SUFFIX)
    assert "now serves the model of version 100" in result.stdout
    new = os.path.join(serving, serving_dir.serving_versions(serving)[-1])
    modes = [os.stat(os.path.join(root, name)).st_mode
             for root, dirs, names in os.walk(new) for name in [*dirs, *names]] + [
                 os.stat(new).st_mode]
    assert modes and not [oct(m) for m in modes if m & 0o007]  # patients' data: no world access


def test_keep_versions_must_be_positive():
    from pipeline.config import load_config
    from pipeline.core.errors import ConfigError

    with pytest.raises(ConfigError, match="serving.keep_versions 0 must be at least 1"):
        load_config(None, ["keep_versions=0"])


@pytest.mark.parametrize("count", [0, 1025])
def test_warm_up_requests_hold_at_least_one_example_and_no_more_than_a_request_may(count):
    from pipeline.config import load_config
    from pipeline.core.errors import ConfigError

    with pytest.raises(ConfigError, match=f"serving.warmup_examples {count} must be at least 1 "
                       r"and at most limits.batch \(1024\)"):
        load_config(None, [f"warmup_examples={count}"])


@pytest.mark.parametrize("packaged", [1, 0])
def test_the_pusher_pushes_only_a_model_that_was_packaged(packaged, tmp_path):
    """A blessed model that failed the load check is left unpackaged; the Pusher refuses it."""
    from tfx.proto import pusher_pb2
    from tfx.types import standard_artifacts
    from tfx.utils import proto_utils

    from components.serving_pusher import Executor

    model = standard_artifacts.Model()
    model.uri = str(tmp_path / "packaged")
    write_model(tmp_path / "packaged" / "Format-Serving", "new")
    model.set_int_custom_property("packaged", packaged)
    blessing = standard_artifacts.ModelBlessing()
    blessing.set_int_custom_property("blessed", 1)
    pushed = standard_artifacts.PushedModel()
    pushed.uri = str(tmp_path / "pushed")
    destination = pusher_pb2.PushDestination(
        filesystem=pusher_pb2.PushDestination.Filesystem(base_directory=str(tmp_path / "srv")))
    Executor().Do({"model": [model], "model_blessing": [blessing]}, {"pushed_model": [pushed]},
                  {"push_destination": proto_utils.proto_to_json(destination)})
    assert pushed.get_int_custom_property("pushed") == packaged
    assert len(serving_dir.serving_versions(str(tmp_path / "srv"))) == packaged
