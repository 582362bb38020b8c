"""Renders the run report: the Evaluator's verdict and three matplotlib figures in one HTML file."""
from __future__ import annotations

import base64
import html
import io
from typing import Any, Dict, Optional

import matplotlib

matplotlib.use("Agg")  # files only; no display on a server or in CI
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from components import features  # noqa: E402


def _png(figure) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    plt.close(figure)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def confusion_matrix_png(confusion: np.ndarray) -> str:
    """Colours the errors only: the diagonal (correct counts) would swamp the scale, so it is
    masked grey and keeps its counts as text."""
    confusion = np.asarray(confusion)
    errors = np.ma.masked_array(confusion, mask=np.eye(*confusion.shape, dtype=bool))
    colours = matplotlib.colormaps["Reds"].copy()
    colours.set_bad("lightgrey")
    figure, axes = plt.subplots(figsize=(6, 5))
    image = axes.imshow(errors, cmap=colours, vmin=0)
    figure.colorbar(image, ax=axes, label="misclassified (diagonal = correct, grey)")
    digits = range(features.NUM_CLASSES)
    axes.set(xticks=digits, yticks=digits, xlabel="predicted digit", ylabel="true digit",
             title="Confusion matrix (errors coloured)")
    threshold = errors.max() / 2 if errors.count() else 0
    for true in digits:
        for predicted in digits:
            count = confusion[true, predicted]
            on_diagonal = true == predicted
            axes.text(predicted, true, str(count), ha="center", va="center", fontsize=7,
                      fontweight="bold" if on_diagonal else "normal",
                      color="white" if not on_diagonal and count > threshold else "black")
    return _png(figure)


def per_digit_accuracy_png(per_digit: np.ndarray) -> str:
    figure, axes = plt.subplots(figsize=(6, 3))
    axes.bar(range(features.NUM_CLASSES), per_digit, color="tab:blue")
    axes.set(xticks=range(features.NUM_CLASSES), xlabel="digit", ylabel="accuracy",
             ylim=(0.0, 1.05), title="Accuracy per digit (axis from 0)")
    for digit, value in enumerate(per_digit):
        axes.text(digit, value, f"{value:.3f}", ha="center", va="bottom", fontsize=7)
    return _png(figure)


def most_wrong_png(most_wrong) -> str:
    figure, grid = plt.subplots(5, 5, figsize=(7, 8))
    for axes in grid.flat:
        axes.axis("off")
    for axes, item in zip(grid.flat, most_wrong):
        axes.imshow(item["image"], cmap="gray_r", vmin=0, vmax=255)
        axes.set_title(f"true {item['label']} → {item['predicted']}\n{item['confidence']:.1%}", fontsize=8)
    figure.suptitle("Most confidently wrong test digits")
    return _png(figure)


def _verdict_html(verdict: Dict[str, Any]) -> str:
    def fraction(value):
        return "n/a" if value is None else f"{value:.4f}"

    state = "blessed" if verdict["blessed"] else "not blessed"
    reasons = "".join(f"<li>{html.escape(reason)}</li>" for reason in verdict["reasons"])
    baseline = (f"baseline model: {fraction(verdict['baseline_accuracy'])}" if verdict["has_baseline"]
                else "no baseline model yet (none blessed or served), so only the accuracy floor applied")
    return (f"<p class='{state.replace(' ', '-')}'><b>{state}</b> — test accuracy {fraction(verdict['accuracy'])} "
            f"on {verdict['example_count']} examples; {baseline}.</p>" + (f"<ul>{reasons}</ul>" if reasons else ""))


def _run_info_html(run_info: Optional[Dict[str, Any]]) -> str:
    if not run_info:
        return "<p>No run information was given.</p>"
    rows = "".join(f"<tr><th>{html.escape(str(key))}</th><td>{html.escape(str(value))}</td></tr>"
                   for key, value in sorted(run_info.items()))
    return f"<table class='run-info'>{rows}</table>"


def render(verdict: Dict[str, Any], figures: Dict[str, Any], split: str,
           run_info: Optional[Dict[str, Any]] = None) -> str:
    wrong = figures["most_confident_wrong"]
    wrong_html = (f"<img alt='most confidently wrong digits' src='data:image/png;base64,{most_wrong_png(wrong)}'>"
                  if wrong else "<p>No test digit was misread.</p>")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>digits run report</title>
<style>body{{font-family:sans-serif;max-width:60em;margin:2em auto}} .blessed{{color:#060}} .not-blessed{{color:#a00}} .run-info th{{text-align:left;padding-right:1em}}</style>
</head><body>
<h1>digits run report</h1>
<h2>Hyper-parameters and code version</h2>
{_run_info_html(run_info)}
<h2>Evaluator verdict</h2>
{_verdict_html(verdict)}
<h2>Confusion matrix ({html.escape(split)} split)</h2>
<img alt="confusion matrix" src="data:image/png;base64,{confusion_matrix_png(figures['confusion'])}">
<h2>Accuracy per digit</h2>
<img alt="accuracy per digit" src="data:image/png;base64,{per_digit_accuracy_png(figures['per_digit_accuracy'])}">
<h2>The {len(wrong)} most confidently wrong digits</h2>
{wrong_html}
</body></html>
"""
