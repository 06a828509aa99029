"""BestEpoch: keeps the weights of the epoch with the best validation AUC, restores them
when training ends, and stops training that has stopped improving.

One callback does both so the exported model is always the best epoch seen, across both
fine-tuning stages, whether or not training stopped early (Keras' EarlyStopping restores
only when it is the one that stopped).
"""

from __future__ import annotations

import math

import tf_keras as keras
from absl import logging


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
