"""Which pipeline runs used which spans, read back from ML Metadata.

ExampleGen records the spans it read on its Examples artifact (custom property ``digits_spans``: a JSON
list of {"span", "source", "count", "sha256"}); the runs are the ``pipeline_run`` contexts of the
executions that output such an artifact (a cached ExampleGen counts for the run that reused it too).
"""
from __future__ import annotations

import json
import os
from typing import Dict, List

SPANS_PROPERTY = "digits_spans"


def open_store(metadata_path: str):
    """The ML Metadata store at ``metadata_path``, opened read-only (never created)."""
    from ml_metadata import metadata_store
    from ml_metadata.proto import metadata_store_pb2

    connection = metadata_store_pb2.ConnectionConfig()
    connection.sqlite.filename_uri = metadata_path
    connection.sqlite.connection_mode = metadata_store_pb2.SqliteMetadataSourceConfig.READONLY
    return metadata_store.MetadataStore(connection)


def runs_by_span(metadata_path: str) -> Dict[int, List[str]]:
    """{span number: names of the runs that used it, oldest first}; {} when no run has happened yet."""
    if not os.path.exists(metadata_path):
        return {}
    try:
        return _runs_by_span(metadata_path)
    except Exception as error:  # noqa: BLE001 - ml_metadata's errors have no common public base
        from components.data.spans import SpanError

        raise SpanError(f"cannot tell which runs used which spans: ML Metadata at {metadata_path} cannot be read "
                        f"({type(error).__name__}: {error}); check --pipeline-root") from error


def _runs_by_span(metadata_path: str) -> Dict[int, List[str]]:
    from ml_metadata.proto import metadata_store_pb2

    store = open_store(metadata_path)
    artifacts = [a for a in store.get_artifacts_by_type("Examples") if SPANS_PROPERTY in a.custom_properties]
    if not artifacts:
        return {}
    outputs = (metadata_store_pb2.Event.OUTPUT, metadata_store_pb2.Event.DECLARED_OUTPUT)
    events = [e for e in store.get_events_by_artifact_ids([a.id for a in artifacts]) if e.type in outputs]
    producers: Dict[int, set] = {}
    for event in events:
        producers.setdefault(event.artifact_id, set()).add(event.execution_id)
    runs_of_execution: Dict[int, list] = {}
    for execution_id in {e.execution_id for e in events}:
        runs_of_execution[execution_id] = [c for c in store.get_contexts_by_execution(execution_id)
                                           if c.type == "pipeline_run"]
    used: Dict[int, Dict[str, int]] = {}
    for artifact in artifacts:
        try:
            spans = json.loads(artifact.custom_properties[SPANS_PROPERTY].string_value or "[]")
        except ValueError:
            continue  # not ours to judge here; the run that wrote it is what matters
        runs = {c.name: c.create_time_since_epoch
                for execution_id in producers.get(artifact.id, ()) for c in runs_of_execution[execution_id]}
        for entry in spans:
            number = int(entry["span"]) if isinstance(entry, dict) else int(entry)
            used.setdefault(number, {}).update(runs)
    return {span: sorted(runs, key=lambda name: (runs[name], name)) for span, runs in used.items()}
