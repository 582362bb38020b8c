"""An Evaluator that treats a baseline holding no SavedModel as no baseline, and gates each source.

The baseline comes either from TFX's latest-blessed-model resolver, which outputs nothing when
nothing was blessed yet, or from ServedBaseline (components/served_baseline.py), which always
outputs an artifact and leaves it empty when nothing was pushed yet. TFX's Evaluator would try to
load a model from that empty artifact; this one drops it first, so the first run gates on the
accuracy floor only, exactly as with the resolver. A resolver's output is a real model and passes
through unchanged.

It also adds the per-source thresholds (components/eval_config.py ``SourceGate``) once it has counted
the evaluated examples of each source: MNIST's slice when it has examples, another source's only
when it holds enough to judge. A threshold on a slice without examples would fail the validation.
"""
from __future__ import annotations

import collections
import os
from typing import Any, Dict, List, Optional

import tensorflow as tf
import tensorflow_model_analysis as tfma
from absl import logging
from tfx import types
from tfx import v1 as tfx
from tfx.components.evaluator import executor as evaluator_executor
from tfx.dsl.components.base import base_component, executor_spec
from tfx.dsl.io import fileio
from tfx.types import artifact_utils, standard_artifacts, standard_component_specs
from tfx.types.component_spec import ExecutionParameter
from tfx.utils import json_utils, path_utils, proto_utils

from components.eval_config import SOURCE_KEY, SourceGate, with_source_thresholds

SOURCE_GATE_KEY = "source_gate"

_SAVED_MODEL_FILES = ("saved_model.pb", "saved_model.pbtxt")


def holds_saved_model(model: types.Artifact) -> bool:
    """Whether the Model artifact has a SavedModel where the Evaluator will look for one."""
    model_path = path_utils.serving_model_path(model.uri, path_utils.is_old_model_artifact(model))
    return any(fileio.exists(os.path.join(model_path, name)) for name in _SAVED_MODEL_FILES)


def count_sources(examples: types.Artifact, splits: List[str]) -> Dict[str, int]:
    """Examples per ``source`` value in ``splits`` (examples without the feature are not counted)."""
    spec = {SOURCE_KEY: tf.io.FixedLenFeature([], tf.string, default_value=b"")}
    counts: Dict[str, int] = collections.Counter()
    for split in splits:
        files = tf.io.gfile.glob(os.path.join(artifact_utils.get_split_uri([examples], split), "*"))
        for serialized in tf.data.TFRecordDataset(sorted(files), compression_type="GZIP").batch(5000):
            counts.update(s.decode() for s in tf.io.parse_example(serialized, spec)[SOURCE_KEY].numpy() if s)
    return dict(counts)


def gated_exec_properties(input_dict: Dict[str, List[types.Artifact]], exec_properties: Dict[str, Any]) -> Dict:
    """``exec_properties`` with the source thresholds added to the eval config for the sources found."""
    gate_json = exec_properties.get(SOURCE_GATE_KEY)
    config_json = exec_properties.get(standard_component_specs.EVAL_CONFIG_KEY)
    if not gate_json or not config_json:
        return exec_properties
    splits = json_utils.loads(exec_properties.get(standard_component_specs.EXAMPLE_SPLITS_KEY) or "null") or ["eval"]
    examples = artifact_utils.get_single_instance(input_dict[standard_component_specs.EXAMPLES_KEY])
    counts = count_sources(examples, splits)
    eval_config = proto_utils.json_to_proto(config_json, tfma.EvalConfig())
    gated = with_source_thresholds(eval_config, counts, SourceGate.from_json(gate_json))
    logging.info("Evaluator: %s examples per source %s; gated slices: %s", splits, counts,
                 [dict(t.slicing_specs[0].feature_values) for m in gated.metrics_specs for c in m.metrics
                  for t in c.per_slice_thresholds if t.slicing_specs and t.slicing_specs[0].feature_values])
    return {**exec_properties, standard_component_specs.EVAL_CONFIG_KEY: proto_utils.proto_to_json(gated)}


class Executor(evaluator_executor.Executor):
    def Do(self, input_dict: Dict[str, List[types.Artifact]], output_dict: Dict[str, List[types.Artifact]],
           exec_properties: Dict[str, Any]) -> None:
        exec_properties = gated_exec_properties(input_dict, exec_properties)
        key = standard_component_specs.BASELINE_MODEL_KEY
        baselines = input_dict.get(key) or []
        if baselines and not all(holds_saved_model(model) for model in baselines):
            logging.info("Evaluator: the baseline %s holds no model (nothing served yet); only absolute "
                         "thresholds apply", [model.uri for model in baselines])
            input_dict = {name: artifacts for name, artifacts in input_dict.items() if name != key}
        super().Do(input_dict, output_dict, exec_properties)


class EvaluatorSpec(standard_component_specs.EvaluatorSpec):
    """TFX's Evaluator spec and the per-source gate (SourceGate as JSON)."""

    PARAMETERS = {**standard_component_specs.EvaluatorSpec.PARAMETERS,
                  SOURCE_GATE_KEY: ExecutionParameter(type=str, optional=True)}


class Evaluator(tfx.components.Evaluator):
    """TFX's Evaluator with the executor above; same inputs, outputs and component id, and the
    per-source gate as one more execution property."""

    SPEC_CLASS = EvaluatorSpec
    EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(Executor)

    def __init__(self, examples: types.BaseChannel, model: types.BaseChannel, baseline_model: types.BaseChannel,
                 eval_config: tfma.EvalConfig, example_splits: List[str], source_gate: Optional[SourceGate] = None):
        # TFX's __init__ builds its own spec class; this builds ours with the same values.
        spec = EvaluatorSpec(
            examples=examples, model=model, baseline_model=baseline_model, eval_config=eval_config,
            example_splits=json_utils.dumps(example_splits), fairness_indicator_thresholds=json_utils.dumps(None),
            source_gate=source_gate.to_json() if source_gate else None,
            evaluation=types.Channel(type=standard_artifacts.ModelEvaluation),
            blessing=types.Channel(type=standard_artifacts.ModelBlessing))
        base_component.BaseComponent.__init__(self, spec=spec)
