"""The gate's paired test: known counts give known p-values, and slices are judged as the gate says."""
import numpy as np
import pytest
from scipy import stats

from components.evaluation import significance
from components.evaluation.significance import compare, gated_slices, judge, mcnemar_p_worse, p_worse

# Paired counts (b: baseline right, candidate wrong; c: the reverse) of 20 ordered pairs of five seeds of the
# default config (128,128 units, 3 epochs, all 60,000 training images) on MNIST's 10,000 test images,
# measured for issue 15 (accuracies 0.9642–0.9720). Candidate first, baseline second.
SEED_PAIRS = [(172, 102), (151, 101), (184, 106), (164, 121), (102, 172), (134, 154), (157, 149), (154, 181),
              (101, 151), (154, 134), (184, 156), (161, 168), (106, 184), (149, 157), (156, 184), (167, 202),
              (121, 164), (181, 154), (168, 161), (202, 167)]


def test_exact_mcnemar_known_values():
    assert mcnemar_p_worse(10, 0) == pytest.approx(0.5 ** 10)  # ~0.00098: ten losses, no gain
    assert mcnemar_p_worse(0, 10) == 1.0
    assert mcnemar_p_worse(0, 0) == 1.0  # the models never disagree
    for k in (1, 5, 50, 500):
        assert mcnemar_p_worse(k, k) >= 0.5  # as many losses as gains: no evidence of a drop
    assert mcnemar_p_worse(8, 2) == pytest.approx(56 / 1024)  # P(X >= 8), X ~ Bin(10, 1/2)
    for b, c in [(3, 9), (20, 7), (151, 101)]:
        assert mcnemar_p_worse(b, c) == pytest.approx(
            stats.binomtest(b, b + c, 0.5, alternative="greater").pvalue)


def test_a_margin_tolerates_drops_up_to_it():
    # 172 lost, 102 gained of 10,000: a 0.7-point drop. Against 0, overwhelming; against 0.5 points, not.
    assert p_worse(172, 102, 10_000) < 1e-4
    assert p_worse(172, 102, 10_000, margin=0.005) == pytest.approx(0.121, abs=0.002)
    # a drop of 5 points (500 lost, none gained) is significant against a 0.5-point margin too
    assert p_worse(500, 0, 10_000, margin=0.005) < 1e-10
    # too few disagreements to show a drop of the margin at all: never blocks
    assert p_worse(10, 0, 10_000, margin=0.005) == 1.0
    assert p_worse(10, 0, 10, margin=0.0) == pytest.approx(0.5 ** 10)
    with pytest.raises(ValueError, match="at most n"):
        p_worse(10, 5, 12)


def test_seed_to_seed_noise_blesses_with_the_default_margin_but_not_with_plain_mcnemar():
    """Why the allowed drop is the test's margin: plain McNemar counts test-set noise only, and two seeds
    of one config really differ on 10,000 images (see components/evaluation/significance.py)."""
    alpha = 0.05
    plain = [p_worse(b, c, 10_000) for b, c in SEED_PAIRS]
    gated = [p_worse(b, c, 10_000, margin=0.005) for b, c in SEED_PAIRS]
    assert sum(p < alpha for p in plain) == 5
    assert min(gated) > alpha, min(gated)


def test_compare_counts_pairs_and_brackets_the_difference():
    candidate = np.array([1, 1, 0, 0, 1, 1, 1, 1, 1, 1], bool)
    baseline = np.array([1, 0, 1, 1, 1, 1, 1, 1, 1, 1], bool)
    result = compare(candidate, baseline, alpha=0.05)
    assert (result.n, result.b, result.c) == (10, 2, 1)
    assert result.diff == pytest.approx(-0.1) and result.accuracy == 0.8 and result.baseline_accuracy == 0.9
    assert result.ci[0] < result.diff < result.ci[1]
    assert result.p_value == pytest.approx(mcnemar_p_worse(2, 1)) and not result.significant_drop
    with pytest.raises(ValueError, match="different examples"):
        compare(candidate, baseline[:5], alpha=0.05)


def test_the_interval_excludes_zero_for_a_clear_drop_and_narrows_with_n():
    wide = significance.difference_interval(30, 10, 1000, 0.9)
    narrow = significance.difference_interval(300, 100, 10_000, 0.9)
    assert wide[1] < 0 and narrow[1] < 0
    assert narrow[1] - narrow[0] < wide[1] - wide[0]


def test_gated_slices_are_overall_mnist_and_large_enough_sources():
    sources = np.array(["mnist"] * 5 + ["feedback"] * 3 + ["import"] * 2 + [""])
    slices = gated_slices(sources, "mnist", min_slice_examples=3)
    assert list(slices) == ["overall", "feedback", "mnist"]
    assert slices["overall"].sum() == 11 and slices["feedback"].sum() == 3 and slices["mnist"].sum() == 5
    assert list(gated_slices(np.array(["feedback"] * 2), "mnist", 3)) == ["overall"]


def _outcomes(n, lost, gained=0):
    """Right/wrong of candidate and baseline on ``n`` examples: ``lost`` only the baseline got right,
    ``gained`` only the candidate, the rest both right."""
    candidate, baseline = np.ones(n, bool), np.ones(n, bool)
    candidate[:lost] = False
    baseline[lost:lost + gained] = False
    return candidate, baseline


def test_judge_blocks_only_the_significantly_worse_slice_and_names_it():
    mnist = _outcomes(1000, lost=12, gained=8)  # a 0.4-point drop within noise
    feedback = _outcomes(100, lost=15)  # 15 newly wrong of 100
    candidate = np.concatenate([mnist[0], feedback[0]])
    baseline = np.concatenate([mnist[1], feedback[1]])
    sources = np.array(["mnist"] * 1000 + ["feedback"] * 100)
    verdict = judge(candidate, baseline, sources, 0.05, mnist_source="mnist", min_slice_examples=50,
                    max_drop=0.005, max_new_data_drop=0.01)
    assert not verdict["blessed"]
    assert set(verdict["slices"]) == {"overall", "mnist", "feedback"}
    assert not verdict["slices"]["mnist"]["significant_drop"] and verdict["slices"]["mnist"]["margin"] == 0.005
    feedback_figures = verdict["slices"]["feedback"]
    assert feedback_figures["margin"] == 0.01 and feedback_figures["b"] == 15 and feedback_figures["c"] == 0
    [reason] = [r for r in verdict["reasons"] if r.startswith("source 'feedback'")]
    assert reason == (f"source 'feedback': accuracy 0.8500 vs baseline 1.0000, a significant drop (McNemar p = "
                      f"{significance.format_p(feedback_figures['p_value'])} < 0.05, allowed drop 0.01)")


def test_judge_blesses_a_drop_inside_the_noise_even_beyond_the_allowed_point_drop():
    # 0.8-point drop on 500 images (the small runs' test split): above 0.005 as a point estimate, not significant
    candidate, baseline = _outcomes(500, lost=9, gained=5)
    verdict = judge(candidate, baseline, np.array(["mnist"] * 500), 0.05, mnist_source="mnist",
                    min_slice_examples=50, max_drop=0.005, max_new_data_drop=0.005)
    assert verdict["blessed"] and verdict["reasons"] == []
    assert verdict["slices"]["overall"]["diff"] == pytest.approx(-0.008)


def test_summary_lines_and_report_table_show_p_values_and_intervals():
    candidate, baseline = _outcomes(1000, lost=30, gained=2)
    verdict = judge(candidate, baseline, np.array(["mnist"] * 1000), 0.05, mnist_source="mnist",
                    min_slice_examples=50, max_drop=0.005, max_new_data_drop=0.005)
    lines = significance.summary_lines(verdict)
    assert lines[0].startswith("paired test against the baseline (exact McNemar beyond the allowed drop, level 0.05; "
                               "90% interval")
    assert lines[1].startswith("  overall: -0.0280 [") and "30 lost / 2 gained, allowed drop 0.005, p = " in lines[1]
    assert lines[1].endswith("(significant drop)") and lines[2].startswith("  source 'mnist': ")
    page = significance.significance_html(verdict)
    assert page.count("<tr>") == 3 and "<td>source &#x27;mnist&#x27;</td>" in page and "90% interval" in page
    assert significance.summary_lines(None) == [] and significance.significance_html(None) == ""
