"""The per-span checks and the drift figures, on synthetic images and on MNIST's own digits."""
import numpy as np
import pytest

from components.validation import span_drift
from components.validation import span_validation as span_checks
from components.validation.span_validation import Thresholds, summarize_images
from components.validation.span_validator import check_spans, failure_message, span_checks_html

RNG = np.random.default_rng(0)


def _batch(images, labels, span=1, source="feedback"):
    return summarize_images(images, labels, np.full(len(labels), span), [source] * len(labels))


def _digits(mnist, n, start=0):
    split = mnist["test"]
    return split.images[start:start + n].reshape(n, 784), split.labels[start:start + n].astype(np.int64)


def _checks(batch, **thresholds):
    [figures] = span_checks.span_figures(batch)
    return span_checks.problems_of(figures, Thresholds(**thresholds))


@pytest.fixture(scope="module")
def mnist(package_splits):
    return package_splits


def test_real_digits_pass_every_check(mnist):
    images, labels = _digits(mnist, 2000)
    assert _checks(_batch(images, labels, span=0, source="mnist")) == []


def test_every_mnist_split_passes_with_the_default_limits(mnist):
    for split in mnist.values():
        batch = _batch(split.images.reshape(len(split.labels), 784), split.labels, span=0, source="mnist")
        assert _checks(batch) == []


def test_blank_images_stop_naming_span_feature_and_figures(mnist):
    images, labels = _digits(mnist, 500)
    images = images.copy()
    images[:412] = 0
    images[400:412, :5] = 255  # a few stray dots are still blank
    problems = _checks(_batch(images, labels, span=3))
    assert problems == ["span 3 (feedback): 412 of 500 images are blank (82.4%, allowed 1%) — feature 'image'"]


def test_one_blank_image_in_a_hundred_is_allowed_two_are_not(mnist):
    images, labels = _digits(mnist, 100)
    images = images.copy()
    images[0] = 0
    assert _checks(_batch(images, labels)) == []
    images[1] = 0
    assert _checks(_batch(images, labels)) == [
        "span 1 (feedback): 2 of 100 images are blank (2%, allowed 1%) — feature 'image'"]


def test_saturated_images_stop(mnist):
    images, labels = _digits(mnist, 200)
    images = images.copy()
    images[:50] = 255 - images[:50]  # inverted: white background
    images[50:60] = 250
    problems = _checks(_batch(images, labels, span=2, source="import"))
    assert problems == ["span 2 (import): 60 of 200 images are saturated (30%, allowed 1%) — feature 'image'"]


def test_out_of_range_pixels_and_labels_name_the_span(mnist):
    images, labels = _digits(mnist, 50)
    images, labels = images.astype(np.int64), labels.copy()
    images[3, 100] = 300
    images[4, 0] = -1
    labels[7] = 10
    assert _checks(_batch(images, labels, span=5)) == [
        "span 5 (feedback): 2 of 50 images have pixel values outside 0..255 — feature 'image'",
        "span 5 (feedback): 1 of 50 labels are outside 0..9 — feature 'label'"]


def test_a_dominant_label_stops_only_spans_of_a_hundred_digits(mnist):
    images, labels = _digits(mnist, 200)
    sevens = labels.copy()
    sevens[:150] = 7
    n = int((sevens == 7).sum())
    assert _checks(_batch(images, sevens, span=4)) == [
        f"span 4 (feedback): label 7 is {n} of 200 digits ({n / 2:.3g}%, allowed 60%) — feature 'label'"]
    assert _checks(_batch(images[:99], np.full(99, 7), span=4)) == []  # too few digits to judge
    assert _checks(_batch(images, sevens, span=4), max_label_share=0.9) == []


def test_spans_are_checked_separately_and_named_with_their_source(mnist):
    images, labels = _digits(mnist, 300)
    blank = np.zeros((100, 784), dtype=np.int64)
    batch = span_checks.concatenate([_batch(images, labels, span=0, source="mnist"),
                                     _batch(blank, labels[:100], span=2, source="feedback"),
                                     _batch(images[:100], labels[:100], span=1, source="import")])
    checks = check_spans(batch, Thresholds())
    assert [(s["span"], s["source"], s["count"], s["blank"]) for s in checks["spans"]] == [
        (0, "mnist", 300, 0), (1, "import", 100, 0), (2, "feedback", 100, 100)]
    assert checks["problems"] == ["span 2 (feedback): 100 of 100 images are blank (100%, allowed 1%) — "
                                  "feature 'image'"]
    assert "span 2 (feedback)" in failure_message(checks["problems"])
    assert "--max-blank-share" in failure_message(checks["problems"])


def test_drift_is_tfdvs_linf_of_the_label_shares(mnist):
    images, labels = _digits(mnist, 1000)
    earlier = _batch(images, labels, span=0, source="mnist")
    skewed_labels = np.r_[np.full(300, 3), labels[:200]]
    current = _batch(images[:500], skewed_labels, span=1)
    drift = span_drift.compare(earlier, current, threshold=0.3)
    shares_now = np.bincount(skewed_labels, minlength=10) / 500
    shares_before = np.bincount(labels, minlength=10) / 1000
    assert drift["label_linf"] == pytest.approx(np.abs(shares_now - shares_before).max(), abs=1e-6)
    assert drift["label_linf"] > 0.3 and drift["exceeds"] and drift["label_most_changed"] == 3
    same = span_drift.compare(earlier, _batch(images[:500], labels[:500], span=1), threshold=0.3)
    assert same["label_linf"] < 0.05 and not same["exceeds"]
    assert same["ink_jsd"] < 0.2


def test_drift_is_reported_and_stops_only_when_configured(mnist):
    images, labels = _digits(mnist, 1000)
    skewed = np.r_[np.full(60, 3), labels[:40]]  # 100 digits; label 3 is 64%: within a 0.7 label share
    batch = span_checks.concatenate([_batch(images, labels, span=0, source="mnist"),
                                     _batch(images[:100], skewed, span=1)])
    reported = check_spans(batch, Thresholds(max_label_share=0.7))
    assert reported["problems"] == []
    drift = reported["spans"][1]["drift"]
    assert reported["spans"][0]["drift"] is None and drift["exceeds"]
    assert span_checks.drift_lines(reported) == [
        f"drift: span 1 label distribution L∞ {drift['label_linf']:.2f} vs earlier data (threshold 0.30; "
        "not stopping)"]
    stopped = check_spans(batch, Thresholds(max_label_share=0.7, drift_stops_run=True))
    assert stopped["problems"] == [
        f"span 1 (feedback): the label distribution drifted from the earlier data by L∞ {drift['label_linf']:.2f} "
        "(threshold 0.30; --drift-stops-run is on) — feature 'label'"]


def test_drift_line_when_every_span_is_within_the_threshold(mnist):
    images, labels = _digits(mnist, 600)
    batch = span_checks.concatenate([_batch(images[:400], labels[:400], span=0, source="mnist"),
                                     _batch(images[400:], labels[400:], span=1)])
    checks = check_spans(batch, Thresholds())
    linf = checks["spans"][1]["drift"]["label_linf"]
    assert span_checks.drift_lines(checks) == [
        f"drift: label distributions within L∞ 0.30 of earlier data (largest: span 1, {linf:.2f})"]
    only_mnist = check_spans(_batch(images, labels, span=0, source="mnist"), Thresholds())
    assert span_checks.drift_lines(only_mnist) == []


def test_the_report_table_has_a_row_per_span_and_the_problems(mnist):
    images, labels = _digits(mnist, 200)
    batch = span_checks.concatenate([_batch(images[:100], labels[:100], span=0, source="mnist"),
                                     _batch(np.zeros((100, 784)), labels[100:], span=1, source="<b>x</b>")])
    page = span_checks_html(check_spans(batch, Thresholds()))
    assert page.count("<tr>") == 3 and "&lt;b&gt;x&lt;/b&gt;" in page and "<b>x" not in page
    assert "100 of 100 images are blank" in page
    assert span_checks_html({}) == ""
