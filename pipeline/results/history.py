"""What a work dir's ML Metadata remembers: every pipeline run, and the lineage of a served
model back to the data files it was trained on (`medtfx history`).

LocalDagRunner records each run as a `pipeline_run` context. A component taken from the
cache appears in the new run as a CACHED execution whose events point at the artifacts of
the run that computed them, so an artifact's producer is the first execution that output it.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os

import tensorflow as tf
from ml_metadata.metadata_store import metadata_store
from ml_metadata.proto import metadata_store_pb2
from tfx.proto import example_gen_pb2
from tfx.types import standard_component_specs as keys
from tfx.utils import io_utils, proto_utils

from modules.errors import MedtfxError
from pipeline.results.eval_results import load_evaluation
from pipeline.results.mlmd import OUTPUT_EVENTS, node_name
from pipeline.results.packaging import PackagerSettings

INPUT_EVENTS = (metadata_store_pb2.Event.INPUT, metadata_store_pb2.Event.DECLARED_INPUT)
PACKAGED_MODEL_KEY = "packaged_model"  # ModelPackager's output
EVALUATOR, PACKAGER, PUSHER = "Evaluator", "ModelPackager", "Pusher"  # ids create_pipeline gives
PipelineStore = metadata_store.MetadataStore
Artifact = metadata_store_pb2.Artifact


class UnknownVersionError(MedtfxError):
    """No push recorded the serving version asked for."""


@dataclasses.dataclass(frozen=True)
class RunRecord:
    """One pipeline run: its data, its model and what became of the model."""

    run_id: str
    started: str  # ISO 8601, UTC
    spans: list[int]  # of the Examples the run used
    model_id: int | None  # the model the Evaluator judged (None: training did not finish)
    model_cached: bool | None  # taken from an earlier run through the cache, not trained here
    blessed: bool | None  # None: the Evaluator did not finish
    pushed_version: str | None
    pushed_destination: str | None
    auc: float | None  # overall, on the evaluation splits
    operating_threshold: float | None  # chosen by ModelPackager for a blessed model
    failed: list[str]  # components whose execution failed


@dataclasses.dataclass(frozen=True)
class Step:
    """An artifact and the execution that produced it."""

    artifact_id: int
    artifact_type: str
    uri: str
    component: str  # node id: Trainer, Trainer_fold0, Ensemble, ...
    execution_id: int
    run_id: str


@dataclasses.dataclass(frozen=True)
class SplitFiles:
    name: str
    pattern: str  # as ImportExampleGen's input_config records it, relative to input_base
    files: list[str]  # matching the pattern for the span now
    # Whether those files still have the sizes and times ImportExampleGen fingerprinted
    # (None: no fingerprint recorded).
    unchanged: bool | None


@dataclasses.dataclass(frozen=True)
class DataSource:
    """An Examples artifact, and the files ImportExampleGen read it from."""

    examples: Step
    span: int
    version: int | None
    split_names: list[str]
    input_base: str
    splits: list[SplitFiles]


@dataclasses.dataclass(frozen=True)
class Lineage:
    """Where a serving version came from, from the push back to the data files."""

    version: str
    destination: str
    # Runs whose Pusher recorded this version, oldest first: the first pushed it, the others
    # found it already serving.
    recorded_by: list[str]
    pushed: Step  # PushedModel <- Pusher
    packaged: Step  # Model <- ModelPackager
    operating_threshold: float | None
    trained: list[Step]  # Model <- Trainer; or each fold's model, then the Ensemble's
    transform: Step | None  # TransformGraph <- Transform
    data: list[DataSource]
    baseline: Step | None  # the model the Evaluator compared against, if any


@dataclasses.dataclass(frozen=True)
class _Node:
    """An execution with its artifacts by event key (e.g. inputs['examples'])."""

    execution: metadata_store_pb2.Execution
    component: str
    inputs: dict[str, list[Artifact]]
    outputs: dict[str, list[Artifact]]

    def input(self, key: str) -> Artifact | None:
        return next(iter(self.inputs.get(key, [])), None)

    def output(self, key: str) -> Artifact | None:
        return next(iter(self.outputs.get(key, [])), None)


def _nodes(store: PipelineStore, executions) -> list[_Node]:
    events = store.get_events_by_execution_ids([e.id for e in executions])
    artifacts = {a.id: a for a in
                 store.get_artifacts_by_id(sorted({e.artifact_id for e in events}))}
    nodes = []
    for execution in executions:
        inputs: dict[str, list[Artifact]] = {}
        outputs: dict[str, list[Artifact]] = {}
        for event in events:
            side = (inputs if event.type in INPUT_EVENTS else
                    outputs if event.type in OUTPUT_EVENTS else None)
            if event.execution_id == execution.id and side is not None and event.path.steps:
                side.setdefault(event.path.steps[0].key, []).append(artifacts[event.artifact_id])
        nodes.append(_Node(execution, node_name(store, execution.id)[1], inputs, outputs))
    return nodes


def _distinct(artifacts) -> list[Artifact]:
    return list({a.id: a for a in artifacts}.values())


def _property(artifact: Artifact, name: str):
    """A property or custom property's value (TFX writes span as either), or None."""
    for properties in (artifact.properties, artifact.custom_properties):
        if name in properties:
            value = properties[name]
            return getattr(value, value.WhichOneof("value"))
    return None


def _started(context: metadata_store_pb2.Context) -> str:
    return datetime.datetime.fromtimestamp(context.create_time_since_epoch / 1000,
                                           datetime.timezone.utc).isoformat(timespec="seconds")


def list_runs(store: PipelineStore) -> list[RunRecord]:
    """Every pipeline run in the store, oldest first."""
    runs = sorted(store.get_contexts_by_type("pipeline_run"),
                  key=lambda c: (c.create_time_since_epoch, c.id))
    return [_run_record(store, run) for run in runs]


def untrained_spans(runs: list[RunRecord], registered: list[int]) -> list[int]:
    """Registered spans that no run got as far as a model on (never run, or every run on
    them failed before the Evaluator)."""
    trained = {span for run in runs if run.model_id is not None for span in run.spans}
    return [span for span in registered if span not in trained]


def _run_record(store: PipelineStore, run: metadata_store_pb2.Context) -> RunRecord:
    nodes = _nodes(store, sorted(store.get_executions_by_context(run.id), key=lambda e: e.id))
    by_id = {node.component: node for node in nodes}
    evaluator, packager, pusher = (by_id.get(c) for c in (EVALUATOR, PACKAGER, PUSHER))
    examples = _distinct(a for node in nodes for side in (node.inputs, node.outputs)
                         for a in side.get(keys.EXAMPLES_KEY, []))
    # Input events are recorded when an execution starts, so a model shows even when the
    # Evaluator then failed. ML Metadata keeps one input event per artifact: a model judged
    # against itself (a rerun, with its own blessing as the baseline) may be recorded under
    # the baseline's key alone.
    model = (evaluator.input(keys.MODEL_KEY) or evaluator.input(keys.BASELINE_MODEL_KEY)
             if evaluator else None)
    trainer = next((n for n in nodes if model is not None
                    and model.id in {a.id for a in n.outputs.get(keys.MODEL_KEY, [])}), None)
    blessing = evaluator.output(keys.BLESSING_KEY) if evaluator else None
    packaged = packager.output(PACKAGED_MODEL_KEY) if packager else None
    evaluation = packager.input(keys.EVALUATION_KEY) if packager else None
    pushed = pusher.output(keys.PUSHED_MODEL_KEY) if pusher else None
    if pushed is not None and _property(pushed, "pushed") != 1:
        pushed = None
    return RunRecord(
        run_id=run.name,
        started=_started(run),
        spans=sorted({_property(a, "span") or 0 for a in examples}),
        model_id=model.id if model else None,
        model_cached=(trainer.execution.last_known_state == metadata_store_pb2.Execution.CACHED
                      if trainer else None),
        blessed=_property(blessing, "blessed") == 1 if blessing else None,
        pushed_version=_property(pushed, "pushed_version") if pushed else None,
        pushed_destination=_property(pushed, "pushed_destination") if pushed else None,
        auc=_overall_auc(packager, evaluation) if evaluation else None,
        operating_threshold=_property(packaged, "operating_threshold") if packaged else None,
        failed=[n.component for n in nodes
                if n.execution.last_known_state == metadata_store_pb2.Execution.FAILED])


def _overall_auc(packager: _Node, evaluation: Artifact) -> float | None:
    """Overall AUC, read with the task and slice minimums ModelPackager read the same
    evaluation with."""
    settings = PackagerSettings.model_validate_json(_property(packager.execution, "settings"))
    overall = load_evaluation(evaluation.uri, settings.task, settings.gate.min_slice_positives,
                              settings.gate.min_slice_negatives).get("overall")
    return overall.metrics.get("auc") if overall else None


def _pushes(store: PipelineStore) -> list[Artifact]:
    """PushedModel artifacts that record a push, oldest first."""
    return sorted((a for a in store.get_artifacts_by_type("PushedModel")
                   if _property(a, "pushed") == 1), key=lambda a: a.id)


def pushed_versions(store: PipelineStore) -> list[str]:
    """Every serving version a push recorded, oldest first."""
    return list(dict.fromkeys(_property(a, "pushed_version") for a in _pushes(store)))


def _producer(store: PipelineStore, artifact: Artifact) -> _Node:
    events = store.get_events_by_artifact_ids([artifact.id])
    first = min(e.execution_id for e in events if e.type in OUTPUT_EVENTS)
    return _nodes(store, store.get_executions_by_id([first]))[0]


def _run_of(store: PipelineStore, execution_id: int) -> str:
    run_type = store.get_context_type("pipeline_run").id
    return next((c.name for c in store.get_contexts_by_execution(execution_id)
                 if c.type_id == run_type), "")


def _step(store: PipelineStore, artifact: Artifact) -> tuple[_Node, Step]:
    node = _producer(store, artifact)
    return node, Step(artifact.id, artifact.type, artifact.uri, node.component,
                      node.execution.id, _run_of(store, node.execution.id))


def trace_version(store: PipelineStore, version: str) -> Lineage:
    """The lineage of serving version `version`, from the push that wrote it."""
    pushes = [a for a in _pushes(store) if _property(a, "pushed_version") == version]
    if not pushes:
        known = ", ".join(pushed_versions(store)) or "none"
        raise UnknownVersionError(f"no push recorded serving version {version}; "
                                  f"pushed versions: {known}")
    pusher, pushed = _step(store, pushes[0])
    packager, packaged = _step(store, pusher.input(keys.MODEL_KEY))
    trained = _training(store, packager.input(keys.MODEL_KEY))
    examples, graphs = (_distinct(a for node, _ in trained for a in node.inputs.get(key, []))
                        for key in (keys.EXAMPLES_KEY, keys.TRANSFORM_GRAPH_KEY))
    baseline_id = _property(pusher.input(keys.MODEL_BLESSING_KEY), "baseline_model_id")
    baseline = store.get_artifacts_by_id([baseline_id])[0] if baseline_id else None
    runs = {e.execution_id for e in store.get_events_by_artifact_ids([a.id for a in pushes])
            if e.type in OUTPUT_EVENTS}
    return Lineage(
        version=version,
        destination=_property(pushes[0], "pushed_destination"),
        recorded_by=list(dict.fromkeys(_run_of(store, e) for e in sorted(runs))),
        pushed=pushed,
        packaged=packaged,
        operating_threshold=_property(packager.output(PACKAGED_MODEL_KEY),
                                      "operating_threshold"),
        trained=[step for _, step in trained],
        transform=_step(store, graphs[0])[1] if graphs else None,
        data=[_data_source(store, a) for a in examples],
        baseline=_step(store, baseline)[1] if baseline else None)


def _training(store: PipelineStore, model: Artifact) -> list[tuple[_Node, Step]]:
    """The executions that made `model`: its producer, after the producers of the models it
    was built from (an Ensemble's members; not a Trainer's warm-start base model)."""
    node, step = _step(store, model)
    members = [a for key, artifacts in sorted(node.inputs.items(),  # model_2 before model_10
                                              key=lambda kv: (len(kv[0]), kv[0]))
               if key != keys.BASE_MODEL_KEY for a in artifacts if a.type == "Model"]
    return [*(s for member in members for s in _training(store, member)), (node, step)]


def _data_source(store: PipelineStore, examples: Artifact) -> DataSource:
    node, step = _step(store, examples)
    input_base = _property(node.execution, keys.INPUT_BASE_KEY)
    input_config = proto_utils.json_to_proto(
        _property(node.execution, keys.INPUT_CONFIG_KEY), example_gen_pb2.Input())
    span, version = _property(examples, "span") or 0, _property(examples, "version")
    fingerprints = set((_property(examples, "input_fingerprint") or "").splitlines())
    splits = []
    for split in input_config.splits:
        pattern = os.path.join(input_base, resolve_span_pattern(split.pattern, span, version))
        splits.append(SplitFiles(
            split.name, split.pattern, sorted(tf.io.gfile.glob(pattern)),
            io_utils.generate_fingerprint(split.name, pattern) in fingerprints
            if fingerprints else None))
    return DataSource(step, span, version, json.loads(_property(examples, "split_names")),
                      input_base, splits)


def resolve_span_pattern(pattern: str, span: int, version: int | None) -> str:
    """An ImportExampleGen split pattern with {SPAN} (or the date specs) and {VERSION}
    filled in, as TFX fills them; a pattern without them is returned as it is."""
    # Imported here: importing any of tfx.components loads every component (seconds), and
    # listing the runs does not need it.
    from tfx.components.example_gen import utils as example_gen_utils

    is_span, is_date, is_version = example_gen_utils.verify_split_pattern_specs(
        example_gen_pb2.Input.Split(pattern=pattern))
    return example_gen_utils.get_pattern_for_span_version(pattern, is_span, is_date,
                                                          is_version, span, version)
