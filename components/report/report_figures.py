"""The run report's figures: matplotlib PNGs, base64-encoded to be inlined (the page fetches nothing)."""
from __future__ import annotations

import base64
import io
from typing import Any, Dict, List, Optional

import matplotlib

matplotlib.use("Agg")  # files only; no display on a server or in CI
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from components.data import features  # noqa: E402


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


def training_curves_png(history: Dict[str, Any]) -> str:
    """Loss and accuracy per epoch side by side, one line per series (``val_`` ones dashed);
    the accuracy axis starts at 0 so a small gain does not look like a large one."""
    series = history.get("history", {})
    epochs = [epoch + 1 for epoch in history.get("epoch", [])] or None
    figure, (loss_axes, accuracy_axes) = plt.subplots(1, 2, figsize=(9, 3.2))
    for axes, metric in ((loss_axes, "loss"), (accuracy_axes, "accuracy")):
        for name in (metric, f"val_{metric}"):
            values = series.get(name)
            if not values:
                continue
            x = epochs if epochs and len(epochs) == len(values) else list(range(1, len(values) + 1))
            axes.plot(x, values, marker="o", linestyle="--" if name.startswith("val_") else "-",
                      label="validation" if name.startswith("val_") else "training")
        axes.set(xlabel="epoch", ylabel=metric, title=f"{metric} per epoch")
        axes.xaxis.get_major_locator().set_params(integer=True)
        if axes.lines:
            axes.legend(fontsize=8)
    loss_axes.set_ylim(bottom=0)
    accuracy_axes.set(ylim=(0.0, 1.02), title="accuracy per epoch (axis from 0)")
    return _png(figure)


def candidate_vs_baseline_png(rows: List[Dict[str, Optional[float]]]) -> str:
    """Per-digit accuracy of the candidate beside the baseline's, grouped bars on an axis from 0."""
    digits = [row for row in rows if row["slice"] != "overall"]
    x = np.arange(len(digits))
    figure, axes = plt.subplots(figsize=(8, 3.2))
    candidate = [row["candidate"] or 0.0 for row in digits]
    baseline = [row["baseline"] or 0.0 for row in digits]
    axes.bar(x - 0.2, candidate, width=0.4, label="candidate", color="tab:blue")
    axes.bar(x + 0.2, baseline, width=0.4, label="baseline", color="tab:grey")
    axes.set(xticks=x, xticklabels=[row["slice"] for row in digits], xlabel="digit", ylabel="accuracy",
             ylim=(0.0, 1.05), title="Candidate and baseline accuracy per digit (axis from 0)")
    axes.legend(fontsize=8, loc="lower right")
    return _png(figure)
