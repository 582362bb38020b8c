"""Renders the run report: one self-contained HTML page (figures inlined by report_figures)."""
from __future__ import annotations

import html
import re
from typing import Any, Dict, Iterable, List, Optional

from components.evaluation.source_slices import sources_html
from components.evaluation.significance import significance_html
from components.validation.span_validator import span_checks_html
from components.report.report_figures import (candidate_vs_baseline_png, confusion_matrix_png,  # noqa: F401
                                       most_wrong_png, per_digit_accuracy_png, training_curves_png)

# The RunReport cannot know its own run's end, nor (on Kubeflow) its run id: `digits run` fills
# these sections in the copy it writes to <pipeline_root>/runs/<run id>/report.html.
TIMES_MARKER = ("<!-- digits:component-times -->", "<!-- /digits:component-times -->")
RUN_ID_MARKER = ("<!-- digits:run-id -->", "<!-- /digits:run-id -->")


def _img(alt: str, png: str) -> str:
    return f"<img alt='{alt}' src='data:image/png;base64,{png}'>"


def _fraction(value: Optional[float]) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def _marked(marker, body: str) -> str:
    return f"{marker[0]}{body}{marker[1]}"


def _verdict_html(verdict: Dict[str, Any]) -> str:
    state = "blessed" if verdict["blessed"] else "not blessed"
    reasons = "".join(f"<li>{html.escape(reason)}</li>" for reason in verdict["reasons"])
    baseline = (f"baseline model: {_fraction(verdict['baseline_accuracy'])}" if verdict["has_baseline"]
                else "no baseline model yet (none blessed or served), so only the accuracy floor applied")
    return (f"<p class='{state.replace(' ', '-')}'><b>{state}</b> — test accuracy {_fraction(verdict['accuracy'])} "
            f"on {verdict['example_count']} examples; {baseline}.</p>" + (f"<ul>{reasons}</ul>" if reasons else ""))


def _table(header: Iterable[str], rows: Iterable[Iterable[Any]], css: str) -> str:
    head = "".join(f"<th>{html.escape(str(cell))}</th>" for cell in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(cell))}</td>" for cell in row) + "</tr>" for row in rows)
    return f"<table class='{css}'><tr>{head}</tr>{body}</table>"


def _run_info_html(run_info: Optional[Dict[str, Any]]) -> str:
    if not run_info:
        return "<p>No run information was given.</p>"
    rows = "".join(f"<tr><th>{html.escape(str(key))}</th><td>{html.escape(str(value))}</td></tr>"
                   for key, value in sorted(run_info.items()))
    return f"<table class='run-info'>{rows}</table>"


def push_text(push: Optional[Dict[str, Any]]) -> str:
    """The Pusher's outcome in the words of the report and the console."""
    if push is None:
        return "push outcome unknown (the Pusher's output was not given)"
    if not push["pushed"]:
        return "not pushed (not blessed)"
    if push["new_version"]:
        return f"pushed as version {push['version']}"
    return f"already served as version {push['version']} (identical model, not pushed again)"


def _run_html(push: Optional[Dict[str, Any]], written: Optional[str]) -> str:
    run_id = _marked(RUN_ID_MARKER, "see runs/&lt;id&gt;/summary.json under the pipeline root")
    destination = f" at {html.escape(push['destination'])}" if push and push.get("destination") else ""
    return (f"<table class='run-info'><tr><th>run id</th><td>{run_id}</td></tr>"
            f"<tr><th>report written</th><td>{html.escape(written or 'n/a')}</td></tr>"
            f"<tr><th>model</th><td class='push'>{html.escape(push_text(push))}{destination}</td></tr></table>")


def _sizes_html(sizes: Optional[Dict[str, int]], train_splits: List[str]) -> str:
    if not sizes:
        return "<p>No split sizes: StatisticsGen's statistics were not found.</p>"
    rows = [(split, f"{count:,}", "yes" if split in train_splits else "no") for split, count in sorted(sizes.items())]
    trained = sum(sizes.get(split, 0) for split in train_splits)
    return (_table(("split", "examples", "trained on"), rows, "sizes")
            + f"<p class='train-examples'>Training set: <b>{trained:,}</b> examples "
              f"({html.escape(' + '.join(train_splits) or 'splits unknown')}).</p>")


def _curves_html(history: Optional[Dict[str, Any]]) -> str:
    if not history or not history.get("history"):
        return "<p>No training history: the Trainer's history.json was not found (a model trained before the " \
               "report read it), so there are no curves.</p>"
    series = history["history"]
    validation = "" if any(name.startswith("val_") for name in series) else \
        "<p>No validation series: the Trainer fitted on the eval split too, so it validated on nothing held out.</p>"
    return _img("training curves", training_curves_png(history)) + validation


def _change(candidate: Optional[float], baseline: Optional[float]) -> str:
    return "—" if candidate is None or baseline is None else f"{candidate - baseline:+.4f}"


def _comparison_html(comparison: Optional[Dict[str, Any]]) -> str:
    if not comparison or not comparison["rows"]:
        return "<p>No per-digit accuracy from the Evaluator.</p>"
    rows = [("overall" if row["slice"] == "overall" else f"digit {row['slice']}", _fraction(row["candidate"]),
             "—" if row["baseline"] is None else _fraction(row["baseline"]), _change(row["candidate"], row["baseline"]))
            for row in comparison["rows"]]
    floor, max_drop = comparison.get("floor"), comparison.get("max_drop")
    overall = comparison["rows"][0] if comparison["rows"][0]["slice"] == "overall" else {}
    gate = [f"accuracy floor {_fraction(floor)}"]
    paired = comparison.get("paired_test")  # components/evaluation/significance.py, when there was a baseline
    if paired:
        gate.append(f"no drop beyond {max_drop:g} against the baseline that is significant at level "
                    f"{paired['alpha']:g} (paired test on the same images, below)")
        decided = {"floor": "no significant drop: the floor decided", "paired test": "the paired test found a "
                   "significant drop", "both": "both the floor and the paired test failed"}[comparison["decided_by"]]
    elif comparison["has_baseline"] and max_drop is not None and overall.get("baseline") is not None:
        gate.append(f"allowed drop {max_drop:.4f} against the baseline (at least "
                    f"{overall['baseline'] - max_drop:.4f})")
        decided = {"floor": "the floor decided (it is the stricter bound)",
                   "change": "the allowed drop against the baseline decided",
                   "both": "both the floor and the allowed drop failed"}[comparison["decided_by"]]
    else:
        decided = "no baseline model: the floor alone decided"
    chart = _img("candidate and baseline accuracy per digit", candidate_vs_baseline_png(comparison["rows"])) \
        if comparison["has_baseline"] else ""
    return (_table(("slice", "candidate", "baseline", "change"), rows, "comparison")
            + f"<p class='gate'>Gate on the overall accuracy: {html.escape('; '.join(gate))}. "
              f"<b>{html.escape(decided)}</b>.</p>" + chart)


def _component_rows(components) -> List[tuple]:
    rows = []
    for component in components:
        get = component.get if isinstance(component, dict) else lambda key, c=component: getattr(c, key, None)
        name = get("node_id") or get("name")
        rows.append((name, str(get("state")).lower(), f"{float(get('seconds')):.1f}"))
    return rows


def with_component_times(html_text: str, components, run_id: Optional[str] = None) -> str:
    """The report with its component-times section filled in (and its run id, when given): only the
    runner knows them, after the last component, the RunReport itself, has finished."""
    table = _table(("component", "state", "seconds"), _component_rows(components), "times")
    pattern = re.escape(TIMES_MARKER[0]) + ".*?" + re.escape(TIMES_MARKER[1])
    if not re.search(pattern, html_text, re.S):
        raise ValueError("the report has no component-times section to fill in")
    html_text = re.sub(pattern, lambda _: _marked(TIMES_MARKER, table), html_text, count=1, flags=re.S)
    if run_id is not None:
        pattern = re.escape(RUN_ID_MARKER[0]) + ".*?" + re.escape(RUN_ID_MARKER[1])
        html_text = re.sub(pattern, lambda _: _marked(RUN_ID_MARKER, html.escape(run_id)), html_text, flags=re.S)
    return html_text


_STYLE = ("body{font-family:sans-serif;max-width:60em;margin:2em auto} .blessed{color:#060} .not-blessed{color:#a00} "
          ".run-info th{text-align:left;padding-right:1em} table.sizes td,table.comparison td,table.times td"
          "{text-align:right;padding:0 .8em} table.sizes td:first-child,table.comparison td:first-child,"
          "table.times td:first-child{text-align:left}")


def render(verdict: Dict[str, Any], figures: Dict[str, Any], split: str, run_info: Optional[Dict[str, Any]] = None,
           *, history: Optional[Dict[str, Any]] = None, sizes: Optional[Dict[str, int]] = None,
           push: Optional[Dict[str, Any]] = None, comparison: Optional[Dict[str, Any]] = None,
           written: Optional[str] = None, span_checks: Optional[Dict[str, Any]] = None) -> str:
    """The page; every optional input missing is said so in its section rather than failing."""
    wrong = figures["most_confident_wrong"]
    wrong_html = _img("most confidently wrong digits", most_wrong_png(wrong)) if wrong else \
        "<p>No test digit was misread.</p>"
    train_splits = list((run_info or {}).get("train_splits") or [])
    times = _marked(TIMES_MARKER, "<p>Component times are added when the run ends, in the copy "
                                  "of this report under the pipeline root's runs/&lt;run id&gt;/report.html.</p>")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>digits run report</title>
<style>{_STYLE}</style>
</head><body>
<h1>digits run report</h1>
<h2>Run</h2>
{_run_html(push, written)}
<h2>Hyper-parameters and code version</h2>
{_run_info_html(run_info)}
<h2>Data sizes per split</h2>
{_sizes_html(sizes, train_splits)}
<h2>Data by span</h2>
{span_checks_html(span_checks or {}) or "<p>MNIST only: no sealed span of added digits was read.</p>"}
<h2>Training curves</h2>
{_curves_html(history)}
<h2>Evaluator verdict</h2>
{_verdict_html(verdict)}
<h2>Candidate and baseline</h2>
{_comparison_html(comparison)}
<h3>By source</h3>
{sources_html(verdict.get("sources") or {}) or "<p>One source (MNIST): the overall figures above.</p>"}
<h3>Noise or regression: the paired test per gated slice</h3>
{significance_html(verdict.get("significance")) or "<p>No baseline model: only the floors applied.</p>"}
<h2>Confusion matrix ({html.escape(split)} split)</h2>
{_img("confusion matrix", confusion_matrix_png(figures['confusion']))}
<h2>Accuracy per digit</h2>
{_img("accuracy per digit", per_digit_accuracy_png(figures['per_digit_accuracy']))}
<h2>The {len(wrong)} most confidently wrong digits</h2>
{wrong_html}
<h2>Component times</h2>
{times}
</body></html>
"""
