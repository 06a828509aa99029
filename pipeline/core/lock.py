"""One medtfx process at a time on a folder: an OS lock (flock) on a file in it.

The kernel releases the lock when its holder exits or dies, so there is no stale lock to
take over and no moment between creating the file and owning it. The file stays, holding
the pid of its last holder for the message a second process gets.
"""

from __future__ import annotations

import fcntl
import os

from modules.errors import MedtfxError


class LockedError(MedtfxError):
    """Another medtfx process holds the folder."""


class FolderLock:
    """`with FolderLock(folder, name, what):` holds `folder/name`; `what` says who holds it
    in the message ("retrain", "run")."""

    def __init__(self, folder: str, name: str, what: str):
        self.path = os.path.join(folder, name)
        self.what = what
        self._fd: int | None = None

    def __enter__(self) -> FolderLock:
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise LockedError(f"{self.path}: another medtfx {self.what} (pid {owner}) is "
                              f"using {os.path.dirname(self.path)}") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
