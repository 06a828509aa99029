"""What a served model was trained and evaluated on, found through ML Metadata: the
reference a window of requests is compared with.

The push that wrote the serving version leads (pipeline/results/history.py trace_version)
to the Examples its Trainer read and to the evaluation of the run that packaged it. From
the Examples: the training fold's metadata codes and image statistics, on at most
`monitor.reference_images` records spread over the training shards (the numbers need
hundreds, not 30,000 images). From the evaluation: the evaluation fold's score histogram
and the share of positive decisions at the operating threshold the model ships with.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from modules.errors import MedtfxError
from pipeline.config import PipelineConfig
from pipeline.monitor.image_stats import image_features
from pipeline.serving.directory import serving_versions
from pipeline.core.workdir import WorkDir
from pipeline.results.eval_results import load_evaluation, score_histograms
from pipeline.results.history import trace_version
from pipeline.results.mlmd import find_run, open_store, outputs_by_type


class NoReferenceError(MedtfxError):
    """No served model, or nothing recorded of what it was trained on."""


@dataclasses.dataclass(frozen=True)
class Reference:
    version: str
    run_id: str  # the run that packaged the model
    images: list[dict[str, float]]  # image statistics of the training sample
    metadata: dict[str, list[int]]  # the model features' codes in the training sample
    score_counts: np.ndarray | None  # evaluation-fold examples per score bin
    score_upper: np.ndarray | None  # ... each bin's upper edge
    decision_share: float | None  # evaluation-fold share at or above the threshold
    threshold: float | None


def load_reference(work: WorkDir, config: PipelineConfig, version: str | None) -> Reference:
    """The reference of serving version `version` (default: the newest, which TF Serving
    serves)."""
    if version is None:
        versions = serving_versions(work.serving)
        if not versions:
            raise NoReferenceError(f"{work.serving}: no served model (run `medtfx run` "
                                   "first, or give --model)")
        version = versions[-1]
    if not os.path.exists(work.metadata):
        raise NoReferenceError(f"{work.metadata}: no ML Metadata store in the work dir")
    store = open_store(work.metadata)
    lineage = trace_version(store, version)
    if not lineage.data:
        raise NoReferenceError(f"serving version {version}: no training data recorded")
    images, metadata = _training_sample(lineage.data[0].examples.uri, config)
    counts, upper, share = _evaluation(store, config, lineage.packaged.run_id,
                                       lineage.operating_threshold)
    return Reference(version, lineage.packaged.run_id, images, metadata, counts, upper,
                     share, lineage.operating_threshold)


def _training_sample(examples_uri: str, config: PipelineConfig
                     ) -> tuple[list[dict[str, float]], dict[str, list[int]]]:
    """Image statistics and metadata codes of up to `monitor.reference_images` training
    records, the same number from each training shard."""
    from tensorflow.core.example import example_pb2

    from modules.records import record_dataset

    task, names = config.task, config.split_plan.names(config.split_plan.train)
    per_shard = max(1, config.monitor.reference_images // len(names))
    images, metadata = [], {key: [] for key in task.model_features}
    for name in names:
        folder = os.path.join(examples_uri, f"Split-{name}")
        files = sorted(os.path.join(folder, n) for n in os.listdir(folder))
        for record in record_dataset(files).take(per_shard).as_numpy_iterator():
            features = example_pb2.Example.FromString(record).features.feature
            found = image_features(features[task.image_key].bytes_list.value[0])
            if found is not None:
                images.append(found)
            for key in task.model_features:
                codes = features[key].int64_list.value
                metadata[key].append(int(codes[0]) if codes else task.missing)
    if not images:
        raise NoReferenceError(f"{examples_uri}: no readable training image")
    return images, metadata


def _evaluation(store, config: PipelineConfig, run_id: str, threshold: float | None
                ) -> tuple[np.ndarray | None, np.ndarray | None, float | None]:
    """The evaluation fold's scores per bin of the Evaluator's curve (the positive or
    urgent classes' probability), and the share decided positive at `threshold`."""
    run = find_run(store, config.pipeline_name, run_id)
    evaluations = outputs_by_type(store, store.get_executions_by_context(run.id)).get(
        "ModelEvaluation", []) if run else []
    if not evaluations:
        return None, None, None
    evaluation = config.evaluation
    overall = load_evaluation(evaluations[0].uri, config.task, evaluation.min_slice_positives,
                              evaluation.min_slice_negatives).get("overall")
    if overall is None or not overall.curve:
        return None, None, None
    positives, negatives = score_histograms(overall.curve)
    counts = positives + negatives
    thresholds = np.array(sorted(m.threshold for m in overall.curve))
    upper = np.append(thresholds, np.inf)
    share = None
    if threshold is not None:
        at = overall.at(threshold)
        share = (at.tp + at.fp) / max(at.tp + at.fp + at.tn + at.fn, 1)
    return counts, upper, share
