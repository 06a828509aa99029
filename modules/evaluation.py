"""The Evaluator's user module (TFX `module_path`): TFMA's own extractors, on batches of at
most the model specs' `inference_batch_size` examples, and between the model's predictions
and the slicing, a count of the examples scored, reported as progress (modules/progress.py)
so that a long evaluation shows where it is.

TFMA's default predictions extractor runs the model on the batches it reads, and the reader
grows them towards 1,000 examples whatever `inference_batch_size` says: 1,000 images at
512 px are 3 GB of pixels before the network, and its activations many times that."""

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
BOUND_STAGE = "BoundBatches"
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


def _slices(extracts: dict, size: int):
    """The extracts of one read batch, as batches of at most `size` examples (zero-copy
    slices of its Arrow record batch)."""
    batch = extracts[constants.ARROW_RECORD_BATCH_KEY]
    for start in range(0, batch.num_rows, size):
        yield {**extracts, constants.ARROW_RECORD_BATCH_KEY: batch.slice(start, size)}


def bounded_batches(size: int) -> tfma.extractors.Extractor:
    """An extractor, first of all, that bounds every later extractor's batch to `size`."""
    return tfma.extractors.Extractor(stage_name=BOUND_STAGE,
                                     ptransform=beam.FlatMap(_slices, size=size))


def custom_extractors(eval_shared_model, eval_config: tfma.EvalConfig,
                      tensor_adapter_config) -> list[tfma.extractors.Extractor]:
    """Called by TFX's Evaluator executor: TFMA's default extractors for the same models
    and config, on batches bounded by the model specs' inference_batch_size (when set),
    with the progress count before the batches are split into examples."""
    extractors = tfma.default_extractors(eval_shared_model=eval_shared_model,
                                         eval_config=eval_config,
                                         tensor_adapter_config=tensor_adapter_config)
    at = [e.stage_name for e in extractors].index(
        unbatch_extractor.UNBATCH_EXTRACTOR_STAGE_NAME)
    extractors = [*extractors[:at], scored_progress(), *extractors[at:]]
    sizes = [spec.inference_batch_size for spec in eval_config.model_specs
             if spec.inference_batch_size]
    return [bounded_batches(min(sizes)), *extractors] if sizes else extractors
