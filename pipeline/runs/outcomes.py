"""The outcome of one ``digits run``: one table, one exit code each, and ``summary.json`` for scripts.

| outcome                      | exit | meaning                                                          |
|------------------------------|------|------------------------------------------------------------------|
| ``pushed``                   | 0    | a new version is in the serving directory                        |
| ``already_served``           | 0    | blessed, but the newest served version is this same model        |
| ``not_blessed``              | 0    | the Evaluator's gate held the model back; serving is unchanged   |
| ``not_servable``             | 4    | blessed, but the InfraValidator's model server refused it or     |
|                              |      | answered otherwise than the model does; serving is unchanged     |
| ``stopped_by_data_validation``| 3   | the data broke the schema; nothing trained; fix the data         |
| ``error``                    | 1    | anything else (a retry may help); 2 is a bad command line        |
|                              |      | (also a run refused because another holds the run lock,          |
|                              |      | pipeline/runs/run_lock.py: one line on stderr, no summary.json)       |

A quiet night (nothing new to serve, or a model no better) is a successful run: exit 0, so a
CronJob does not count it as a failure nor retry it; ``summary.json``'s ``outcome`` tells them
apart. Data that breaks the schema will break the next attempt too: its own code, which the
CronJob's podFailurePolicy turns into a failed Job without retries (k8s/components/scheduled-runs).
A blessed model that does not serve (InfraValidator, components/infra/infra_validator.py) is a bug in the
export or the server, not noise: exit 4 fails the Job visibly; a retry re-runs from the cache and
reaches the same verdict in seconds. ``summary.json``'s ``infra_validation`` holds the reason.
"""
from __future__ import annotations

import dataclasses
import datetime
import json
import os
from typing import Optional

EXIT_CODES = {"pushed": 0, "already_served": 0, "not_blessed": 0, "not_servable": 4, "stopped_by_data_validation": 3,
              "error": 1}
SUMMARY_NAME = "summary.json"
REPORT_NAME = "report.html"


def of_summary(summary) -> str:
    """The outcome of a run that completed, from its RunSummary."""
    if summary.pushed and summary.pushed_new:
        return "pushed"
    if summary.pushed:
        return "already_served"
    infra = getattr(summary, "infra", None)
    if (summary.verdict or {}).get("blessed") and infra is not None and not infra["blessed"]:
        return "not_servable"  # a model that does not serve is a bug to fix, not a quiet night
    return "not_blessed"


def summary_path(pipeline_root: str, run_id: str) -> str:
    return os.path.join(pipeline_root, "runs", run_id, SUMMARY_NAME)


def report_path(pipeline_root: str, run_id: str) -> str:
    return os.path.join(pipeline_root, "runs", run_id, REPORT_NAME)


def complete_report(pipeline_root: str, summary):
    """Copies the RunReport's page to ``<pipeline_root>/runs/<run id>/report.html`` with the run id and
    the component times, which the RunReport could not know, filled in; returns the summary pointing
    there. A summary without a report, or a report without the section (an older cached one), is
    returned unchanged."""
    if not summary.report_path or not os.path.exists(summary.report_path):
        return summary
    from components.report import report_html  # matplotlib: only once there is a report to complete

    with open(summary.report_path, encoding="utf-8") as f:
        page = f.read()
    try:
        page = report_html.with_component_times(page, summary.components, run_id=summary.run_id)
    except ValueError:
        return summary
    path = report_path(pipeline_root, summary.run_id)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        f.write(page)
    os.replace(path + ".tmp", path)
    return dataclasses.replace(summary, report_path=path, report_artifact_path=summary.report_path)


def write(pipeline_root: str, run_id: str, outcome: str, summary=None, message: Optional[str] = None,
          cleaned: Optional[dict] = None) -> str:
    """Writes ``<pipeline_root>/runs/<run id>/summary.json`` (by a rename: a reader never sees half of
    it) and returns its path. ``cleaned``: what the run cleaned after crashed ones (crash_cleanup)."""
    record = {"run_id": run_id, "outcome": outcome, "exit_code": EXIT_CODES[outcome],
              "finished": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    if summary is not None:
        verdict = summary.verdict or {}
        record.update({
            "test_accuracy": verdict.get("accuracy"), "test_examples": verdict.get("example_count"),
            "blessed": bool(verdict.get("blessed")), "reasons": verdict.get("reasons") or [],
            "baseline_accuracy": verdict.get("baseline_accuracy"),
            "version": int(summary.pushed_version) if summary.pushed_version else None,
            "serving_dir": summary.config.model_serving_dir, "report": summary.report_path,
            "split_sizes": verdict.get("split_sizes"), "train_examples": verdict.get("train_examples"),
            # each source's test slice against the baseline, and the paired test per gated slice
            "sources": verdict.get("sources"), "significance": verdict.get("significance"),
            "hparams": verdict.get("hparams"),  # {field: {value, source}}: default, tuned, config or a flag
            "components": {c.node_id: {"state": c.state, "seconds": round(c.seconds, 1)}
                           for c in summary.components}})
        if getattr(summary, "infra", None) is not None:
            record["infra_validation"] = summary.infra
    if message:
        record["message"] = message
    if cleaned is not None:
        record["cleaned"] = cleaned
    path = summary_path(pipeline_root, run_id)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path + ".tmp", "w") as f:
        json.dump(record, f, indent=2)
    os.replace(path + ".tmp", path)
    return path
