"""The serving directory: the newest N versions kept, and rollback that deletes nothing."""

from __future__ import annotations

import json
import os

import pytest

from pipeline.ops import serving_dir
from pipeline.ops.serving_dir import ROLLBACK_FILE, ServingDirError, prune, rollback
from tests.helpers import medtfx


@pytest.fixture
def serving(tmp_path) -> str:
    base = tmp_path / "serving"
    for version in ("100", "200", "300"):
        (base / version / "variables").mkdir(parents=True)
        (base / version / "saved_model.pb").write_text(f"model {version}")
        (base / version / "variables" / "variables.index").write_text(f"weights {version}")
    (base / ".upload-in-progress").mkdir()  # not a version: TF Serving ignores it
    return str(base)


def contents(version_dir: str) -> dict:
    return {os.path.relpath(os.path.join(root, name), version_dir):
            open(os.path.join(root, name)).read()
            for root, _, names in os.walk(version_dir) for name in names}


def test_prune_keeps_the_newest_versions(serving):
    assert prune(serving, 2) == ["100"]
    assert serving_dir.serving_versions(serving) == ["200", "300"]
    assert prune(serving, 5) == []
    assert os.path.isdir(os.path.join(serving, ".upload-in-progress"))


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
    result = medtfx("rollback", "--serving-dir", serving, "--to", "100")
    assert result.returncode == 0 and result.stderr == ""
    assert "now serves the model of version 100" in result.stdout


def test_keep_versions_must_be_positive():
    from pipeline.config import load_config
    from pipeline.errors import ConfigError

    with pytest.raises(ConfigError, match="serving.keep_versions 0 must be at least 1"):
        load_config(None, ["keep_versions=0"])
