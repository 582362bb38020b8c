"""Runs the pipeline on this machine: LocalDagRunner, ML Metadata on SQLite, Beam's DirectRunner."""
from __future__ import annotations

import dataclasses
import os

from tfx import v1 as tfx

from pipeline.runs import run_summary
from pipeline.config import PipelineConfig
from pipeline.pipeline import create_pipeline


def run(config: PipelineConfig) -> run_summary.RunSummary:
    """Runs every component (cached ones are reused) and reads back what the run did."""
    # Artifact URIs are stored in ML Metadata; relative ones would break from another directory.
    config = dataclasses.replace(config, pipeline_root=os.path.abspath(config.pipeline_root),
                                 serving_dir=os.path.abspath(config.serving_dir))
    os.makedirs(config.pipeline_root, exist_ok=True)
    connection = tfx.orchestration.metadata.sqlite_metadata_connection_config(config.metadata_path)
    tfx.orchestration.LocalDagRunner().run(create_pipeline(config, metadata_connection_config=connection))
    return run_summary.collect(config, connection)
