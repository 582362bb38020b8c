"""The run report renders offline from synthetic inputs, with errors-only confusion colours."""
import re
import base64
import io

import numpy as np
import pytest
from PIL import Image

from components.data import features
from components.report import report_figures, report_html, report_inputs
from pipeline.runs.run_summary import ComponentRun


def _verdict():
    return {"blessed": True, "reasons": [], "accuracy": 0.95, "baseline_accuracy": None,
            "has_baseline": False, "example_count": 100}


def _figures():
    confusion = np.diag(np.full(features.NUM_CLASSES, 90))
    confusion[3, 5] = 7
    return {"confusion": confusion, "per_digit_accuracy": np.linspace(0.9, 0.99, features.NUM_CLASSES),
            "most_confident_wrong": [{"image": np.zeros((28, 28)), "label": 3, "predicted": 5,
                                      "confidence": 0.9}]}


def test_render_is_self_contained_with_all_sections():
    page = report_html.render(_verdict(), _figures(), "test")
    for section in ("Evaluator verdict", "Confusion matrix (test split)", "Accuracy per digit",
                    "most confidently wrong"):
        assert section in page
    assert "http://" not in page and "https://" not in page  # offline: nothing fetched
    assert page.count("data:image/png;base64,") == 3  # no history, no baseline: no curves, no grouped bars
    assert not re.search(r"src=['\"]https?:", page)
    assert "No training history" in page and "No split sizes" in page and "push outcome unknown" in page


def test_confusion_matrix_colours_only_errors():
    """The diagonal is masked grey, so the single error cell carries the strongest colour."""
    confusion = np.diag(np.full(features.NUM_CLASSES, 1000))
    confusion[3, 5] = 7
    png = Image.open(io.BytesIO(base64.b64decode(report_figures.confusion_matrix_png(confusion)))).convert("RGB")
    pixels = np.asarray(png).reshape(-1, 3).astype(int)
    grey = np.all(np.abs(pixels - [211, 211, 211]) <= 2, axis=1)  # matplotlib "lightgrey"
    strong_red = (pixels[:, 0] > 80) & (pixels[:, 1] < 40) & (pixels[:, 2] < 40)
    assert grey.sum() > 1000 and strong_red.sum() > 100


def test_run_info_table_shows_hyper_parameters_and_code_version():
    info = {"epochs": 3, "batch_size": 32, "hidden_units": [128, 128], "learning_rate": 0.001, "seed": 42,
            "train_splits": ["train"], "code_version": "abc<123>"}
    page = report_html.render(_verdict(), _figures(), "test", info)
    assert "Hyper-parameters and code version" in page
    assert "<th>epochs</th><td>3</td>" in page and "<th>batch_size</th><td>32</td>" in page
    assert "<th>hidden_units</th><td>[128, 128]</td>" in page and "<th>learning_rate</th><td>0.001</td>" in page
    assert "<th>train_splits</th><td>[&#x27;train&#x27;]</td>" in page
    assert "<td>abc&lt;123&gt;</td>" in page  # escaped
    assert "No run information was given." in report_html.render(_verdict(), _figures(), "test")


def _history(validation=True):
    series = {"loss": [0.9, 0.5, 0.3], "accuracy": [0.7, 0.85, 0.91]}
    if validation:
        series.update(val_loss=[0.8, 0.6, 0.5], val_accuracy=[0.75, 0.82, 0.86])
    return {"epoch": [0, 1, 2], "history": series}


def _comparison(baseline=True, blessed=True):
    rows = [{"slice": "overall", "candidate": 0.95, "baseline": 0.9 if baseline else None}]
    rows += [{"slice": str(d), "candidate": 0.9 + d / 100, "baseline": (0.93 if baseline else None)}
             for d in range(features.NUM_CLASSES)]
    thresholds = {"floor": 0.5, "max_drop": 0.01}
    decided = report_inputs.deciding_threshold(0.95, 0.9 if baseline else None, thresholds, blessed)
    return {"rows": rows, "has_baseline": baseline, **thresholds, "decided_by": decided}


def _full_page(**overrides):
    inputs = dict(history=_history(), sizes={"train": 2083, "eval": 417, "test": 500},
                  push={"pushed": True, "version": "1765000000", "destination": "/srv/m/1765000000",
                        "new_version": True},
                  comparison=_comparison(), written="2026-12-07 01:00:00 UTC")
    inputs.update(overrides)
    info = {"epochs": 3, "train_splits": ["train", "eval"]}
    return report_html.render(_verdict(), _figures(), "test", info, **inputs)


def test_full_report_has_curves_sizes_push_and_comparison():
    page = _full_page()
    for section in ("Training curves", "Data sizes per split", "Candidate and baseline", "Run",
                    "Component times"):
        assert f"<h2>{section}</h2>" in page, section
    assert page.count("data:image/png;base64,") == 5  # + curves + grouped bars
    assert "alt='training curves'" in page and "alt='candidate and baseline accuracy per digit'" in page
    assert "<td>train</td><td>2,083</td><td>yes</td>" in page and "<td>test</td><td>500</td><td>no</td>" in page
    assert "Training set: <b>2,500</b> examples (train + eval)" in page
    assert "pushed as version 1765000000" in page and "2026-12-07 01:00:00 UTC" in page
    assert "<td>overall</td><td>0.9500</td><td>0.9000</td><td>+0.0500</td>" in page
    assert "<td>digit 0</td><td>0.9000</td><td>0.9300</td><td>-0.0300</td>" in page
    # 0.9 - 0.01 = 0.89 > floor 0.5: the allowed drop is the stricter bound
    assert "allowed drop 0.0100 against the baseline (at least 0.8900)" in page
    assert "the allowed drop against the baseline decided" in page and "accuracy floor 0.5000" in page
    assert not re.search(r"src=['\"]https?:", page) and "http://" not in page and "https://" not in page


def test_training_curves_png_has_two_axes_and_handles_no_validation():
    png = Image.open(io.BytesIO(base64.b64decode(report_figures.training_curves_png(_history()))))
    assert png.width > 1.8 * png.height  # two axes side by side
    page = _full_page(history=_history(validation=False))
    assert "alt='training curves'" in page and "No validation series" in page
    assert "No training history" in _full_page(history=None)


def test_push_outcomes_are_said_plainly():
    assert "already served as version 7 (identical model, not pushed again)" in _full_page(
        push={"pushed": True, "version": "7", "destination": "/s/7", "new_version": False})
    assert "not pushed (not blessed)" in _full_page(
        push={"pushed": False, "version": None, "destination": None, "new_version": False})


def test_without_a_baseline_the_floor_alone_decided():
    page = _full_page(comparison=_comparison(baseline=False))
    assert "no baseline model: the floor alone decided" in page
    assert "<td>overall</td><td>0.9500</td><td>—</td><td>—</td>" in page
    assert page.count("data:image/png;base64,") == 4  # no grouped bars without a baseline


def test_deciding_threshold():
    thresholds = {"floor": 0.9, "max_drop": 0.01}
    assert report_inputs.deciding_threshold(0.95, None, thresholds, True) == "floor"
    assert report_inputs.deciding_threshold(0.95, 0.8, thresholds, True) == "floor"  # 0.79 < floor
    assert report_inputs.deciding_threshold(0.95, 0.95, thresholds, True) == "change"
    assert report_inputs.deciding_threshold(0.85, 0.80, thresholds, False) == "floor"
    assert report_inputs.deciding_threshold(0.93, 0.95, thresholds, False) == "change"
    assert report_inputs.deciding_threshold(0.85, 0.95, thresholds, False) == "both"


def test_with_component_times_fills_the_marked_section():
    page = _full_page()
    assert "Component times are added when the run ends" in page
    components = [ComponentRun("Trainer", "COMPLETE", 12.34), {"name": "Pusher", "state": "CACHED", "seconds": 0.5}]
    done = report_html.with_component_times(page, components, run_id="2026-12-07T01:00:00.5")
    assert "Component times are added" not in done
    assert "<td>Trainer</td><td>complete</td><td>12.3</td>" in done and "<td>Pusher</td><td>cached</td><td>0.5</td>" in done
    assert "2026-12-07T01:00:00.5" in done and "see runs/" not in done
    assert done.count(report_html.TIMES_MARKER[0]) == 1  # still marked: filling in twice replaces, not adds
    assert report_html.with_component_times(done, components[:1]).count("<td>Trainer</td>") == 1
    with pytest.raises(ValueError, match="component-times"):
        report_html.with_component_times("<html></html>", components)


def test_spans_and_sources_have_their_sections():
    checks = {"spans": [{"span": 0, "source": "mnist", "count": 3000, "per_label": {"1": 340, "7": 310},
                         "blank": 0, "saturated": 0, "mean_ink": 0.131, "drift": None},
                        {"span": 2, "source": "feedback", "count": 1500, "per_label": {"3": 900, "7": 600},
                         "blank": 0, "saturated": 0, "mean_ink": 0.142,
                         "drift": {"label_linf": 0.41, "threshold": 0.3, "exceeds": True}}],
              "problems": []}
    verdict = {**_verdict(), "sources": {"mnist": {"example_count": 1000, "accuracy": 0.91, "baseline_accuracy": 0.92},
                                         "feedback": {"example_count": 150, "accuracy": 0.71,
                                                      "baseline_accuracy": 0.18}}}
    page = report_html.render(verdict, _figures(), "test", span_checks=checks)
    assert "<h2>Data by span</h2>" in page and "<td>feedback</td><td>1,500</td>" in page
    assert "0.41 (threshold 0.30, exceeded)" in page
    assert "<td>feedback</td><td>150</td><td>0.7100</td><td>0.1800</td><td>+0.5300</td>" in page
    bare = report_html.render(_verdict(), _figures(), "test")
    assert "MNIST only: no sealed span" in bare and "One source (MNIST)" in bare


def test_with_a_paired_test_the_page_shows_it_per_slice_and_says_what_decided():
    from components.evaluation.significance import judge

    candidate, baseline = np.ones(500, bool), np.ones(500, bool)
    candidate[:40] = False  # 40 lost, none gained: a significant drop
    significance = judge(candidate, baseline, np.array(["mnist"] * 500), 0.05, mnist_source="mnist",
                         min_slice_examples=50, max_drop=0.005, max_new_data_drop=0.005)
    comparison = {**_comparison(blessed=False), "max_drop": 0.005, "paired_test": significance,
                  "decided_by": "paired test"}
    verdict = {**_verdict(), "blessed": False, "reasons": significance["reasons"], "significance": significance}
    page = report_html.render(verdict, _figures(), "test", comparison=comparison)
    assert "no drop beyond 0.005 against the baseline that is significant at level 0.05" in page
    assert "the paired test found a significant drop" in page
    assert "<h3>Noise or regression: the paired test per gated slice</h3>" in page
    assert "<td>overall</td><td>500</td><td>40</td><td>0</td><td>-0.0800</td>" in page
    assert "overall: accuracy 0.9200 vs baseline 1.0000, a significant drop (McNemar p = " in page
    assert "No baseline model: only the floors applied." in report_html.render(_verdict(), _figures(), "test")
