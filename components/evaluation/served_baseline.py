"""ServedBaseline: the model in production as the Evaluator's baseline, on every orchestrator.

TFX's ``Resolver(LatestBlessedModelStrategy)`` finds the last blessed model with an ML Metadata
query that Kubeflow v2 compiles into "resolver" tasks, which Vertex AI Pipelines runs but the
open-source Kubeflow Pipelines backend does not. This component needs nothing of the orchestrator:
it copies the newest integer version under the Pusher's destination (every pushed version was
blessed, so it is the last blessed model that was pushed) into ``<baseline.uri>/Format-Serving``,
where the Evaluator looks for a model. Before the first push it writes nothing and records
``served_version`` = 0; the Evaluator (components/evaluation/evaluator.py) then gates on the floor only.

Its output depends on the serving directory, which no input or parameter shows, so a cache keyed
on those alone would hand back a stale baseline. Locally the driver puts the newest version into
the execution properties, which are part of TFX's cache key (as ExampleGen's driver does with its
input fingerprint): the node is cached exactly while nothing new was pushed. Kubeflow runs no
custom driver, so the Kubeflow runner turns caching off for nodes marked ``ALWAYS_RUN``.
"""
from __future__ import annotations

import os
from typing import Any, Dict, List, Optional

from absl import logging
from tfx import types
from tfx.dsl.components.base import base_component, base_driver, base_executor, executor_spec
from tfx.dsl.io import fileio
from tfx.orchestration.portable import base_driver as portable_base_driver
from tfx.orchestration.portable import data_types as portable_data_types
from tfx.proto.orchestration import driver_output_pb2
from tfx.types import artifact_utils, standard_artifacts
from tfx.types.component_spec import ChannelParameter, ExecutionParameter
from tfx.utils import io_utils, path_utils

from components.pusher import existing_versions

MODEL_DIR_KEY = "model_dir"
SERVED_VERSION_KEY = "served_version"  # execution property and custom property of the baseline; 0 = none
BASELINE_KEY = "baseline"


def newest_version(model_dir: str) -> int:
    """The newest version TF Serving would serve from ``model_dir`` (directories with integer names
    only; hidden staging names and anything else ignored), or 0 when there is none or no directory."""
    versions = [v for v in existing_versions(model_dir) if fileio.isdir(os.path.join(model_dir, str(v)))]
    return versions[-1] if versions else 0


def copy_version(model_dir: str, version: int, baseline_uri: str) -> Optional[str]:
    """Copies ``model_dir/<version>`` to where the Evaluator reads a Model artifact's SavedModel;
    returns that path, or None (nothing written) for version 0."""
    if not version:
        return None
    target = path_utils.serving_model_dir(baseline_uri)
    io_utils.copy_dir(os.path.join(model_dir, str(version)), target)
    return target


class ServedBaselineSpec(types.ComponentSpec):
    PARAMETERS = {
        MODEL_DIR_KEY: ExecutionParameter(type=str),
        SERVED_VERSION_KEY: ExecutionParameter(type=int, optional=True),  # set by the driver, not by users
    }
    INPUTS: Dict[str, ChannelParameter] = {}
    OUTPUTS = {BASELINE_KEY: ChannelParameter(type=standard_artifacts.Model)}


class Driver(base_driver.BaseDriver, portable_base_driver.BaseDriver):
    """Records the newest served version before the cache is consulted (LocalDagRunner)."""

    def __init__(self, metadata_handle: Any):
        base_driver.BaseDriver.__init__(self, metadata_handle)
        portable_base_driver.BaseDriver.__init__(self, metadata_handle)

    def run(self, execution_info: portable_data_types.ExecutionInfo) -> driver_output_pb2.DriverOutput:
        result = driver_output_pb2.DriverOutput()
        version = newest_version(execution_info.exec_properties[MODEL_DIR_KEY])
        result.exec_properties[SERVED_VERSION_KEY].int_value = version
        return result


class Executor(base_executor.BaseExecutor):
    def Do(self, input_dict: Dict[str, List[types.Artifact]], output_dict: Dict[str, List[types.Artifact]],
           exec_properties: Dict[str, Any]) -> None:
        baseline = artifact_utils.get_single_instance(output_dict[BASELINE_KEY])
        model_dir = exec_properties[MODEL_DIR_KEY]
        version = exec_properties.get(SERVED_VERSION_KEY)
        if version is None:  # no driver ran (Kubeflow): look now
            version = newest_version(model_dir)
        target = copy_version(model_dir, version, baseline.uri)
        baseline.set_int_custom_property(SERVED_VERSION_KEY, version)
        if target:
            logging.info("ServedBaseline: version %d of %s is the baseline, copied to %s", version, model_dir, target)
        else:
            logging.info("ServedBaseline: nothing served yet in %s; the Evaluator will gate on the floor only",
                         model_dir)


class ServedBaseline(base_component.BaseComponent):
    """Outputs ``baseline``: a Model artifact holding the newest version served from ``model_dir``
    (``<serving_dir>/<model_name>``), or no SavedModel when nothing was pushed yet."""

    SPEC_CLASS = ServedBaselineSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(Executor)
    DRIVER_CLASS = Driver
    ALWAYS_RUN = True  # for orchestrators that run no driver: never answer from their cache

    def __init__(self, model_dir: str):
        super().__init__(spec=ServedBaselineSpec(
            model_dir=model_dir, baseline=types.Channel(type=standard_artifacts.Model)))
