"""An Evaluator that treats a baseline holding no SavedModel as no baseline.

The baseline comes either from TFX's latest-blessed-model resolver, which outputs nothing when
nothing was blessed yet, or from ServedBaseline (components/served_baseline.py), which always
outputs an artifact and leaves it empty when nothing was pushed yet. TFX's Evaluator would try to
load a model from that empty artifact; this one drops it first, so the first run gates on the
accuracy floor only, exactly as with the resolver. A resolver's output is a real model and passes
through unchanged.
"""
from __future__ import annotations

import os
from typing import Any, Dict, List

from absl import logging
from tfx import types
from tfx import v1 as tfx
from tfx.components.evaluator import executor as evaluator_executor
from tfx.dsl.components.base import executor_spec
from tfx.dsl.io import fileio
from tfx.types import standard_component_specs
from tfx.utils import path_utils

_SAVED_MODEL_FILES = ("saved_model.pb", "saved_model.pbtxt")


def holds_saved_model(model: types.Artifact) -> bool:
    """Whether the Model artifact has a SavedModel where the Evaluator will look for one."""
    model_path = path_utils.serving_model_path(model.uri, path_utils.is_old_model_artifact(model))
    return any(fileio.exists(os.path.join(model_path, name)) for name in _SAVED_MODEL_FILES)


class Executor(evaluator_executor.Executor):
    def Do(self, input_dict: Dict[str, List[types.Artifact]], output_dict: Dict[str, List[types.Artifact]],
           exec_properties: Dict[str, Any]) -> None:
        key = standard_component_specs.BASELINE_MODEL_KEY
        baselines = input_dict.get(key) or []
        if baselines and not all(holds_saved_model(model) for model in baselines):
            logging.info("Evaluator: the baseline %s holds no model (nothing served yet); only absolute "
                         "thresholds apply", [model.uri for model in baselines])
            input_dict = {name: artifacts for name, artifacts in input_dict.items() if name != key}
        super().Do(input_dict, output_dict, exec_properties)


class Evaluator(tfx.components.Evaluator):
    """TFX's Evaluator with the executor above; same inputs, outputs and component id."""

    EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(Executor)
