"""Progress as log records, which medtfx's console turns into one updating line.

The model code knows nothing of terminals: it logs to PROGRESS_LOGGER, with the numbers in
the record's `medtfx_progress` attribute. `medtfx run` draws them (pipeline/core/console.py);
under any other orchestrator they are ordinary log lines. No heavy imports: the console
reads these names without loading TensorFlow.
"""

from __future__ import annotations

import logging

PROGRESS_LOGGER = "medtfx.progress"
PROGRESS_FIELD = "medtfx_progress"


def report_progress(text: str, epoch_end: bool, done: int, total: int) -> None:
    logging.getLogger(PROGRESS_LOGGER).info(
        "%s", text, extra={PROGRESS_FIELD: {"text": text, "epoch_end": epoch_end,
                                            "done": done, "total": total}})
