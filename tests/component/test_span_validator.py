"""SpanValidator's executor on a real Examples artifact: GZIP TFRecords of tf.Examples carrying the
`span` and `source` features, as ExampleGen writes them."""
import json
import os

import numpy as np
import pytest
import tensorflow as tf
from tfx.types import artifact_utils, standard_artifacts

from components.validation import span_validator
from components.validation.example_validator import DataAnomaliesError
from components.validation.span_validator import CHECKS_FILE, SpanChecks, SpanValidator


def _example(image, label, span, source):
    feature = {
        "image": tf.train.Feature(int64_list=tf.train.Int64List(value=image.reshape(-1).tolist())),
        "label": tf.train.Feature(int64_list=tf.train.Int64List(value=np.reshape(label, -1).tolist())),
        "span": tf.train.Feature(int64_list=tf.train.Int64List(value=[int(span)])),
        "source": tf.train.Feature(bytes_list=tf.train.BytesList(value=[source.encode()])),
    }
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def _write_examples(root, rows_by_split):
    """``rows_by_split``: {split: [(image, label, span, source), ...]} -> an Examples artifact."""
    examples = standard_artifacts.Examples()
    examples.uri = str(root / "examples")
    examples.split_names = artifact_utils.encode_split_names(list(rows_by_split))
    for split, rows in rows_by_split.items():
        os.makedirs(os.path.join(examples.uri, f"Split-{split}"))
        path = os.path.join(examples.uri, f"Split-{split}", "data_tfrecord-00000-of-00001.gz")
        with tf.io.TFRecordWriter(path, options="GZIP") as writer:
            for row in rows:
                writer.write(_example(*row))
    return examples


def _run(tmp_path, examples, **parameters):
    out = SpanChecks()
    out.uri = str(tmp_path / "span_checks")
    os.makedirs(out.uri)
    executor = SpanValidator.EXECUTOR_SPEC.executor_class()
    try:
        executor.Do({"examples": [examples]}, {"span_checks": [out]}, parameters)
    finally:
        path = os.path.join(out.uri, CHECKS_FILE)
        written = json.load(open(path)) if os.path.exists(path) else None
    return written


@pytest.fixture(scope="module")
def digits(package_splits):
    test = package_splits["test"]
    return test.images[:600].reshape(600, 28, 28), test.labels[:600]


def _rows(images, labels, span, source):
    return [(image, label, span, source) for image, label in zip(images, labels)]


def test_a_blank_span_stops_the_run_naming_span_feature_and_figures(tmp_path, digits):
    images, labels = digits
    blank = np.zeros_like(images[:200])
    examples = _write_examples(tmp_path, {
        "train": _rows(images[:300], labels[:300], 0, "mnist") + _rows(blank[:160], labels[:160], 3, "feedback"),
        "test": (_rows(images[300:400], labels[300:400], 0, "mnist")
                 + _rows(blank[160:], labels[160:200], 3, "feedback")),
    })
    with pytest.raises(DataAnomaliesError) as error:
        _run(tmp_path, examples)
    assert ("span 3 (feedback): 200 of 200 images are blank (100%, allowed 1%) — feature 'image'"
            in str(error.value))
    assert "span 0" not in str(error.value)
    written = json.load(open(tmp_path / "span_checks" / CHECKS_FILE))  # kept beside the error
    assert [(s["span"], s["count"], s["blank"]) for s in written["spans"]] == [(0, 400, 0), (3, 200, 200)]


def test_good_spans_pass_and_their_figures_and_drift_are_written(tmp_path, digits):
    images, labels = digits
    examples = _write_examples(tmp_path, {
        "train": _rows(images[:400], labels[:400], 0, "mnist") + _rows(images[400:500], labels[400:500], 1, "import"),
        "eval": _rows(images[500:], labels[500:], 2, "feedback"),
    })
    checks = _run(tmp_path, examples, max_blank_share=0.01, max_saturated_share=0.01, max_label_share=0.6,
                  drift_threshold=0.3, drift_stops_run=0)
    assert checks["problems"] == []
    assert [(s["span"], s["source"], s["count"]) for s in checks["spans"]] == [
        (0, "mnist", 400), (1, "import", 100), (2, "feedback", 100)]
    assert checks["spans"][0]["drift"] is None
    assert all(0 < s["drift"]["label_linf"] < 0.3 for s in checks["spans"][1:])
    assert checks["thresholds"]["drift_threshold"] == 0.3
    assert "<table class='span-checks'>" in span_validator.span_checks_html(checks)


def test_examples_without_span_features_are_mnist(tmp_path, package_splits):
    from components.data.example_gen import _to_examples
    test = package_splits["test"]
    examples = standard_artifacts.Examples()
    examples.uri = str(tmp_path / "examples")
    examples.split_names = artifact_utils.encode_split_names(["test"])
    os.makedirs(os.path.join(examples.uri, "Split-test"))
    with tf.io.TFRecordWriter(os.path.join(examples.uri, "Split-test", "data.gz"), options="GZIP") as writer:
        for record in _to_examples(test.images[:150], test.labels[:150]):
            writer.write(record)
    checks = _run(tmp_path, examples)
    assert [(s["span"], s["source"], s["count"]) for s in checks["spans"]] == [(0, "mnist", 150)]


def test_wrong_sized_images_and_labels_are_counted_per_span_not_a_crash(tmp_path, digits):
    images, labels = digits
    short = images[:3].reshape(3, -1)[:, :783]  # 783 pixels
    rows = _rows(images[:100], labels[:100], 0, "mnist") + _rows(short, labels[:3], 2, "import")
    rows[5] = (images[5], np.array([1, 2]), 0, "mnist")  # two labels
    examples = _write_examples(tmp_path, {"train": rows})
    with pytest.raises(DataAnomaliesError) as error:
        _run(tmp_path, examples)
    assert "span 0 (mnist): 1 of 100 examples do not hold exactly one label — feature 'label'" in str(error.value)
    assert "span 2 (import): 3 of 3 images do not hold exactly 784 pixels — feature 'image'" in str(error.value)
    assert "images are blank" not in str(error.value)
