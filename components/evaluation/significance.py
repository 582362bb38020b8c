"""The gate's paired comparison: is the candidate worse than the baseline, beyond the noise?

TFMA 0.47 compares candidate and baseline by point estimates only, and seed-to-seed spread of one
config (0.9677–0.9729 on MNIST's test set) is as large as any fixed allowed drop. Both models are
judged on the same test examples, so the test is paired: only the examples on which they disagree
carry information. Of those, ``b`` the baseline got right and the candidate wrong, ``c`` the
reverse. Exact McNemar (one-sided): under "the candidate is no worse" each disagreement is a fair
coin, so the p-value is P(X >= b) for X ~ Binomial(b + c, 1/2).

McNemar alone measures test-set sampling noise, not training noise: on MNIST's 10,000 test images,
two seeds of one config differ *really* (measured: 5 of 20 ordered seed pairs p < 0.05, down to
p = 1e-5 at a 0.7-point drop). So the gate tests against an allowed drop ``margin`` (the config's
--max-accuracy-drop, --max-new-data-drop): H0 "the true drop is at most ``margin``", rejected when
the disagreements lean to the baseline more than that drop explains. Conditional on the ``m = b + c``
disagreements among ``n`` examples, a drop of ``margin`` makes each one a loss with probability
1/2 + margin·n/(2m), and the p-value is the exact binomial tail at that probability (the observed
disagreement rate plugged in). ``margin = 0`` is exact McNemar. A slice blocks blessing only when
its p-value is below the significance level.

The interval is for the accuracy difference (candidate − baseline), a Wald interval of the paired
difference at confidence 1 − 2α: the test rejects roughly when its upper end is below −margin.
"""
from __future__ import annotations

import dataclasses
import html
import math
from typing import Any, Dict, Optional, Tuple

import numpy as np
from scipy import stats

from components.artifact_files import read_json

OVERALL = "overall"
SIGNIFICANCE_FILE = "significance.json"  # in the Evaluator's evaluation artifact


def p_worse(b: int, c: int, n: int, margin: float = 0.0) -> float:
    """One-sided p-value for "the candidate's accuracy is lower by more than ``margin``" from the
    paired counts of ``n`` examples (``margin`` 0: exact McNemar, P(X >= b), X ~ Bin(b + c, 1/2)).
    1.0 when the models never disagree, or disagree too rarely to show a drop of ``margin``."""
    if b < 0 or c < 0 or b + c > n:
        raise ValueError(f"paired counts must be non-negative and at most n, got b={b}, c={c}, n={n}")
    if not 0.0 <= margin < 1.0:
        raise ValueError(f"margin is an accuracy difference in 0..1, got {margin}")
    if b + c == 0:
        return 1.0
    loss_probability = 0.5 + margin * n / (2 * (b + c))
    if loss_probability >= 1.0:
        return 1.0
    return float(stats.binom.sf(b - 1, b + c, loss_probability))


def mcnemar_p_worse(b: int, c: int) -> float:
    """One-sided exact McNemar p-value for "the candidate is worse" (no margin)."""
    return p_worse(b, c, b + c)


def difference_interval(b: int, c: int, n: int, confidence: float) -> Tuple[float, float]:
    """Two-sided Wald interval at ``confidence`` for the paired accuracy difference (c − b) / n."""
    if n <= 0:
        return (0.0, 0.0)
    diff = (c - b) / n
    variance = max((b + c) / n - diff * diff, 0.0) / n
    z = float(stats.norm.ppf(0.5 + confidence / 2))
    half = z * math.sqrt(variance)
    return (diff - half, diff + half)


@dataclasses.dataclass(frozen=True)
class SliceComparison:
    """One gated slice, candidate against baseline on the same ``n`` test examples."""

    n: int
    b: int  # baseline right, candidate wrong
    c: int  # candidate right, baseline wrong
    accuracy: float
    baseline_accuracy: float
    margin: float  # the allowed drop the p-value tests against
    p_value: float
    diff: float
    ci: Tuple[float, float]
    significant_drop: bool

    def as_dict(self) -> Dict[str, Any]:
        return {**dataclasses.asdict(self), "ci": list(self.ci)}


def compare(candidate_right: np.ndarray, baseline_right: np.ndarray, alpha: float,
            margin: float = 0.0) -> SliceComparison:
    """The paired comparison of two boolean "right" vectors over the same examples: does the candidate
    drop by more than ``margin``, at level ``alpha``?"""
    candidate_right, baseline_right = np.asarray(candidate_right, bool), np.asarray(baseline_right, bool)
    if candidate_right.shape != baseline_right.shape:
        raise ValueError(f"candidate and baseline were judged on different examples: "
                         f"{candidate_right.shape} vs {baseline_right.shape}")
    n = int(candidate_right.size)
    b = int(np.sum(baseline_right & ~candidate_right))
    c = int(np.sum(candidate_right & ~baseline_right))
    p_value = p_worse(b, c, n, margin)
    return SliceComparison(
        n=n, b=b, c=c, accuracy=float(candidate_right.mean()) if n else 0.0,
        baseline_accuracy=float(baseline_right.mean()) if n else 0.0, margin=margin, p_value=p_value,
        diff=(c - b) / n if n else 0.0, ci=difference_interval(b, c, n, 1 - 2 * alpha),
        significant_drop=p_value < alpha)


def gated_slices(sources: np.ndarray, mnist_source: str, min_slice_examples: int) -> Dict[str, np.ndarray]:
    """``{"overall": all, "mnist": mask, "<source>": mask}``: the slices the Evaluator gates on —
    overall, MNIST when it has examples, any other source once it holds ``min_slice_examples``."""
    sources = np.asarray(sources).astype(str)
    slices = {OVERALL: np.ones(sources.shape, bool)}
    for source in sorted(set(sources.tolist()) - {""}):
        mask = sources == source
        if (source == mnist_source and mask.any()) or (source != mnist_source and mask.sum() >= min_slice_examples):
            slices[source] = mask
    return slices


def slice_label(name: str) -> str:
    """How reasons and tables name a slice: "overall", "source 'mnist'"."""
    return name if name == OVERALL else f"source '{name}'"


def reason(name: str, comparison: Dict[str, Any], alpha: float) -> str:
    """"source 'mnist': accuracy 0.9510 vs baseline 0.9620, a significant drop (McNemar p = 0.003 < 0.05,
    allowed drop 0.005)"."""
    return (f"{slice_label(name)}: accuracy {comparison['accuracy']:.4f} vs baseline "
            f"{comparison['baseline_accuracy']:.4f}, a significant drop (McNemar p = "
            f"{format_p(comparison['p_value'])} < {alpha:g}, allowed drop {comparison['margin']:g})")


def format_p(p_value: float) -> str:
    return f"{p_value:.2g}" if p_value < 0.001 else f"{p_value:.3f}"


def judge(candidate_right: np.ndarray, baseline_right: np.ndarray, sources: np.ndarray, alpha: float, *,
          mnist_source: str, min_slice_examples: int, max_drop: float, max_new_data_drop: float) -> Dict[str, Any]:
    """``{"alpha", "blessed", "reasons", "slices": {name: {n, b, c, p_value, diff, ci, ...}}}``: overall and
    MNIST tested against ``max_drop``, every other gated source against ``max_new_data_drop``."""
    slices = {}
    for name, mask in gated_slices(sources, mnist_source, min_slice_examples).items():
        margin = max_drop if name in (OVERALL, mnist_source) else max_new_data_drop
        slices[name] = compare(candidate_right[mask], baseline_right[mask], alpha, margin).as_dict()
    reasons = [reason(name, figures, alpha) for name, figures in slices.items() if figures["significant_drop"]]
    return {"alpha": alpha, "test": "exact McNemar (conditional binomial), one-sided: a drop beyond the allowed drop",
            "ci_confidence": 1 - 2 * alpha, "blessed": not reasons, "reasons": reasons, "slices": slices}


def load(evaluation_uri: str) -> Optional[Dict[str, Any]]:
    """The Evaluator's ``significance.json``, or None (no baseline, or an evaluation made before it)."""
    return read_json(evaluation_uri, SIGNIFICANCE_FILE)


def _rows(significance: Dict[str, Any]):
    for name, s in significance["slices"].items():
        yield name, s, "significant drop" if s["significant_drop"] else "within noise"


def summary_lines(significance: Optional[Dict[str, Any]]) -> list:
    """One line per gated slice for the run summary (empty when there was no baseline to compare)."""
    if not significance or not significance.get("slices"):
        return []
    lines = [f"paired test against the baseline (exact McNemar beyond the allowed drop, level "
             f"{significance['alpha']:g}; {significance['ci_confidence']:.0%} interval of the change):"]
    for name, s, verdict in _rows(significance):
        lines.append(f"  {slice_label(name)}: {s['diff']:+.4f} [{s['ci'][0]:+.4f}, {s['ci'][1]:+.4f}] on {s['n']:,} "
                     f"images, {s['b']} lost / {s['c']} gained, allowed drop {s['margin']:g}, "
                     f"p = {format_p(s['p_value'])} ({verdict})")
    return lines


def significance_html(significance: Optional[Dict[str, Any]]) -> str:
    """A small HTML table of the paired test per gated slice (verdict["significance"]) for the report."""
    if not significance or not significance.get("slices"):
        return ""
    head = "".join(f"<th>{h}</th>" for h in ("slice", "test images", "lost (b)", "gained (c)", "change",
                                              f"{significance['ci_confidence']:.0%} interval", "allowed drop",
                                              "p-value", "verdict"))
    rows = []
    for name, s, verdict in _rows(significance):
        cells = [slice_label(name), f"{s['n']:,}", str(s["b"]), str(s["c"]), f"{s['diff']:+.4f}",
                 f"[{s['ci'][0]:+.4f}, {s['ci'][1]:+.4f}]", f"{s['margin']:g}", format_p(s["p_value"]), verdict]
        rows.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>")
    caption = (f"<p>Paired test on the same test images (exact McNemar, one-sided, against the allowed drop; "
               f"a slice blocks at p &lt; {significance['alpha']:g}).</p>")
    return f"{caption}<table class='significance'><tr>{head}</tr>{''.join(rows)}</table>"
