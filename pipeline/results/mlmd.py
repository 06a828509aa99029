"""Reading a work dir's ML Metadata store: runs, the components of their executions, and
their outputs. Imports no model code, so commands that only read the store start quickly."""

from __future__ import annotations

from ml_metadata.metadata_store import metadata_store
from ml_metadata.proto import metadata_store_pb2

OUTPUT_EVENTS = (metadata_store_pb2.Event.OUTPUT, metadata_store_pb2.Event.DECLARED_OUTPUT)


def open_store(metadata_path: str) -> metadata_store.MetadataStore:
    connection = metadata_store_pb2.ConnectionConfig()
    connection.sqlite.filename_uri = metadata_path
    connection.sqlite.connection_mode = metadata_store_pb2.SqliteMetadataSourceConfig.READONLY
    return metadata_store.MetadataStore(connection)


def find_run(store: metadata_store.MetadataStore, pipeline_name: str,
             run_id: str | None = None):
    """The pipeline_run context of `pipeline_name` named `run_id`, or its newest run."""
    runs = sorted(store.get_contexts_by_type("pipeline_run"),
                  key=lambda c: c.create_time_since_epoch, reverse=True)
    for run in runs:
        if run_id is not None and run.name != run_id:
            continue
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
