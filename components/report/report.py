"""RunReport: a component that writes the HTML run report beside the pipeline's other artifacts.

It reads the Evaluator's verdict (TFMA metrics and validation result) and runs the trained model
on the test split itself, for what TFMA does not keep: every prediction, to draw the confusion
matrix and the most confidently wrong digits. It also shows the training curves, split sizes, the
candidate beside the baseline and what the Pusher did (components/report/report_inputs.py reads those).
``summary.json`` carries the figures the runner prints after a run.
"""

import datetime
import json
import os
from typing import Any, Dict, List

import numpy as np
import tensorflow as tf
import tensorflow_model_analysis as tfma
from tfx import v1 as tfx
from tfx.types import artifact, artifact_utils
from tfx.utils import io_utils, path_utils

from components.artifact_files import read_json, write_json
from components.data import features
from components.report import report_html, report_inputs
from components.evaluation import significance, source_slices
from components.training import signatures
from components.validation.span_validator import CHECKS_FILE, SpanChecks
from components.evaluation.eval_config import SOURCE_KEY

REPORT_FILE = "report.html"
SUMMARY_FILE = "summary.json"
_WRONG_SHOWN = 25


class HtmlReport(artifact.Artifact):
    """A folder with report.html and summary.json."""

    TYPE_NAME = "digits.HtmlReport"


def _test_examples(examples: tfx.types.standard_artifacts.Examples, split: str):
    pattern = os.path.join(artifact_utils.get_split_uri([examples], split), "*")
    spec = {
        features.IMAGE_KEY: tf.io.FixedLenFeature([features.NUM_PIXELS], tf.int64),
        features.LABEL_KEY: tf.io.FixedLenFeature([], tf.int64),
        SOURCE_KEY: tf.io.FixedLenFeature([], tf.string, default_value=b""),
    }
    return tf.data.TFRecordDataset(sorted(tf.io.gfile.glob(pattern)), compression_type="GZIP").batch(1000), spec


def predict_split(model_uri: str, examples, split: str) -> Dict[str, np.ndarray]:
    """Images, labels, sources ("" when absent) and probabilities of every example in ``split``, in
    file order (the same order for any model: the Evaluator pairs two models' answers by position),
    via the tf.Example signature."""
    dataset, spec = _test_examples(examples, split)
    serve = tf.saved_model.load(path_utils.serving_model_path(model_uri)).signatures[signatures.EXAMPLES_SIGNATURE]
    images, labels, sources, probabilities = [], [], [], []
    for serialized in dataset:
        parsed = tf.io.parse_example(serialized, spec)
        images.append(parsed[features.IMAGE_KEY].numpy())
        labels.append(parsed[features.LABEL_KEY].numpy())
        sources.append(np.array([value.decode() for value in parsed[SOURCE_KEY].numpy()], dtype=str))
        probabilities.append(serve(examples=serialized)[signatures.PROBABILITIES].numpy())
    return {
        "images": np.concatenate(images).reshape(-1, features.IMAGE_SIZE, features.IMAGE_SIZE).astype(np.uint8),
        "labels": np.concatenate(labels),
        "sources": np.concatenate(sources),
        "probabilities": np.concatenate(probabilities),
    }


def evaluator_verdict(evaluation_uri: str) -> Dict[str, Any]:
    """Overall accuracy and example count from TFMA, whether it blessed, why not, and if a baseline existed."""
    verdict: Dict[str, Any] = {"accuracy": None, "baseline_accuracy": None, "example_count": None}
    for slice_metrics in tfma.load_metrics(evaluation_uri):
        if slice_metrics.slice_key.single_slice_keys:
            continue  # per-digit slices; the overall slice has no keys
        source_slices.slice_figures(slice_metrics, verdict)
    validation = tfma.load_validation_result(evaluation_uri)
    verdict["blessed"] = verdict["floors_ok"] = bool(validation.validation_ok)  # TFMA's thresholds: the floors
    verdict["has_baseline"] = verdict["baseline_accuracy"] is not None
    verdict["reasons"] = _failure_reasons(validation)
    verdict["sources"] = source_slices.source_metrics(evaluation_uri)  # per-source slices against the baseline
    # The Evaluator's paired test per gated slice (None without a baseline): it can withhold the blessing.
    verdict["significance"] = significance.load(evaluation_uri)
    if verdict["significance"] and not verdict["significance"]["blessed"]:
        verdict["blessed"] = False
        verdict["reasons"] += verdict["significance"]["reasons"]
    return verdict


def _failure_reasons(validation) -> List[str]:
    reasons = []
    for per_slice in validation.metric_validations_per_slice:
        name = source_slices.slice_name(per_slice.slice_key)
        prefix = f"{name}: " if name else ""  # the overall slice has no name
        for failure in per_slice.failures:
            threshold = failure.metric_threshold
            value = failure.metric_value.double_value.value
            if failure.metric_key.is_diff:
                allowed = -threshold.change_threshold.absolute.value
                reasons.append(
                    f"{prefix}accuracy dropped by {-value:.4f} against the baseline model (allowed: {allowed:.4f})")
            else:
                floor = threshold.value_threshold.lower_bound.value
                reasons.append(f"{prefix}accuracy {value:.4f} is below the floor {floor:.4f}")
    if validation.missing_thresholds:
        reasons.append("a configured threshold's metric was not computed")
    reasons.extend(f"no examples for slice {slice_spec}" for slice_spec in validation.missing_slices)
    return reasons


def summarize(predictions: Dict[str, np.ndarray]) -> Dict[str, Any]:
    labels, probabilities = predictions["labels"], predictions["probabilities"]
    predicted = probabilities.argmax(axis=1)
    confusion = np.zeros((features.NUM_CLASSES, features.NUM_CLASSES), dtype=np.int64)
    np.add.at(confusion, (labels, predicted), 1)
    per_digit = confusion.diagonal() / np.maximum(confusion.sum(axis=1), 1)
    wrong = np.flatnonzero(predicted != labels)
    confidence = probabilities[wrong, predicted[wrong]]
    most_wrong = wrong[np.argsort(-confidence, kind="stable")][:_WRONG_SHOWN]
    return {
        "confusion": confusion,
        "per_digit_accuracy": per_digit,
        "accuracy": float((predicted == labels).mean()) if len(labels) else 0.0,
        "most_confident_wrong": [
            {"index": int(i), "label": int(labels[i]), "predicted": int(predicted[i]),
             "confidence": float(probabilities[i, predicted[i]]), "image": predictions["images"][i]}
            for i in most_wrong
        ],
    }


def _span_checks(uri: str) -> dict:
    return read_json(uri, CHECKS_FILE) or {}


@tfx.dsl.components.component
def RunReport(
    model: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.Model],
    model_run: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.ModelRun],
    examples: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.Examples],
    statistics: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.ExampleStatistics],
    evaluation: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.ModelEvaluation],
    pushed_model: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.PushedModel],
    span_checks: tfx.dsl.components.InputArtifact[SpanChecks],
    report: tfx.dsl.components.OutputArtifact[HtmlReport],
    split: tfx.dsl.components.Parameter[str] = "test",
    run_info: tfx.dsl.components.Parameter[str] = "{}",
) -> None:
    """``run_info``: JSON of the hyper-parameters, train splits and code version, shown as a table.
    The run id is not a parameter: Kubeflow's v2 compiler takes no runtime placeholder as one, so
    `digits run` writes it into its copy of the report (see report_html.with_component_times)."""
    info = json.loads(run_info)
    used = report_inputs.training_hparams(model_run.uri)  # what the Trainer used: tuned values included
    if used:
        info.update({name: f"{value['value']} ({value['source']})" for name, value in used.items()})
    verdict = evaluator_verdict(evaluation.uri)
    figures = summarize(predict_split(model.uri, examples, split))
    sizes = report_inputs.split_sizes(statistics)
    train_splits = list(info.get("train_splits") or [])
    push = report_inputs.push_outcome(pushed_model)
    comparison = report_inputs.comparison(evaluation.uri, verdict["blessed"])
    if verdict["significance"]:  # the drop is judged by the paired test, not by a point-estimate threshold
        overall = verdict["significance"]["slices"][significance.OVERALL]
        paired_ok = verdict["significance"]["blessed"]
        comparison.update(max_drop=overall["margin"], paired_test=verdict["significance"],
                          decided_by={(True, True): "floor", (True, False): "paired test", (False, True): "floor",
                                      (False, False): "both"}[(verdict["floors_ok"], paired_ok)])
    written = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    page = report_html.render(verdict, figures, split, info, history=report_inputs.training_history(model_run.uri),
                              sizes=sizes, push=push, comparison=comparison, written=written,
                              span_checks=_span_checks(span_checks.uri))
    io_utils.write_string_file(os.path.join(report.uri, REPORT_FILE), page)
    summary = {
        **verdict,
        "report_accuracy": figures["accuracy"],
        "per_digit_accuracy": {str(d): float(a) for d, a in enumerate(figures["per_digit_accuracy"])},
        "split_sizes": sizes,
        "train_splits": train_splits,
        "train_examples": sum(sizes[name] for name in train_splits if name in sizes) if sizes else None,
        "push": push,
        "thresholds": {"floor": comparison["floor"], "max_drop": comparison["max_drop"],
                       "decided_by": comparison["decided_by"]},
        "written": written,
        "hparams": used,
    }
    write_json(report.uri, SUMMARY_FILE, summary)
