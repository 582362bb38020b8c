"""An ExampleValidator that stops the run when any split breaks the curated schema.

TFX's ExampleValidator only records anomalies; training on data that breaks the feature contract
would then go ahead silently. This executor records them the same way, then fails with one line
per anomaly, naming the split, the feature and what is wrong.
"""
from __future__ import annotations

import os
from typing import Any, Dict, List

from tensorflow_metadata.proto.v0 import anomalies_pb2
from tfx import types
from tfx import v1 as tfx
from tfx.components.example_validator import executor as validator_executor
from tfx.dsl.components.base import executor_spec
from tfx.types import artifact_utils, standard_component_specs
from tfx.utils import io_utils

SCHEMA_HINT = "fix the data, or if the data is right, update components/schema/schema.pbtxt"


class DataAnomaliesError(RuntimeError):
    """The examples break the schema, or a span holds what cannot be right (components/validation/span_validator.py);
    the message lists every problem. `digits run` reports it as stopped_by_data_validation."""


def describe_anomalies(anomalies_by_split: Dict[str, anomalies_pb2.Anomalies]) -> List[str]:
    lines = []
    for split, anomalies in sorted(anomalies_by_split.items()):
        for feature, info in sorted(anomalies.anomaly_info.items()):
            reasons = "; ".join(
                f"{reason.short_description}: {reason.description}" for reason in info.reason
            ) or info.description
            lines.append(f"split '{split}', feature '{feature}': {reasons}")
        if anomalies.HasField("dataset_anomaly_info"):
            reasons = "; ".join(reason.description for reason in anomalies.dataset_anomaly_info.reason)
            lines.append(f"split '{split}', whole data set: {reasons}")
    return lines


def _read_anomalies(anomalies_artifact: types.Artifact) -> Dict[str, anomalies_pb2.Anomalies]:
    result = {}
    for split in artifact_utils.decode_split_names(anomalies_artifact.split_names):
        split_dir = artifact_utils.get_split_uri([anomalies_artifact], split)
        path = os.path.join(split_dir, "SchemaDiff.pb")
        anomalies = anomalies_pb2.Anomalies()
        anomalies.ParseFromString(io_utils.read_bytes_file(path))
        result[split] = anomalies
    return result


class Executor(validator_executor.Executor):
    def Do(self, input_dict: Dict[str, List[types.Artifact]], output_dict: Dict[str, List[types.Artifact]],
           exec_properties: Dict[str, Any]) -> None:
        super().Do(input_dict, output_dict, exec_properties)
        anomalies = artifact_utils.get_single_instance(output_dict[standard_component_specs.ANOMALIES_KEY])
        problems = describe_anomalies(_read_anomalies(anomalies))
        if problems:
            raise DataAnomaliesError(
                "ExampleValidator found data that breaks the schema, so the run stops before Transform:\n  "
                + "\n  ".join(problems) + f"\n({SCHEMA_HINT})"
            )


class ExampleValidator(tfx.components.ExampleValidator):
    """TFX's ExampleValidator with the executor above; same inputs, outputs and component id."""

    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(Executor)
