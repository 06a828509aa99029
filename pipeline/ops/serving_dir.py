"""The serving directory in TF Serving's versioned layout (BASE/<integer version>/), which
serves the highest version: listing, keeping the newest N, and rolling back.

A version appears whole: it is written under a name TF Serving ignores and then renamed.
"""

from __future__ import annotations

import os
import time

from tfx.dsl.io import fileio
from tfx.utils import io_utils

from modules.errors import MedtfxError
from pipeline.files import staged_dir, write_json

ROLLBACK_FILE = "medtfx-rollback.json"


class ServingDirError(MedtfxError):
    """The serving directory cannot do what was asked."""


def serving_versions(base_directory: str) -> list[str]:
    """Version directories, oldest first."""
    if not fileio.exists(base_directory):
        return []
    names = [n.rstrip("/") for n in fileio.listdir(base_directory)]
    return sorted((n for n in names if n.isdigit()), key=int)


def prune(base_directory: str, keep: int) -> list[str]:
    """Deletes all but the newest `keep` versions; returns the deleted ones."""
    versions = serving_versions(base_directory)
    old = versions[:-keep] if keep < len(versions) else []
    for version in old:
        fileio.rmtree(os.path.join(base_directory, version))
    return old


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
    new = str(max(int(time.time()), int(versions[-1]) + 1))
    with staged_dir(os.path.join(base_directory, new)) as tmp:
        io_utils.copy_dir(os.path.join(base_directory, to), tmp)
        write_json(os.path.join(tmp, ROLLBACK_FILE),
                   {"rollback_of": to, "replaced": versions[-1],
                    "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}, indent=None)
    return new, to
