"""The file operations that keep a reader from ever seeing half a file or directory:
written under a hidden name, then renamed into place. One copy of each, for local paths
and, through TFX's fileio, for gs:// too.

A staged directory `.NAME.tmp` has an owner file beside it, `.NAME.tmp.medtfx`, written
before the directory is made and removed after it is renamed: who staged it (pid, host,
boot, start time). A process killed mid-copy leaves both; the next staging in that folder
removes the pair once its writer is gone. A `.NAME.tmp` without an owner file is not
medtfx's and is never touched.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import socket
import time
from typing import Iterator

from tfx.dsl.io import fileio

from modules.errors import MedtfxError


class AlreadyExistsError(MedtfxError):
    """The target of a rename already exists; nothing was replaced."""


def _hidden(target: str) -> str:
    parent, name = os.path.split(target.rstrip("/"))
    return os.path.join(parent, f".{name}.tmp")


def write_text(path: str, text: str) -> None:
    """Written whole or not at all (a failed write leaves nothing behind)."""
    fileio.makedirs(os.path.dirname(path))
    tmp = _hidden(path)
    try:
        with fileio.open(tmp, "w") as f:
            f.write(text)
        fileio.rename(tmp, path, overwrite=True)
    finally:
        if fileio.exists(tmp):
            fileio.remove(tmp)


def write_json(path: str, content: dict, indent: int | None = 2) -> None:
    """Written whole or not at all."""
    write_text(path, json.dumps(content, indent=indent))


OWNER_SUFFIX = ".medtfx"
_OWNER_RE = re.compile(r"^\.(?P<name>.+)\.tmp" + re.escape(OWNER_SUFFIX) + "$")
# A writer on another machine cannot be asked whether it still runs: its staging is taken
# for abandoned when it is this old (no copy of a model takes a day).
FOREIGN_HOST_STALE_S = 24 * 3600


def _boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()
    except OSError:
        return ""


def _process_start(pid: int) -> str:
    """When the process started (clock ticks since boot), to tell a reused pid; "" when
    unknown."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def _owner() -> dict:
    pid = os.getpid()
    return {"staged_by": "medtfx", "pid": pid, "host": socket.gethostname(),
            "boot": _boot_id(), "process_start": _process_start(pid), "time": time.time()}


def _writer_gone(owner: dict) -> bool:
    """The process that staged it no longer runs (or, on another machine, it is a day old)."""
    if owner["host"] != socket.gethostname():
        return time.time() - owner["time"] > FOREIGN_HOST_STALE_S
    if owner["boot"] != _boot_id():
        return True  # the machine restarted since
    try:
        os.kill(owner["pid"], 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass  # alive, another user's
    return bool(owner["process_start"]) and owner["process_start"] != _process_start(
        owner["pid"])


def _read_owner(path: str) -> dict | None:
    """The owner file's content when medtfx wrote it, else None."""
    try:
        with fileio.open(path, "r") as f:
            owner = json.loads(f.read())
    except (OSError, ValueError, fileio.NotFoundError):
        return None
    fields = {"pid": int, "host": str, "boot": str, "process_start": str, "time": (int, float)}
    if not isinstance(owner, dict) or owner.get("staged_by") != "medtfx" or not all(
            isinstance(owner.get(key), kind) for key, kind in fields.items()):
        return None
    return owner


def describe_owner(owner: dict) -> str:
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(owner["time"]))
    return f"staged by medtfx pid {owner['pid']} on {owner['host']} at {started}"


def remove_stale_staging(folder: str) -> list[str]:
    """Removes the staged directories in `folder` whose medtfx writer is gone (see the
    module's docstring), each with its owner file; returns one line per removal, naming
    the directory and who staged it. Directories without an owner file stay."""
    removed = []
    names = [n.rstrip("/") for n in fileio.listdir(folder)] if fileio.isdir(folder) else []
    for match in filter(None, map(_OWNER_RE.match, names)):
        owner_path = os.path.join(folder, match.group(0))
        owner = _read_owner(owner_path)
        if owner is None or not _writer_gone(owner):
            continue
        tmp = os.path.join(folder, f".{match.group('name')}.tmp")
        try:
            if fileio.isdir(tmp):
                fileio.rmtree(tmp)
                removed.append(f"{tmp} ({describe_owner(owner)}, which did not finish)")
            fileio.remove(owner_path)
        except fileio.NotFoundError:
            continue  # another process cleared it first
    for line in removed:
        logging.getLogger("medtfx").warning("removed %s", line)
    return removed


@contextlib.contextmanager
def staged_dir(final: str) -> Iterator[str]:
    """A hidden directory beside `final` to fill; renamed to `final` when the block ends
    without error, removed when it fails. An existing `final` is never replaced; stale
    staging of an earlier medtfx process in the same folder is removed first."""
    tmp = _hidden(final)
    remove_stale_staging(os.path.dirname(tmp))
    owner_path = tmp + OWNER_SUFFIX
    if fileio.exists(tmp):
        owner = _read_owner(owner_path)
        whose = (f"{describe_owner(owner)}, still running" if owner
                 else "not medtfx's: remove it if nothing uses it")
        raise AlreadyExistsError(f"{tmp}: already exists ({whose}); nothing was staged")
    write_json(owner_path, _owner(), indent=None)  # first: a half-made staging is known
    try:
        fileio.makedirs(tmp)
        yield tmp
        if fileio.exists(final):
            raise AlreadyExistsError(f"{final}: already exists; nothing was replaced")
        fileio.rename(tmp, final)
    finally:
        if fileio.exists(tmp):
            fileio.rmtree(tmp)
        fileio.remove(owner_path)


def move_file(source: str, target: str) -> None:
    """Copy under a hidden name, rename into place, then remove the source: a crash leaves a
    copy, never a loss."""
    tmp = _hidden(target)
    fileio.copy(source, tmp, overwrite=True)
    fileio.rename(tmp, target)
    fileio.remove(source)
