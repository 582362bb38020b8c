"""TFMA's ``eval_config``: what the Evaluator measures on the test split and when it blesses."""
import tensorflow_model_analysis as tfma
from google.protobuf import wrappers_pb2

from components import features, signatures

ACCURACY_METRIC = "sparse_categorical_accuracy"


def make_eval_config(accuracy_floor: float, max_accuracy_drop: float) -> tfma.EvalConfig:
    """Accuracy, example count and per-digit slices; blessed at ``accuracy >= floor`` and, once a
    blessed baseline exists, a drop of at most ``max_accuracy_drop`` against it."""
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
        slicing_specs=[tfma.SlicingSpec(), tfma.SlicingSpec(feature_keys=[features.LABEL_KEY])],
        # Only the metrics below: the model's compiled loss/accuracy would repeat them at extra cost.
        options=tfma.Options(include_default_metrics=wrappers_pb2.BoolValue(value=False)),
        metrics_specs=[
            tfma.MetricsSpec(
                metrics=[
                    tfma.MetricConfig(class_name="ExampleCount"),
                    # Gate on the overall slice only: a hard digit below the floor is for the report.
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
