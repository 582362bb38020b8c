"""An Evaluator that treats a baseline holding no SavedModel as no baseline, and gates each source.

The baseline comes either from TFX's latest-blessed-model resolver, which outputs nothing when
nothing was blessed yet, or from ServedBaseline (components/evaluation/served_baseline.py), which always
outputs an artifact and leaves it empty when nothing was pushed yet. TFX's Evaluator would try to
load a model from that empty artifact; this one drops it first, so the first run gates on the
accuracy floor only, exactly as with the resolver. A resolver's output is a real model and passes
through unchanged.

It also adds MNIST's floor (components/evaluation/eval_config.py ``SourceGate``) once it has counted the
evaluated examples of each source: a threshold on a slice without examples would fail the validation.

TFMA gates on floors only. With a baseline, this executor then runs both models on the same test
examples and judges every gated slice (overall, MNIST, each added source holding enough examples)
with a paired test (components/evaluation/significance.py): a slice blocks only when its drop beyond the allowed
drop is significant. It writes ``significance.json`` into the evaluation and, when a slice blocks,
turns TFX's BLESSED into NOT_BLESSED (file and ``blessed`` property, as TFX's executor writes them).
"""
from __future__ import annotations

import collections
import os
from typing import Any, Dict, List, Optional

import numpy as np
import tensorflow as tf
import tensorflow_model_analysis as tfma
from absl import logging
from tfx import types
from tfx import v1 as tfx
from tfx.components.evaluator import constants as evaluator_constants
from tfx.components.evaluator import executor as evaluator_executor
from tfx.dsl.components.base import base_component, executor_spec
from tfx.dsl.io import fileio
from tfx.types import artifact_utils, standard_artifacts, standard_component_specs
from tfx.types.component_spec import ExecutionParameter
from tfx.utils import io_utils, json_utils, path_utils, proto_utils

from components.artifact_files import write_json
from components.evaluation import significance
from components.evaluation.eval_config import MNIST_SOURCE, SOURCE_KEY, SourceGate, with_source_thresholds
from components.report.report import predict_split

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
    splits = _splits(exec_properties)
    examples = artifact_utils.get_single_instance(input_dict[standard_component_specs.EXAMPLES_KEY])
    counts = count_sources(examples, splits)
    eval_config = proto_utils.json_to_proto(config_json, tfma.EvalConfig())
    gated = with_source_thresholds(eval_config, counts, SourceGate.from_json(gate_json))
    logging.info("Evaluator: %s examples per source %s; gated slices: %s", splits, counts,
                 [dict(t.slicing_specs[0].feature_values) for m in gated.metrics_specs for c in m.metrics
                  for t in c.per_slice_thresholds if t.slicing_specs and t.slicing_specs[0].feature_values])
    return {**exec_properties, standard_component_specs.EVAL_CONFIG_KEY: proto_utils.proto_to_json(gated)}


def _splits(exec_properties: Dict[str, Any]) -> List[str]:
    return json_utils.loads(exec_properties.get(standard_component_specs.EXAMPLE_SPLITS_KEY) or "null") or ["eval"]


def paired_judgement(examples: types.Artifact, model_uri: str, baseline_uri: str, splits: List[str],
                     gate: SourceGate) -> Dict[str, Any]:
    """Both models' answers on the same examples, judged per gated slice (components/evaluation/significance.py)."""
    candidate_right, baseline_right, sources = [], [], []
    for split in splits:
        candidate, baseline = predict_split(model_uri, examples, split), predict_split(baseline_uri, examples, split)
        if not (candidate["labels"] == baseline["labels"]).all():
            raise RuntimeError(f"the {split} split was read in two orders; the paired test needs the same examples")
        candidate_right.append(candidate["probabilities"].argmax(axis=1) == candidate["labels"])
        baseline_right.append(baseline["probabilities"].argmax(axis=1) == baseline["labels"])
        sources.append(candidate["sources"])
    return significance.judge(
        np.concatenate(candidate_right), np.concatenate(baseline_right), np.concatenate(sources),
        gate.significance_level, mnist_source=MNIST_SOURCE, min_slice_examples=gate.min_slice_examples,
        max_drop=gate.max_accuracy_drop, max_new_data_drop=gate.max_new_data_drop)


def withhold_blessing(blessing: types.Artifact) -> None:
    """TFX's NOT_BLESSED in place of its BLESSED: the file and the ``blessed`` custom property."""
    blessed_file = os.path.join(blessing.uri, evaluator_constants.BLESSED_FILE_NAME)
    if fileio.exists(blessed_file):
        fileio.remove(blessed_file)
    io_utils.write_string_file(os.path.join(blessing.uri, evaluator_constants.NOT_BLESSED_FILE_NAME), "")
    blessing.set_int_custom_property(evaluator_constants.ARTIFACT_PROPERTY_BLESSED_KEY,
                                     evaluator_constants.NOT_BLESSED_VALUE)


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
        gate_json = exec_properties.get(SOURCE_GATE_KEY)
        if not input_dict.get(key) or not gate_json:
            return
        judgement = paired_judgement(
            artifact_utils.get_single_instance(input_dict[standard_component_specs.EXAMPLES_KEY]),
            artifact_utils.get_single_uri(input_dict[standard_component_specs.MODEL_KEY]),
            artifact_utils.get_single_uri(input_dict[key]), _splits(exec_properties), SourceGate.from_json(gate_json))
        evaluation_uri = artifact_utils.get_single_uri(output_dict[standard_component_specs.EVALUATION_KEY])
        write_json(evaluation_uri, significance.SIGNIFICANCE_FILE, judgement)
        logging.info("Evaluator: paired test per gated slice: %s", "; ".join(
            significance.summary_lines(judgement)[1:]))
        if not judgement["blessed"]:
            logging.info("Evaluator: not blessed: %s", "; ".join(judgement["reasons"]))
            withhold_blessing(artifact_utils.get_single_instance(output_dict[standard_component_specs.BLESSING_KEY]))


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
