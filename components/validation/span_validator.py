"""SpanValidator: checks every span of the Examples on its own, and stops the run on what cannot be right.

It sits in the validation stage beside ExampleValidator (which checks the curated schema per split)
and before Transform: nothing is trained or pushed from a span with blank or saturated images, values
out of range or one label dominating (components/validation/span_validation.py), nor, when ``drift_stops_run`` is
set, from a span whose label distribution drifted beyond ``drift_threshold`` from the earlier data
(components/validation/span_drift.py). ``span_checks.json`` in its output holds every span's figures for the run
summary and the report; a failed run keeps it too, beside the error.
"""

import html
from typing import Dict, List

from tfx import v1 as tfx
from tfx.types import artifact, artifact_utils

from components.artifact_files import write_json
from components.validation import span_validation as checks_lib
from components.validation import span_drift
from components.validation.example_validator import DataAnomaliesError

CHECKS_FILE = "span_checks.json"


class SpanChecks(artifact.Artifact):
    """A folder with span_checks.json: per-span figures, drift against earlier spans, problems."""

    TYPE_NAME = "digits.SpanChecks"


def check_spans(batch: checks_lib.Batch, thresholds: checks_lib.Thresholds) -> Dict:
    """span_checks.json's content for the examples in ``batch``."""
    spans = checks_lib.span_figures(batch)
    drifts = span_drift.span_drifts(batch, thresholds.drift_threshold)
    problems: List[str] = []
    for figures in spans:
        figures["drift"] = drifts.get(figures["span"])
        problems += checks_lib.problems_of(figures, thresholds)
    return {"thresholds": {**vars(thresholds), "min_dominance_count": checks_lib.MIN_DOMINANCE_COUNT},
            "spans": spans, "problems": problems}


def failure_message(problems: List[str]) -> str:
    return ("SpanValidator found spans that cannot be right, so the run stops before Transform and nothing is "
            "pushed:\n  " + "\n  ".join(problems) + "\n(remove the span with `digits data drop SPAN` (a span a run "
            "used needs --force), or if the data is right, raise the limit: --max-blank-share, "
            "--max-saturated-share, --max-label-share, --drift-threshold / --drift-stops-run)")


@tfx.dsl.components.component
def SpanValidator(
    examples: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.Examples],
    span_checks: tfx.dsl.components.OutputArtifact[SpanChecks],
    max_blank_share: tfx.dsl.components.Parameter[float] = 0.01,
    max_saturated_share: tfx.dsl.components.Parameter[float] = 0.01,
    max_label_share: tfx.dsl.components.Parameter[float] = 0.6,
    drift_threshold: tfx.dsl.components.Parameter[float] = 0.3,
    drift_stops_run: tfx.dsl.components.Parameter[int] = 0,
    code_version: tfx.dsl.components.Parameter[str] = "",
) -> None:
    """Reads every split of ``examples``, groups by span, writes span_checks.json, fails on a problem.
    ``drift_stops_run`` is 0/1 (Kubeflow's v2 compiler takes no bool parameter); ``code_version``
    only keys the cache (pipeline.code_version)."""
    thresholds = checks_lib.Thresholds(max_blank_share, max_saturated_share, max_label_share, drift_threshold,
                                        bool(drift_stops_run))
    splits = artifact_utils.decode_split_names(examples.split_names)
    batch = checks_lib.concatenate(checks_lib.read_examples(examples.uri, splits))
    checks = check_spans(batch, thresholds)
    write_json(span_checks.uri, CHECKS_FILE, checks)
    if checks["problems"]:
        raise DataAnomaliesError(failure_message(checks["problems"]))


def span_checks_html(checks: Dict) -> str:
    """A small HTML table of span_checks.json for the run report: one row per span."""
    if not checks or not checks.get("spans"):
        return ""
    head = ["span", "source", "digits", "blank", "saturated", "top label", "mean ink", "label drift (L∞)"]
    rows = []
    for s in checks["spans"]:
        labelled = sum(s["per_label"].values())
        top, n = max(s["per_label"].items(), key=lambda item: (item[1], -int(item[0])))
        drift = s.get("drift")
        drift_text = "—" if not drift else (f"{drift['label_linf']:.2f} (threshold {drift['threshold']:.2f}"
                                            f"{', exceeded' if drift['exceeds'] else ''})")
        cells = [s["span"], s["source"], f"{s['count']:,}", s["blank"], s["saturated"],
                 f"{top} ({checks_lib.percent(n / labelled) if labelled else '—'})", f"{s['mean_ink']:.3f}",
                 drift_text]
        rows.append("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in cells) + "</tr>")
    problems = "".join(f"<li>{html.escape(p)}</li>" for p in checks.get("problems", []))
    return ("<table class='span-checks'><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr>"
            + "".join(rows) + "</table>" + (f"<ul class='span-problems'>{problems}</ul>" if problems else ""))
