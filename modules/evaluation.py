"""The Evaluator's user module (TFX `module_path`): TFMA's own extractors, and between the
model's predictions and the slicing, a count of the examples scored, reported as progress
(modules/progress.py) so that a long evaluation shows where it is."""

from __future__ import annotations

import threading
import time
import uuid

import apache_beam as beam
import tensorflow_model_analysis as tfma
from tensorflow_model_analysis import constants
from tensorflow_model_analysis.extractors import unbatch_extractor
from tensorflow_model_analysis.utils import util

from modules.progress import report_progress

PROGRESS_STAGE = "ReportExamplesScored"
REPORT_EVERY_SECONDS = 1.0

# Examples scored per evaluation, across the DoFn instances of one process.
_scored: dict[str, int] = {}
_lock = threading.Lock()


class _CountScored(beam.DoFn):
    def __init__(self, evaluation: str, every: float):
        self.evaluation = evaluation
        self.every = every
        self.last = 0.0

    def process(self, extracts: dict):
        rows = util.batch_size(extracts[constants.FEATURES_KEY]) or 0
        with _lock:
            done = _scored[self.evaluation] = _scored.get(self.evaluation, 0) + rows
        if time.monotonic() - self.last >= self.every:
            self.last = time.monotonic()
            report_progress(f"{done:,} example{'' if done == 1 else 's'} scored",
                            epoch_end=False, done=done, total=0)
        yield extracts


def scored_progress(every: float = REPORT_EVERY_SECONDS) -> tfma.extractors.Extractor:
    """An extractor that passes batched extracts through and reports how many examples
    have been scored so far."""
    return tfma.extractors.Extractor(
        stage_name=PROGRESS_STAGE,
        ptransform=beam.ParDo(_CountScored(uuid.uuid4().hex, every)))


def custom_extractors(eval_shared_model, eval_config: tfma.EvalConfig,
                      tensor_adapter_config) -> list[tfma.extractors.Extractor]:
    """Called by TFX's Evaluator executor: TFMA's default extractors for the same models
    and config, with the progress count before the batches are split into examples."""
    extractors = tfma.default_extractors(eval_shared_model=eval_shared_model,
                                         eval_config=eval_config,
                                         tensor_adapter_config=tensor_adapter_config)
    at = [e.stage_name for e in extractors].index(
        unbatch_extractor.UNBATCH_EXTRACTOR_STAGE_NAME)
    return [*extractors[:at], scored_progress(), *extractors[at:]]
