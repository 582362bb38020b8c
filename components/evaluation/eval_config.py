"""TFMA's ``eval_config``: what the Evaluator measures on the test split and its absolute floors.

TFMA gates here on floors only. Whether the candidate dropped against the baseline is not a TFMA
change threshold (a point estimate, inside the seed-to-seed noise) but the Evaluator's paired test
on the same test examples (components/evaluation/significance.py), run beside TFMA by
components/evaluation/evaluator.py.

The test split is sliced by digit and by ``source`` (MNIST and each kind of added data). The
per-source thresholds (``SourceGate``) are added at run time by the Evaluator's executor
(components/evaluation/evaluator.py), once it has counted the test examples of each source: TFMA fails the
validation of a threshold whose slice has no examples, and a new source's slice may be absent or
too small to judge.
"""
import dataclasses
import json
from typing import Mapping

import tensorflow_model_analysis as tfma
from google.protobuf import wrappers_pb2

from components.data import features

from components.training import signatures
ACCURACY_METRIC = "sparse_categorical_accuracy"
SOURCE_KEY = "source"  # the tf.Example feature of issue 14's contract: "mnist", else the span's source
MNIST_SOURCE = "mnist"


@dataclasses.dataclass(frozen=True)
class SourceGate:
    """The per-source part of the gate: MNIST's slice at least ``mnist_floor`` (a TFMA threshold) and,
    like the overall slice, not significantly (at ``significance_level``) worse than the baseline by
    more than ``max_accuracy_drop``; each other source's slice, once it holds ``min_slice_examples``
    test examples, not significantly worse by more than ``max_new_data_drop``."""

    mnist_floor: float
    max_accuracy_drop: float
    max_new_data_drop: float
    min_slice_examples: int
    significance_level: float = 0.05

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "SourceGate":
        return cls(**json.loads(text))


def source_slice(source: str) -> tfma.SlicingSpec:
    return tfma.SlicingSpec(feature_values={SOURCE_KEY: source})


def with_source_thresholds(eval_config: tfma.EvalConfig, counts: Mapping[str, int],
                           gate: SourceGate) -> tfma.EvalConfig:
    """``eval_config`` plus MNIST's accuracy floor when ``counts`` (test examples per source) holds
    MNIST examples. The drops of MNIST and of other sources (those holding at least
    ``gate.min_slice_examples``) are the paired test's (components/evaluation/significance.py)."""
    result = tfma.EvalConfig()
    result.CopyFrom(eval_config)
    accuracy = next(metric for spec in result.metrics_specs for metric in spec.metrics
                    if metric.class_name == "SparseCategoricalAccuracy")
    if counts.get(MNIST_SOURCE, 0) > 0 and gate.mnist_floor:
        threshold = tfma.MetricThreshold(value_threshold=tfma.GenericValueThreshold(
            lower_bound={"value": gate.mnist_floor}))
        accuracy.per_slice_thresholds.add(slicing_specs=[source_slice(MNIST_SOURCE)], threshold=threshold)
    return result


def make_eval_config(accuracy_floor: float) -> tfma.EvalConfig:
    """Accuracy, example count, per-digit and per-source slices; TFMA blesses at ``accuracy >= floor``
    (MNIST's floor: ``with_source_thresholds``; drops against the baseline: the paired test). With a
    baseline model TFMA still computes its metrics, which the report shows."""
    accuracy_threshold = tfma.MetricThreshold(
        value_threshold=tfma.GenericValueThreshold(lower_bound={"value": accuracy_floor}))
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
