"""Runs the pipeline on this machine: LocalDagRunner, ML Metadata on SQLite, Beam's DirectRunner."""
from __future__ import annotations

import os
import time

from tfx import v1 as tfx

from pipeline import run_summary
from pipeline.config import PipelineConfig
from pipeline.pipeline import create_pipeline


def run(config: PipelineConfig) -> run_summary.RunSummary:
    """Runs every component (cached ones are reused) and reads back what the run did."""
    os.makedirs(config.pipeline_root, exist_ok=True)
    connection = tfx.orchestration.metadata.sqlite_metadata_connection_config(config.metadata_path)
    started = time.time()
    tfx.orchestration.LocalDagRunner().run(create_pipeline(config, metadata_connection_config=connection))
    return run_summary.collect(config, connection, started_at=started)
