"""Terminal output of medtfx commands: our lines on the terminal, library chatter in a log.

TensorFlow (C++ and Python), absl, Beam and its worker processes, and Keras' fit all write
to file descriptors 1 and 2. Unless --verbose, both descriptors point at a log file for the
duration of a command, and the command speaks through `Console.say` on a saved copy of the
terminal.
"""

from __future__ import annotations

import ctypes
import logging
import os
import sys
import time
from typing import TextIO

from absl import logging as absl_logging

from modules.progress import PROGRESS_FIELD, PROGRESS_LOGGER


class Console:
    def __init__(self, log_path: str | None, verbose: bool):
        self.log_path = log_path
        self.verbose = verbose
        self.out: TextIO = sys.stdout
        self._saved: list[int] = []

    def __enter__(self) -> "Console":
        absl_logging.set_verbosity(absl_logging.INFO)
        if self.verbose or not self.log_path:
            return self
        os.makedirs(os.path.dirname(self.log_path), exist_ok=True)
        sys.stdout.flush()
        sys.stderr.flush()
        terminal = os.dup(1)
        self._saved = [terminal, os.dup(2)]
        log_fd = os.open(self.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
        os.dup2(log_fd, 1)
        os.dup2(log_fd, 2)
        os.close(log_fd)
        self.out = os.fdopen(os.dup(terminal), "w", buffering=1)
        return self

    def __exit__(self, *exc) -> None:
        if not self._saved:
            return
        sys.stdout.flush()
        sys.stderr.flush()
        ctypes.CDLL(None).fflush(None)  # C/C++ buffers still bound for the log
        for fd, saved in zip((1, 2), self._saved):
            os.dup2(saved, fd)
            os.close(saved)
        self._saved = []
        self.out.close()
        self.out = sys.stdout

    def say(self, text: str = "", end: str = "\n") -> None:
        self.out.write(text + end)
        self.out.flush()


class ComponentProgress(logging.Handler):
    """A line per component as LocalDagRunner reports it (through absl logging), and the
    Trainer's progress (modules/progress.py): on a terminal, one line rewritten in place;
    elsewhere (CI logs, files) a line per epoch."""

    def __init__(self, console: Console, total: int):
        super().__init__(level=logging.INFO)
        self.console = console
        self.total = total
        self.done = 0
        self.current: str | None = None
        self.cached = False
        self.started = 0.0
        self.line_open = False  # the component's line awaits its time
        self.live = console.out.isatty() and not console.verbose

    def _head(self) -> str:
        return f"  [{self.done + 1:>2}/{self.total}] {self.current:<32}"

    def emit(self, record: logging.LogRecord) -> None:
        progress = getattr(record, PROGRESS_FIELD, None)
        if progress is not None:
            self._progress(progress)
        elif record.msg == "Component %s is running.":
            self.current, self.cached, self.started = record.args[0], False, time.monotonic()
            if self.console.verbose:
                self.console.say(f"medtfx: {self.current} is running")
            else:
                self.console.say(self._head(), end="")
                self.line_open = True
        elif record.msg == "A cached execution %d is used.":
            self.cached = True
        elif record.msg == "Component %s is finished.":
            self._finished(record.args[0])

    def _progress(self, progress: dict) -> None:
        if self.current is None or self.console.verbose:
            return
        if self.live:
            self.console.say(f"\r{self._head()}{progress['text']}\x1b[K", end="")
        elif progress["epoch_end"]:
            if self.line_open:
                self.console.say()
                self.line_open = False
            self.console.say(f"{'':10}{progress['text']}")

    def _finished(self, name: str) -> None:
        seconds = time.monotonic() - self.started
        note = f"{seconds:6.1f} s" + ("  (cached)" if self.cached else "")
        if self.console.verbose:
            self.console.say(f"medtfx: {name} finished in {note.strip()}")
        elif self.live:
            self.console.say(f"\r{self._head()}{note}\x1b[K")
        else:
            self.console.say(note if self.line_open else f"{self._head()}{note}")
        self.done += 1
        self.current, self.line_open = None, False

    def interrupt(self) -> None:
        """Ends a half-printed progress line when a component fails."""
        if self.current and not self.console.verbose:
            self.console.say("failed" if self.line_open else f"{self._head()}failed")

    def __enter__(self) -> "ComponentProgress":
        logging.getLogger("absl").addHandler(self)
        progress = logging.getLogger(PROGRESS_LOGGER)
        progress.setLevel(logging.INFO)
        progress.addHandler(self)
        return self

    def __exit__(self, *exc) -> None:
        logging.getLogger("absl").removeHandler(self)
        logging.getLogger(PROGRESS_LOGGER).removeHandler(self)
