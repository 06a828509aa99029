"""The file operations that keep a reader from ever seeing half a file or directory:
written under a hidden name, then renamed into place. One copy of each, for local paths
and, through TFX's fileio, for gs:// too."""

from __future__ import annotations

import contextlib
import json
import os
from typing import Iterator

from tfx.dsl.io import fileio

from modules.errors import MedtfxError


class AlreadyExistsError(MedtfxError):
    """The target of a rename already exists; nothing was replaced."""


def _hidden(target: str) -> str:
    parent, name = os.path.split(target.rstrip("/"))
    return os.path.join(parent, f".{name}.tmp")


def write_text(path: str, text: str) -> None:
    """Written whole or not at all."""
    fileio.makedirs(os.path.dirname(path))
    tmp = _hidden(path)
    with fileio.open(tmp, "w") as f:
        f.write(text)
    fileio.rename(tmp, path, overwrite=True)


def write_json(path: str, content: dict, indent: int | None = 2) -> None:
    """Written whole or not at all."""
    write_text(path, json.dumps(content, indent=indent))


@contextlib.contextmanager
def staged_dir(final: str) -> Iterator[str]:
    """A hidden directory beside `final` to fill; renamed to `final` when the block ends
    without error, removed when it fails. An existing `final` is never replaced."""
    tmp = _hidden(final)
    if fileio.exists(tmp):
        fileio.rmtree(tmp)  # our own staging name: left by an interrupted run
    fileio.makedirs(tmp)
    try:
        yield tmp
        if fileio.exists(final):
            raise AlreadyExistsError(f"{final}: already exists; nothing was replaced")
        fileio.rename(tmp, final)
    finally:
        if fileio.exists(tmp):
            fileio.rmtree(tmp)


def move_file(source: str, target: str) -> None:
    """Copy under a hidden name, rename into place, then remove the source: a crash leaves a
    copy, never a loss."""
    tmp = _hidden(target)
    fileio.copy(source, tmp, overwrite=True)
    fileio.rename(tmp, target)
    fileio.remove(source)
