"""What a pipeline run did, read back from ML Metadata and the Evaluator's output."""

from __future__ import annotations

import math

import tensorflow as tf
from ml_metadata.metadata_store import metadata_store
from ml_metadata.proto import metadata_store_pb2
from tensorflow_model_analysis.proto import metrics_for_slice_pb2, validation_result_pb2

from modules import features as F

CANDIDATE_NAMES = ("", "candidate")  # TFX names the models only when a baseline exists
OUTPUT_EVENTS = (metadata_store_pb2.Event.OUTPUT, metadata_store_pb2.Event.DECLARED_OUTPUT)


def open_store(metadata_path: str) -> metadata_store.MetadataStore:
    config = metadata_store_pb2.ConnectionConfig()
    config.sqlite.filename_uri = metadata_path
    config.sqlite.connection_mode = metadata_store_pb2.SqliteMetadataSourceConfig.READONLY
    return metadata_store.MetadataStore(config)


def latest_run(store: metadata_store.MetadataStore, pipeline_name: str):
    """The newest pipeline_run context whose executions belong to `pipeline_name`."""
    runs = sorted(store.get_contexts_by_type("pipeline_run"),
                  key=lambda c: c.create_time_since_epoch, reverse=True)
    for run in runs:
        executions = store.get_executions_by_context(run.id)
        if executions and node_name(store, executions[0].id)[0] == pipeline_name:
            return run
    return None


def node_name(store: metadata_store.MetadataStore, execution_id: int) -> tuple[str, str]:
    """(pipeline name, component id) of an execution."""
    node_type = store.get_context_type("node").id
    for context in store.get_contexts_by_execution(execution_id):
        if context.type_id == node_type:
            pipeline, _, node = context.name.partition(".")
            return pipeline, node
    return "", "unknown"


def outputs_by_type(store: metadata_store.MetadataStore, executions) -> dict[str, list]:
    """Output artifacts of `executions`, by artifact type name."""
    events = store.get_events_by_execution_ids([e.id for e in executions])
    ids = sorted({e.artifact_id for e in events if e.type in OUTPUT_EVENTS})
    type_names = {t.id: t.name for t in store.get_artifact_types()}
    outputs: dict[str, list] = {}
    for artifact in store.get_artifacts_by_id(ids):
        outputs.setdefault(type_names[artifact.type_id], []).append(artifact)
    return outputs


def slice_name(slice_key: metrics_for_slice_pb2.SliceKey, age_buckets: list[int]) -> str:
    """'overall', or 'feature=value' (age buckets by their range, e.g. 'age_bucket=45-59')."""
    parts = []
    for single in slice_key.single_slice_keys:
        value = getattr(single, single.WhichOneof("kind"))
        if isinstance(value, bytes):
            value = value.decode()
        if single.column == F.AGE_BUCKET_KEY:
            value = "missing" if value == F.MISSING else F.age_bucket_names(age_buckets)[value]
        parts.append(f"{single.column}={value}")
    return " & ".join(parts) or "overall"


def _records(pattern: str):
    for path in sorted(tf.io.gfile.glob(pattern)):
        for record in tf.data.TFRecordDataset(path):
            yield record.numpy()


def load_slice_metrics(evaluation_uri: str, age_buckets: list[int]) -> dict[str, dict]:
    """{slice: {metric: value}} of the candidate model, overall first."""
    metrics: dict[str, dict] = {}
    for record in _records(f"{evaluation_uri}/metrics-*"):
        sliced = metrics_for_slice_pb2.MetricsForSlice.FromString(record)
        values = metrics.setdefault(slice_name(sliced.slice_key, age_buckets), {})
        for kv in sliced.metric_keys_and_values:
            if kv.key.model_name in CANDIDATE_NAMES and not kv.key.is_diff:
                value = kv.value.double_value.value
                values[kv.key.name] = None if math.isnan(value) else round(value, 4)
    return dict(sorted(metrics.items(), key=lambda kv: (kv[0] != "overall", kv[0])))


def load_failed_checks(evaluation_uri: str, age_buckets: list[int]) -> list[dict]:
    """Every threshold the candidate missed: metric, slice, value and bound."""
    failed = []
    for record in _records(f"{evaluation_uri}/validations*"):
        result = validation_result_pb2.ValidationResult.FromString(record)
        for per_slice in result.metric_validations_per_slice:
            where = slice_name(per_slice.slice_key, age_buckets)
            for failure in per_slice.failures:
                threshold = failure.metric_threshold
                if threshold.HasField("change_threshold"):
                    bound = {"change_at_least": threshold.change_threshold.absolute.value}
                else:
                    bound = {"at_least": threshold.value_threshold.lower_bound.value}
                metric = failure.metric_key.name + (" vs baseline"
                                                    if failure.metric_key.is_diff else "")
                failed.append({"metric": metric, "slice": where,
                               "value": round(failure.metric_value.double_value.value, 4),
                               "bound": bound})
    return failed


def summarize_run(metadata_path: str, pipeline_name: str, age_buckets: list[int]) -> dict:
    """The run_summary.json content of the newest run of `pipeline_name`."""
    store = open_store(metadata_path)
    run = latest_run(store, pipeline_name)
    if run is None:
        raise LookupError(f"{metadata_path}: no run of pipeline {pipeline_name}")
    executions = store.get_executions_by_context(run.id)
    components = {node_name(store, e.id)[1]: round(
        (e.last_update_time_since_epoch - e.create_time_since_epoch) / 1000, 1)
        for e in sorted(executions, key=lambda e: e.id)}
    outputs = outputs_by_type(store, executions)

    blessed = any(a.custom_properties["blessed"].int_value == 1
                  for a in outputs.get("ModelBlessing", []))
    pushed = [a for a in outputs.get("PushedModel", [])
              if a.custom_properties["pushed"].int_value == 1]
    evaluations = outputs.get("ModelEvaluation", [])
    evaluation_uri = evaluations[0].uri if evaluations else None
    return {
        "run_id": run.name,
        "blessed": blessed,
        "pushed_model": pushed[0].custom_properties["pushed_destination"].string_value
        if pushed else None,
        "metrics": load_slice_metrics(evaluation_uri, age_buckets) if evaluation_uri else {},
        "failed_checks": load_failed_checks(evaluation_uri, age_buckets)
        if evaluation_uri else [],
        "components": components,
    }
