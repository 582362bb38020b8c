"""The run summary's issue-14 lines: drift per span and each source slice against the baseline."""
import os

os.environ["TF_USE_LEGACY_KERAS"] = "1"

from pipeline.config import PipelineConfig  # noqa: E402
from pipeline.run_summary import RunSummary  # noqa: E402


def _summary(span_checks, sources, **config):
    verdict = {"accuracy": 0.97, "example_count": 1100, "blessed": False, "has_baseline": True,
               "baseline_accuracy": 0.975, "sources": sources,
               "reasons": ["source 'feedback': accuracy dropped by 0.0213 against the baseline model "
                           "(allowed: 0.0050)"]}
    return RunSummary(run_id="r1", components=[], verdict=verdict, pushed=False, pushed_version=None, pushed_path=None,
                      report_path=None, config=PipelineConfig(**config), span_checks=span_checks)


def test_drift_beyond_the_threshold_and_each_source_get_a_line():
    checks = {"thresholds": {"drift_stops_run": False},
              "spans": [{"span": 0, "drift": None},
                        {"span": 3, "drift": {"label_linf": 0.412, "threshold": 0.3, "exceeds": True}}]}
    sources = {"feedback": {"accuracy": 0.8, "baseline_accuracy": 0.8213, "example_count": 100},
               "mnist": {"accuracy": 0.975, "baseline_accuracy": 0.976, "example_count": 1000}}
    lines = _summary(checks, sources, mnist_accuracy_floor=0.96).render().splitlines()
    assert "drift: span 3 label distribution L∞ 0.41 vs earlier data (threshold 0.30; not stopping)" in lines
    assert "  source 'feedback': 0.8000 on 100 test images vs baseline 0.8213 (allowed drop 0.005)" in lines
    assert "  source 'mnist': 0.9750 on 1,000 test images vs baseline 0.9760 (floor 0.96, allowed drop 0.005)" in lines
    assert any(line.startswith("blessed: no — source 'feedback': accuracy dropped by 0.0213") for line in lines)


def test_a_run_without_spans_or_source_slices_adds_no_lines():
    text = _summary(None, {}).render()
    assert "drift" not in text and "source '" not in text.replace("blessed: no — source 'feedback'", "")
