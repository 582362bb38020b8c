"""The run summary's issue-14 lines: drift per span and each source slice against the baseline."""
import os

os.environ["TF_USE_LEGACY_KERAS"] = "1"

from pipeline.config import PipelineConfig  # noqa: E402
from pipeline.runs.run_summary import RunSummary  # noqa: E402


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


def test_the_paired_test_gets_a_line_per_gated_slice_with_its_p_value():
    import numpy as np

    from components.evaluation.significance import judge

    candidate, baseline = np.ones(1000, bool), np.ones(1000, bool)
    candidate[:9], baseline[9:14] = False, False  # 9 lost, 5 gained: a 0.4-point drop within noise
    summary = _summary(None, {})
    summary.verdict.update(blessed=True, significance=judge(
        candidate, baseline, np.array(["mnist"] * 1000), 0.05, mnist_source="mnist", min_slice_examples=50,
        max_drop=0.005, max_new_data_drop=0.005))
    lines = summary.render().splitlines()
    i = lines.index("  paired test against the baseline (exact McNemar beyond the allowed drop, level 0.05; "
                    "90% interval of the change):")
    assert lines[i + 1].startswith("    overall: -0.0040 [") and lines[i + 1].endswith("(within noise)")
    assert "9 lost / 5 gained, allowed drop 0.005, p = " in lines[i + 1]
    assert lines[i + 2].startswith("    source 'mnist': -0.0040 [") and "blessed: yes" in lines
