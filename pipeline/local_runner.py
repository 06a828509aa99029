"""Runs the pipeline with LocalDagRunner: adds the work-dir paths and SQLite ML Metadata."""

from __future__ import annotations

import os

from tfx.orchestration import metadata
from tfx.orchestration.local.local_dag_runner import LocalDagRunner
from tfx.orchestration.pipeline import Pipeline

from pipeline.config import PipelineConfig
from pipeline.core.console import ComponentProgress, Console
from pipeline.core.workdir import WorkDir
from pipeline.pipeline import create_pipeline


def build_local_pipeline(config: PipelineConfig, data_root: str,
                         work: WorkDir) -> Pipeline:
    return create_pipeline(
        config, data_root=os.path.abspath(data_root), pipeline_root=work.pipeline_root,
        serving_dir=work.serving,
        metadata_connection_config=metadata.sqlite_metadata_connection_config(work.metadata))


def run_local(config: PipelineConfig, data_root: str, work: WorkDir, console: Console) -> None:
    """Runs every component, a line per component on the console. `data_root` holds the
    shards, or the spans when config.data.spans."""
    pipeline = build_local_pipeline(config, data_root, work)
    with ComponentProgress(console, len(pipeline.components)) as progress:
        try:
            LocalDagRunner().run(pipeline)
        except BaseException:
            progress.interrupt()
            raise
