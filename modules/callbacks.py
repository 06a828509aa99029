"""The Trainer's callbacks. BestEpoch keeps the weights of the epoch with the best validation
AUC, restores them when training ends, and stops training that has stopped improving;
TrainingProgress reports epoch, step and the time left.

One callback does both so the exported model is always the best epoch seen, across both
fine-tuning stages, whether or not training stopped early (Keras' EarlyStopping restores
only when it is the one that stopped).
"""

from __future__ import annotations

import math
import time

import tf_keras as keras
from absl import logging

from modules.progress import report_progress


class BestEpoch(keras.callbacks.Callback):
    def __init__(self, monitor: str = "val_auc", patience: int | None = None):
        super().__init__()
        self.monitor = monitor
        self.patience = patience
        self.best = -math.inf
        self.best_epoch: int | None = None
        self.best_weights = None
        self.epochs_seen = 0
        self._since_best = 0

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.epochs_seen += 1
        value = (logs or {}).get(self.monitor)
        if value is None:
            raise KeyError(f"BestEpoch: no {self.monitor} in the epoch's logs; is there "
                           "validation data?")
        if value > self.best:
            self.best, self.best_epoch = float(value), self.epochs_seen
            self.best_weights = self.model.get_weights()
            self._since_best = 0
            return
        self._since_best += 1
        if self.patience is not None and self._since_best >= self.patience:
            logging.info("No better %s for %d epochs: stopping", self.monitor, self.patience)
            self.model.stop_training = True

    @property
    def stopped(self) -> bool:
        return self.patience is not None and self._since_best >= self.patience

    def restore(self) -> None:
        """Puts the best epoch's weights back into the model."""
        if self.best_weights is None:
            raise RuntimeError("BestEpoch: no epoch was completed")
        self.model.set_weights(self.best_weights)
        logging.info("Restored epoch %d of %d (%s %.4f)", self.best_epoch, self.epochs_seen,
                     self.monitor, self.best)


def _clock(seconds: float) -> str:
    minutes, seconds = divmod(int(seconds), 60)
    return f"{minutes}:{seconds:02d}"


class TrainingProgress(keras.callbacks.Callback):
    """Epoch, step and the time left, at most once per `every` seconds and at each epoch's
    end; one callback across both fine-tuning stages."""

    def __init__(self, epochs: int, steps_per_epoch: int, every: float = 1.0):
        super().__init__()
        self.epochs, self.steps_per_epoch, self.every = epochs, steps_per_epoch, every
        self.done = 0
        self.started = self.last = 0.0
        self.epoch = 0

    def on_train_begin(self, logs: dict | None = None) -> None:
        if not self.started:
            self.started = time.monotonic()

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.epoch = epoch + 1

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        self.done += 1
        if time.monotonic() - self.last >= self.every:
            self._report(f"step {batch + 1}/{self.steps_per_epoch}", epoch_end=False)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        auc = (logs or {}).get("val_auc")
        self._report("validation AUC " + ("-" if auc is None else f"{auc:.3f}"),
                     epoch_end=True)

    def _report(self, detail: str, epoch_end: bool) -> None:
        self.last = time.monotonic()
        total = self.epochs * self.steps_per_epoch
        elapsed = self.last - self.started
        left = elapsed / self.done * (total - self.done) if self.done else None
        text = (f"epoch {self.epoch}/{self.epochs}, {detail}"
                + (f", {_clock(left)} left" if left is not None and self.done < total else ""))
        report_progress(text, epoch_end, self.done, total)
