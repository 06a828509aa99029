"""The report's gallery: the evaluation fold's worst misses at the operating threshold, each
shown with its Grad-CAM heat map, so a reviewer sees which lesions the model missed and
where it looked.

Computed when `medtfx report` writes the page, never in the run: the run's evaluated model
(the Evaluator's input) scores the evaluation fold's records through serving_default (at
most evaluation.gallery_max_examples of them, the fold's first; the Evaluator keeps no
per-example scores), and only the shown cases go through the model's `explain` signature:
the evaluation.gallery_cases false negatives with the lowest scores and false positives
with the highest, overall and in the gated slice of lowest AUC. Images are embedded as
data: URIs, so the page stays one file.
"""

from __future__ import annotations

import base64
import dataclasses
import html
import os

import numpy as np

from modules.task import TaskSpec
from pipeline.config import PipelineConfig
from pipeline.results.eval_results import SLICE_AND, SLICE_IS, SliceResult

GALLERY_STYLE = """
.gallery { display: flex; flex-wrap: wrap; gap: .8em; margin-bottom: 1em; }
.case { border: 1px solid #ddd; padding: .4em; width: 272px; }
.case img { width: 128px; height: 128px; object-fit: contain; image-rendering: pixelated; }
.case figcaption { font-weight: normal; font-size: 12px; }
"""


@dataclasses.dataclass
class Example:
    """One evaluation record as the gallery needs it."""

    image: bytes
    name: str  # the record's image name
    label: int  # 1: the flagged class (or an urgent one)
    score: float
    codes: dict[str, int]  # the task's metadata codes, as served


def score_fold(model_dir: str, files: list[str], task: TaskSpec, limit: int, batch: int
               ) -> list[Example]:
    """The first `limit` records of the evaluation fold, each scored by the model's
    serving_default as the Evaluator scored it, `batch` at a time."""
    import tensorflow as tf

    serve = tf.saved_model.load(model_dir).signatures["serving_default"]
    features = {task.image_key: tf.io.FixedLenFeature([], tf.string),
                task.label.key: tf.io.FixedLenFeature([], tf.int64),
                task.image_name_key: tf.io.FixedLenFeature([], tf.string, default_value=b""),
                **{key: tf.io.FixedLenFeature([], tf.int64, default_value=task.missing)
                   for key in task.metadata}}
    flagged = [1] if task.binary else task.urgent_ids
    compression = "GZIP" if files and files[0].endswith(".gz") else ""
    examples = []
    for records in tf.data.TFRecordDataset(files, compression).take(limit).batch(batch):
        parsed = {k: v.numpy() for k, v in tf.io.parse_example(records, features).items()}
        scores = serve(examples=records)["probability"].numpy()[:, 0]
        examples += [Example(parsed[task.image_key][i], parsed[task.image_name_key][i].decode(),
                             int(parsed[task.label.key][i] in flagged), float(score),
                             {key: int(parsed[key][i]) for key in task.metadata})
                     for i, score in enumerate(scores)]
    return examples


def slice_names(codes: dict[str, int], families: list[list[str]], task: TaskSpec
                ) -> set[str]:
    """The names of the slices an example falls in, as the report names them (TFMA orders
    a cross's features by name)."""
    values = dict(codes)
    for feature in task.bucketed:
        edges = sorted(feature.buckets)
        raw = codes[feature.key]
        values[feature.slice_key] = (task.missing if raw == task.missing
                                     else int(np.searchsorted(edges, raw, side="right")))
    return {SLICE_AND.join(SLICE_IS.join(task.slice_value(column, values[column]))
                           for column in sorted(family))
            for family in families if all(column in values for column in family)}


def lowest_gated_slice(slices: dict[str, SliceResult]) -> str | None:
    gated = {name: r.metrics.get("auc") for name, r in slices.items()
             if name != "overall" and r.gated and r.metrics.get("auc") is not None}
    return min(gated, key=gated.get) if gated else None


def worst(examples: list[Example], threshold: float, cases: int) -> dict[str, list[Example]]:
    """The lowest-scored false negatives and the highest-scored false positives."""
    missed = sorted((e for e in examples if e.label and e.score < threshold),
                    key=lambda e: e.score)
    raised = sorted((e for e in examples if not e.label and e.score >= threshold),
                    key=lambda e: -e.score)
    return {"false negatives": missed[:cases], "false positives": raised[:cases]}


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode()


def case_html(example: Example, model, task: TaskSpec) -> str:
    """One case: the image as served, its heat map overlay, its score and metadata."""
    from pipeline.serving.overlay import blend, decoded, png

    image = decoded(example.image)
    heat = model.explain(example.image, example.codes)
    return (f'<figure class="case"><img alt="image" src="{data_uri(png(image))}">'
            f'<img alt="heat map" src="{data_uri(png(blend(image, heat)))}">'
            f"<figcaption>{html.escape(caption(example, task))}</figcaption></figure>")


def caption(example: Example, task: TaskSpec) -> str:
    """Its name, score and recorded metadata: 'ISIC_0000012; score 0.031; sex female; ...'."""
    categorical = {feature.key for feature in task.categorical}
    recorded = [f"{task.metadata[key].label} "
                f"{task.slice_value(key, code)[1] if key in categorical else code}"
                for key, code in example.codes.items() if code != task.missing]
    return "; ".join([example.name, f"score {example.score:.3f}", *recorded])


def gallery_html(model_dir: str, record_files: list[str], config: PipelineConfig,
                 slices: dict[str, SliceResult], threshold: float | None) -> str:
    """The gallery section's body: cases per group and kind, or why there are none."""
    from pipeline.serving.model import load_model

    evaluation, task = config.evaluation, config.task
    if threshold is None or not evaluation.gallery_cases:
        return "<p>No gallery: no operating threshold to call a case missed.</p>"
    if not os.path.exists(os.path.join(model_dir, "saved_model.pb")):
        return f"<p>No gallery: the evaluated model is no longer at {html.escape(model_dir)}.</p>"
    model = load_model(model_dir, task)
    if model.explainer is None:
        return ("<p>No gallery: the model has no explain signature (exported before "
                "explanations, or a hub backbone).</p>")
    examples = score_fold(model_dir, record_files, task, evaluation.gallery_max_examples,
                          evaluation.max_batch)
    groups = {"overall": examples}
    lowest = lowest_gated_slice(slices)
    if lowest:
        groups[lowest] = [e for e in examples
                          if lowest in slice_names(e.codes, evaluation.slices, task)]
    parts = [f"<p>The evaluation fold's worst misses at the operating threshold "
             f"{threshold:.3f} among the {len(examples)} examples scored, each beside its "
             "Grad-CAM heat map (what raised the score; pale yellow is hottest).</p>"]
    for group, members in groups.items():
        for kind, chosen in worst(members, threshold, evaluation.gallery_cases).items():
            title = f"{kind.capitalize()}, {group}" + (" (lowest gated slice)"
                                                      if group != "overall" else "")
            cases = "".join(case_html(e, model, task) for e in chosen) or "<p>none</p>"
            parts.append(f"<h3>{html.escape(title)}</h3><div class=\"gallery\">{cases}</div>")
    return "".join(parts)


def evaluated_inputs(store, executions, splits: list[str]) -> tuple[str, list[str]] | None:
    """(the evaluated model's SavedModel directory, the record files of the evaluation
    fold's `splits`) from the Evaluator's inputs in ML Metadata; None without an
    Evaluator."""
    from tfx.utils import path_utils

    from pipeline.results.mlmd import node_name

    evaluator = [e for e in executions if node_name(store, e.id)[1] == "Evaluator"]
    if not evaluator:
        return None
    events = store.get_events_by_execution_ids([evaluator[0].id])
    # One event lists every key an artifact came in under: a cached Trainer's model is
    # both the candidate and the baseline.
    inputs = {step.key: event.artifact_id for event in events if event.type == event.INPUT
              for step in event.path.steps if step.HasField("key")}
    artifacts = {a.id: a for a in store.get_artifacts_by_id([inputs["model"],
                                                              inputs["examples"]])}
    model, examples = artifacts[inputs["model"]], artifacts[inputs["examples"]]
    folders = [os.path.join(examples.uri, f"Split-{split}") for split in splits]
    files = [os.path.join(folder, name) for folder in folders
             for name in sorted(os.listdir(folder))]
    return path_utils.serving_model_path(model.uri), files


def explained(models: list) -> bool:
    """Whether the run's trained model answers heat maps: the first Model artifact's
    SavedModel holds the `explain` signature (a hub backbone's does not)."""
    from tensorflow.core.protobuf import saved_model_pb2
    from tfx.dsl.io import fileio
    from tfx.utils import path_utils

    from modules.signatures import EXPLAIN

    for model in models:
        path = os.path.join(path_utils.serving_model_path(model.uri), "saved_model.pb")
        if fileio.exists(path):
            saved = saved_model_pb2.SavedModel()
            with fileio.open(path, "rb") as f:
                saved.ParseFromString(f.read())
            return EXPLAIN in saved.meta_graphs[0].signature_def
    return False
