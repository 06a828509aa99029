"""The terminal of `medtfx run`: a line per component, and the Trainer's progress updated in
place on a terminal, a line per epoch elsewhere (CI logs)."""

from __future__ import annotations

import io
import logging

from modules.callbacks import TrainingProgress
from modules.progress import PROGRESS_LOGGER
from pipeline.core.console import ComponentProgress, Console


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def absl(message: str, *args) -> None:
    logging.getLogger("absl").info(message, *args)


def run_trainer(out: io.StringIO) -> str:
    """What the console shows of a Trainer that trains two epochs of two steps."""
    callback = TrainingProgress(epochs=2, steps_per_epoch=2, every=0.0)
    with Console(None, verbose=False) as console:
        console.out = out
        run_components(console, callback)
    return out.getvalue()


def run_components(console: Console, callback: TrainingProgress) -> None:
    with ComponentProgress(console, total=1):
        absl("Component %s is running.", "Trainer")
        callback.on_train_begin()
        for epoch in range(2):
            callback.on_epoch_begin(epoch)
            for step in range(2):
                callback.on_train_batch_end(step)
            callback.on_epoch_end(epoch, {"val_auc": 0.5 + epoch / 10})
        absl("Component %s is finished.", "Trainer")


def test_a_log_gets_a_line_per_epoch_and_the_components_time():
    lines = run_trainer(io.StringIO()).splitlines()
    assert lines[0].strip() == "[ 1/1] Trainer"
    assert lines[1].strip().startswith("epoch 1/2, validation AUC 0.500,")
    assert lines[1].endswith("left")
    assert lines[2].strip() == "epoch 2/2, validation AUC 0.600"  # nothing left to do
    assert lines[3].startswith("  [ 1/1] Trainer") and lines[3].endswith(" s")
    assert len(lines) == 4


def test_a_terminal_gets_one_line_rewritten_in_place():
    shown = run_trainer(Terminal())
    assert shown.count("\n") == 1 and shown.endswith(" s\x1b[K\n")  # cleared to the end
    updates = shown.split("\r")[1:]
    assert any("epoch 1/2, step 2/2" in u for u in updates)
    assert all(u.startswith("  [ 1/1] Trainer") for u in updates)


def test_training_progress_is_an_ordinary_log_record_elsewhere(caplog):
    callback = TrainingProgress(epochs=1, steps_per_epoch=1, every=0.0)
    with caplog.at_level(logging.INFO, logger=PROGRESS_LOGGER):
        callback.on_train_begin()
        callback.on_epoch_begin(0)
        callback.on_train_batch_end(0)
        callback.on_epoch_end(0, {"val_auc": 0.75})
    assert caplog.messages[-1] == "epoch 1/1, validation AUC 0.750"
