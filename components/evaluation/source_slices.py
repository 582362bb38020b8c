"""The Evaluator's per-source slices read back: names for the gate's reasons, figures for the summary."""
from __future__ import annotations

import html
from typing import Any, Dict

import tensorflow_model_analysis as tfma

from components.evaluation.eval_config import ACCURACY_METRIC, SOURCE_KEY


def _value(single) -> str:
    value = getattr(single, single.WhichOneof("kind"))
    return value.decode() if isinstance(value, bytes) else str(value)


def slice_name(slice_key) -> str:
    """``source 'feedback'``, ``label 3``; "" for the overall slice (a SliceKey proto)."""
    return ", ".join(f"{single.column} '{_value(single)}'" if single.column == SOURCE_KEY
                     else f"{single.column} {_value(single)}" for single in slice_key.single_slice_keys)


def source_metrics(evaluation_uri: str) -> Dict[str, Dict[str, Any]]:
    """``{source: {"accuracy", "baseline_accuracy", "example_count"}}`` from TFMA's metrics."""
    result: Dict[str, Dict[str, Any]] = {}
    for slice_metrics in tfma.load_metrics(evaluation_uri):
        keys = list(slice_metrics.slice_key.single_slice_keys)
        if len(keys) != 1 or keys[0].column != SOURCE_KEY:
            continue
        slice_figures(slice_metrics, result.setdefault(_value(keys[0]), {}))
    return dict(sorted(result.items()))


def slice_figures(slice_metrics, figures: Dict[str, Any]) -> Dict[str, Any]:
    """Fills ``figures`` with one TFMA slice's accuracy (candidate and baseline) and example count."""
    figures.update({"accuracy": None, "baseline_accuracy": None, "example_count": None, **figures})
    for entry in slice_metrics.metric_keys_and_values:
        key, value = entry.key, entry.value.double_value.value
        if key.is_diff:
            continue
        if key.name == ACCURACY_METRIC:
            figures["baseline_accuracy" if key.model_name == "baseline" else "accuracy"] = value
        elif key.name == "example_count" and key.model_name != "baseline":
            figures["example_count"] = int(value)
    return figures


def summary_lines(sources: Dict[str, Dict[str, Any]], mnist_floor: float, max_accuracy_drop: float,
                  max_new_data_drop: float, min_slice_examples: int) -> list:
    """One line per source for the run summary: its accuracy against the baseline and its gate."""
    lines = []
    for source, figures in sources.items():
        count, accuracy = figures.get("example_count"), figures.get("accuracy")
        baseline = figures.get("baseline_accuracy")
        text = f"source '{source}': " + (f"{accuracy:.4f}" if accuracy is not None else "not computed")
        text += f" on {count:,} test images" if count is not None else ""
        text += f" vs baseline {baseline:.4f}" if baseline is not None else ", no baseline"
        if source == "mnist":
            gate = f"floor {mnist_floor}, allowed drop {max_accuracy_drop}"
        elif count is not None and count >= min_slice_examples:
            gate = f"allowed drop {max_new_data_drop}"
        else:
            gate = f"not gated: fewer than {min_slice_examples} test images"
        lines.append(f"{text} ({gate})")
    return lines


def sources_html(sources: Dict[str, Dict[str, Any]]) -> str:
    """A small HTML table of the source slices (verdict["sources"]) for the run report."""
    if not sources:
        return ""

    def fraction(value) -> str:
        return "—" if value is None else f"{value:.4f}"

    rows = []
    for source, f in sources.items():
        change = (f"{f['accuracy'] - f['baseline_accuracy']:+.4f}"
                  if f.get("accuracy") is not None and f.get("baseline_accuracy") is not None else "—")
        cells = [source, "—" if f.get("example_count") is None else f"{f['example_count']:,}",
                 fraction(f.get("accuracy")), fraction(f.get("baseline_accuracy")), change]
        rows.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>")
    head = "".join(f"<th>{h}</th>" for h in ("source", "test images", "candidate", "baseline", "change"))
    return f"<table class='sources'><tr>{head}</tr>{''.join(rows)}</table>"
