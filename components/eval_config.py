"""TFMA's ``eval_config``: what the Evaluator measures on the test split and when it blesses.

The test split is sliced by digit and by ``source`` (MNIST and each kind of added data). The
per-source thresholds (``SourceGate``) are added at run time by the Evaluator's executor
(components/evaluator.py), once it has counted the test examples of each source: TFMA fails the
validation of a threshold whose slice has no examples, and a new source's slice may be absent or
too small to judge.
"""
import dataclasses
import json
from typing import Mapping

import tensorflow_model_analysis as tfma
from google.protobuf import wrappers_pb2

from components import features, signatures

ACCURACY_METRIC = "sparse_categorical_accuracy"
SOURCE_KEY = "source"  # the tf.Example feature of issue 14's contract: "mnist", else the span's source
MNIST_SOURCE = "mnist"


@dataclasses.dataclass(frozen=True)
class SourceGate:
    """The per-source part of the gate: MNIST's slice at least ``mnist_floor`` and within
    ``max_accuracy_drop`` of the baseline; each other source's slice, once it holds
    ``min_slice_examples`` test examples, within ``max_new_data_drop`` of the baseline."""

    mnist_floor: float
    max_accuracy_drop: float
    max_new_data_drop: float
    min_slice_examples: int

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "SourceGate":
        return cls(**json.loads(text))


def source_slice(source: str) -> tfma.SlicingSpec:
    return tfma.SlicingSpec(feature_values={SOURCE_KEY: source})


def _accuracy_threshold(floor: float, max_drop: float) -> tfma.MetricThreshold:
    threshold = tfma.MetricThreshold(change_threshold=tfma.GenericChangeThreshold(
        direction=tfma.MetricDirection.HIGHER_IS_BETTER, absolute={"value": -max_drop}))
    if floor:
        threshold.value_threshold.lower_bound.value = floor
    return threshold


def with_source_thresholds(eval_config: tfma.EvalConfig, counts: Mapping[str, int],
                           gate: SourceGate) -> tfma.EvalConfig:
    """``eval_config`` plus the accuracy thresholds of the source slices that ``counts`` (test
    examples per source) says can be judged: MNIST's when it has examples, another source's when
    it holds at least ``gate.min_slice_examples``."""
    result = tfma.EvalConfig()
    result.CopyFrom(eval_config)
    accuracy = next(metric for spec in result.metrics_specs for metric in spec.metrics
                    if metric.class_name == "SparseCategoricalAccuracy")
    for source, count in sorted(counts.items()):
        if source == MNIST_SOURCE and count > 0:
            threshold = _accuracy_threshold(gate.mnist_floor, gate.max_accuracy_drop)
        elif source != MNIST_SOURCE and count >= gate.min_slice_examples:
            threshold = _accuracy_threshold(0.0, gate.max_new_data_drop)
        else:
            continue
        accuracy.per_slice_thresholds.add(slicing_specs=[source_slice(source)], threshold=threshold)
    return result


def make_eval_config(accuracy_floor: float, max_accuracy_drop: float) -> tfma.EvalConfig:
    """Accuracy, example count, per-digit and per-source slices; blessed at ``accuracy >= floor`` and,
    once a blessed baseline exists, a drop of at most ``max_accuracy_drop`` against it (the source
    slices' thresholds: ``with_source_thresholds``)."""
    accuracy_threshold = tfma.MetricThreshold(
        value_threshold=tfma.GenericValueThreshold(lower_bound={"value": accuracy_floor}),
        change_threshold=tfma.GenericChangeThreshold(
            direction=tfma.MetricDirection.HIGHER_IS_BETTER,
            absolute={"value": -max_accuracy_drop},
        ),
    )
    return tfma.EvalConfig(
        model_specs=[
            tfma.ModelSpec(
                signature_name=signatures.EXAMPLES_SIGNATURE,
                label_key=features.LABEL_KEY,
                prediction_key=signatures.PROBABILITIES,
            )
        ],
        slicing_specs=[tfma.SlicingSpec(), tfma.SlicingSpec(feature_keys=[features.LABEL_KEY]),
                       tfma.SlicingSpec(feature_keys=[SOURCE_KEY])],
        # Only the metrics below: the model's compiled loss/accuracy would repeat them at extra cost.
        options=tfma.Options(include_default_metrics=wrappers_pb2.BoolValue(value=False)),
        metrics_specs=[
            tfma.MetricsSpec(
                metrics=[
                    tfma.MetricConfig(class_name="ExampleCount"),
                    # Gate on the overall slice (and the sources, at run time): a hard digit is for the report.
                    tfma.MetricConfig(
                        class_name="SparseCategoricalAccuracy",
                        per_slice_thresholds=[
                            tfma.PerSliceMetricThreshold(slicing_specs=[tfma.SlicingSpec()], threshold=accuracy_threshold)
                        ],
                    ),
                ]
            )
        ],
    )
