"""Ending a medtfx process without the interpreter's teardown.

After a command or a container task has done its work, Python's finalisation tears down
TensorFlow, Beam and gRPC: seconds of work for nobody, and C++ destructors and threads that
can abort the process (`terminate called after throwing ...`) after the results are written.
`end_process` writes out what is buffered and ends the process at once with the status.
"""

from __future__ import annotations

import ctypes
import logging
import os
import sys


def end_process(status: int) -> None:
    """Flushes logging handlers, sys.stdout and sys.stderr, and C's stdio buffers (output of
    native libraries), then ends the process with `status`; never returns."""
    logging.shutdown()  # flushes and closes every handler, as at a normal exit
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (AttributeError, OSError, ValueError):  # closed, replaced or gone
            pass
    ctypes.CDLL(None).fflush(None)
    os._exit(status if 0 <= status <= 255 else 1)  # the OS keeps 8 bits: 256 would read 0
