"""Drift alerts kept in the work dir's ML Metadata store, beside the runs they may lead to:
`medtfx monitor` records one whenever a check fails, and `medtfx history` lists them. An
alert is a record, never an action: a model is only pushed by a run that passes the gate.
"""

from __future__ import annotations

import dataclasses
import datetime
import json

from ml_metadata.metadata_store import metadata_store
from ml_metadata.proto import metadata_store_pb2

ALERT_TYPE = "medtfx.DriftAlert"


@dataclasses.dataclass(frozen=True)
class Alert:
    time: str  # ISO 8601, UTC
    version: str  # the serving version the window was compared with
    window: str  # which requests were read
    drifted: list[str]  # "image brightness: PSI 0.41 (bound 0.25)", ...


def _writable(metadata_path: str) -> metadata_store.MetadataStore:
    connection = metadata_store_pb2.ConnectionConfig()
    connection.sqlite.filename_uri = metadata_path
    connection.sqlite.connection_mode = metadata_store_pb2.SqliteMetadataSourceConfig.READWRITE
    return metadata_store.MetadataStore(connection)


def record_alert(metadata_path: str, alert: Alert) -> int:
    """Stores the alert as an execution of its own type; returns its id."""
    store = _writable(metadata_path)
    alert_type = metadata_store_pb2.ExecutionType(name=ALERT_TYPE)
    alert_type.properties["payload"] = metadata_store_pb2.STRING
    execution = metadata_store_pb2.Execution(
        type_id=store.put_execution_type(alert_type),
        last_known_state=metadata_store_pb2.Execution.COMPLETE)
    execution.properties["payload"].string_value = json.dumps(dataclasses.asdict(alert))
    return store.put_executions([execution])[0]


def list_alerts(store: metadata_store.MetadataStore) -> list[Alert]:
    """Every recorded alert, oldest first."""
    executions = store.get_executions_by_type(ALERT_TYPE)  # [] before the first alert
    return [Alert(**json.loads(e.properties["payload"].string_value))
            for e in sorted(executions, key=lambda e: e.id)]


def alert_lines(alerts: list[Alert]) -> list[str]:
    lines = []
    for alert in alerts:
        lines.append(f"medtfx: drift alert {alert.time} on serving version {alert.version}: "
                     f"{alert.window}")
        lines += [f"        {check}" for check in alert.drifted]
    return lines


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
