"""ModelPackager: turns a blessed model into the one that is pushed.

It picks the operating threshold (of a binary model, or of a multi-class model's urgent
classes) on the evaluation fold (among the thresholds that reach
the target sensitivity, the one with the best specificity), writes it into the copy's
threshold asset so `serving_default` returns a decision with the score, and adds the model
card and TF Serving's warm-up requests; a copy that fails the load check (loaded in a fresh
process, every client signature called) is not packaged, and the Pusher refuses it. The
Trainer's own model is left as it is: the resolver keeps offering it as the baseline.
"""

import json
import os

from tfx.dsl.component.experimental.annotations import (InputArtifact, OutputArtifact,
                                                          Parameter)
from tfx.dsl.component.experimental.decorators import component
from tfx.dsl.io import fileio
from tfx.types import standard_artifacts
from tfx.utils import io_utils, path_utils

from modules.artifacts import CARD_DIR, PACKAGE_FILE, THRESHOLD_ASSET
from modules.errors import MedtfxError
from pipeline.results.eval_results import load_evaluation, operating_threshold
from pipeline.results.calibration import recorded_calibration
from pipeline.results.model_card import build_card, render_markdown
from pipeline.results.packaging import PackagerSettings
from pipeline.results.statistics import load_statistics
from pipeline.serving.load_check import FAILURE_PROPERTY, check_model
from pipeline.serving.warmup import build_requests, evaluation_records, write_requests

Model = standard_artifacts.Model


class NoOperatingPointError(MedtfxError):
    """The evaluation fold has no positive (or urgent) case to set a sensitivity on."""


@component
def ModelPackager(
        model: InputArtifact[Model],
        evaluation: InputArtifact[standard_artifacts.ModelEvaluation],
        blessing: InputArtifact[standard_artifacts.ModelBlessing],
        statistics: InputArtifact[standard_artifacts.ExampleStatistics],
        examples: InputArtifact[standard_artifacts.Examples],
        packaged_model: OutputArtifact[Model],
        settings: Parameter[str]) -> None:
    if blessing.get_int_custom_property("blessed") != 1:
        packaged_model.set_int_custom_property("packaged", 0)
        return
    handed = PackagerSettings.model_validate_json(settings)
    task = handed.task
    slices = load_evaluation(evaluation.uri, task, handed.gate.min_slice_positives,
                             handed.gate.min_slice_negatives)
    threshold = None
    if task.binary or task.urgent_ids:  # a multi-class model without a rule has none
        threshold = operating_threshold(slices["overall"].curve, handed.target_sensitivity)
        if threshold is None:
            raise NoOperatingPointError(f"the evaluation shards hold no {task.flagged} "
                                        "example: no operating threshold can be chosen")
    source = path_utils.serving_model_path(model.uri)
    target = path_utils.serving_model_path(packaged_model.uri)
    io_utils.copy_dir(source, target)
    if threshold is not None:
        with fileio.open(os.path.join(target, "assets", THRESHOLD_ASSET), "w") as f:
            f.write(f"{threshold}\n")

    splits = sorted({s for role in handed.splits.values() for s in role})
    card = build_card(handed, slices, threshold, load_statistics(statistics.uri, splits),
                      recorded_calibration(model.uri))
    fileio.makedirs(os.path.join(target, CARD_DIR))
    with fileio.open(os.path.join(target, CARD_DIR, "model_card.json"), "w") as f:
        json.dump(card, f, indent=2)
    with fileio.open(os.path.join(target, CARD_DIR, "model_card.md"), "w") as f:
        f.write(render_markdown(card))
    write_requests(target, build_requests(target, evaluation_records(
        examples, handed.splits["evaluation"], handed.serving.warmup_examples), task))
    failure = check_model(target, handed.serving.load_check_timeout)
    if failure is not None:
        packaged_model.set_int_custom_property("packaged", 0)
        packaged_model.set_string_custom_property(FAILURE_PROPERTY,
                                                  json.dumps(failure.as_check()))
        return
    with fileio.open(os.path.join(target, PACKAGE_FILE), "w") as f:
        json.dump({"trained_model": source, "operating_threshold": threshold}, f)
    packaged_model.set_int_custom_property("packaged", 1)
    if threshold is not None:
        packaged_model.set_float_custom_property("operating_threshold", threshold)
