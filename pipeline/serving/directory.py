"""The serving directory in TF Serving's versioned layout (BASE/<integer version>/), which
serves the highest version: publishing a model, keeping the newest N, and rolling back.

A version appears whole: it is written under a name TF Serving ignores, checked against its
source, and then renamed. Versions only go up, and only versions medtfx wrote are pruned.
"""

from __future__ import annotations

import hashlib
import os
import time
from typing import Callable

from tfx.dsl.io import fileio
from tfx.utils import io_utils

from modules.artifacts import CARD_DIR, PACKAGE_FILE
from modules.errors import MedtfxError
from pipeline.core.files import staged_dir, write_json

ROLLBACK_FILE = "medtfx-rollback.json"
WARMUP_FILE = "tf_serving_warmup_requests"  # TF Serving replays it from assets.extra


class ServingDirError(MedtfxError):
    """The serving directory cannot do what was asked."""


def serving_versions(base_directory: str) -> list[str]:
    """Version directories, oldest first."""
    if not fileio.exists(base_directory):
        return []
    names = [n.rstrip("/") for n in fileio.listdir(base_directory)]
    return sorted((n for n in names if n.isdigit()), key=int)


def is_ours(base_directory: str, version: str) -> bool:
    """A version medtfx pushed: it carries the package file ModelPackager writes."""
    return fileio.exists(os.path.join(base_directory, version, PACKAGE_FILE))


def prune(base_directory: str, keep: int) -> list[str]:
    """Deletes all but the newest `keep` versions medtfx pushed; returns the deleted ones.
    Versions without medtfx's package file (another model's, in a shared base) are never
    touched."""
    ours = [v for v in serving_versions(base_directory) if is_ours(base_directory, v)]
    old = ours[:-keep] if keep < len(ours) else []
    for version in old:
        fileio.rmtree(os.path.join(base_directory, version))
    return old


def next_version(base_directory: str) -> str:
    """A version above every existing one: the time in seconds, or one more than the
    highest when that is later (two pushes or a rollback in one second, a clock set
    back)."""
    versions = serving_versions(base_directory)
    return str(max(int(time.time()), int(versions[-1]) + 1 if versions else 0))


def _digest(model_dir: str, include: Callable[[str], bool]) -> str:
    """A digest of the paths and bytes of the files `include` accepts (by relative path)."""
    digest = hashlib.sha256()
    for root, _, names in sorted(fileio.walk(model_dir)):
        for name in sorted(names):
            path = os.path.join(root, name)
            relative = os.path.relpath(path, model_dir)
            if include(relative):
                digest.update(relative.encode() + b"\0")
                with fileio.open(path, "rb") as f:
                    digest.update(hashlib.sha256(f.read()).digest())
    return digest.hexdigest()


def _everything(relative: str) -> bool:
    return True


def _decides_answers(relative: str) -> bool:
    """Everything but the documents beside the model: the model card (TF Serving reads only
    its warm-up file in assets.extra) and a rollback's record."""
    if relative == ROLLBACK_FILE:
        return False
    return not relative.startswith(CARD_DIR + os.sep) or relative.endswith(WARMUP_FILE)


def model_digest(model_dir: str) -> str:
    """Equal for two copies of a model that answer alike: a rerun's new model card or a
    rollback's record does not count; a missing or changed file of the model does."""
    return _digest(model_dir, _decides_answers)


def serving_now(base_directory: str, model_dir: str) -> str | None:
    """The highest version, which TF Serving serves, when it holds exactly this model (an
    interrupted copy or a different model does not count)."""
    versions = serving_versions(base_directory)
    if not versions:
        return None
    newest = os.path.join(base_directory, versions[-1])
    return versions[-1] if model_digest(newest) == model_digest(model_dir) else None


def publish(model_dir: str, base_directory: str, record: dict | None = None) -> str:
    """Copies a model to a new highest version and returns it. The copy is made under a
    name TF Serving ignores, checked against the source, and only then renamed into place;
    `record`, if given, is written beside it as the rollback file."""
    version = next_version(base_directory)
    target = os.path.join(base_directory, version)
    with staged_dir(target) as tmp:
        io_utils.copy_dir(model_dir, tmp)
        if _digest(tmp, _everything) != _digest(model_dir, _everything):
            raise ServingDirError(f"{target}: the copy of {model_dir} differs from it; "
                                  "nothing was pushed")
        if record is not None:
            write_json(os.path.join(tmp, ROLLBACK_FILE), record, indent=None)
    return version


def rollback(base_directory: str, to: str | None = None) -> tuple[str, str]:
    """Serves version `to` (default: the one before the newest) again by copying it to a new,
    highest version; deletes nothing. Returns (new version, source version)."""
    versions = serving_versions(base_directory)
    if not fileio.exists(base_directory):
        raise ServingDirError(f"{base_directory}: no serving directory")
    if to is None:
        if len(versions) < 2:
            raise ServingDirError(f"{base_directory}: {len(versions)} version(s); nothing "
                                  "earlier to roll back to")
        to = versions[-2]
    if to not in versions:
        raise ServingDirError(f"{base_directory}: no version {to}; versions: "
                              f"{', '.join(versions) or 'none'}")
    new = publish(os.path.join(base_directory, to), base_directory,
                  record={"rollback_of": to, "replaced": versions[-1],
                          "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
    return new, to
