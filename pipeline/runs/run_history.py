"""``digits runs``: every pipeline run recorded in ML Metadata, one line each (oldest first).

    digits runs                      # run id, start, duration, spans, examples, accuracy, blessed, pushed
    digits runs --json               # the same as a JSON list, for scripts
    digits runs --pipeline-root /srv/pipeline

Reads <pipeline_root>/metadata.sqlite read-only; each run's figures come from run_summary.summarize
(its RunReport's summary.json and the Pusher's properties) and the spans from the Examples artifact's
``digits_spans`` (absent for runs made before spans existed: MNIST only).
"""
from __future__ import annotations

import datetime
import json
import os
import sys
from typing import Dict, List, Optional, Sequence

from pipeline import config as config_lib
from pipeline.config import PipelineConfig

COLUMNS = ("run id", "started (UTC)", "duration", "spans", "examples train/eval/test", "accuracy",
           "by source", "blessed", "pushed")


def _spans(store, executions) -> Optional[List[dict]]:
    """The spans the run's Examples recorded; None when no Examples artifact says (MNIST only)."""
    from components.data.span_usage import SPANS_PROPERTY
    from pipeline.runs.run_summary import _output_artifacts

    for artifacts in _output_artifacts(store, [e.id for e in executions]).values():
        for artifact in artifacts:
            if SPANS_PROPERTY in artifact.custom_properties:
                try:
                    spans = json.loads(artifact.custom_properties[SPANS_PROPERTY].string_value or "[]")
                except ValueError:
                    return None
                return [s if isinstance(s, dict) else {"span": int(s)} for s in spans]
    return None


def _last_update(execution) -> int:
    """When the execution last changed; for one a later run marked FAILED after a crash
    (pipeline/runs/crash_cleanup.py), when its own run last changed it."""
    from pipeline.runs.crash_cleanup import LAST_SEEN_PROPERTY

    if LAST_SEEN_PROPERTY in execution.custom_properties:
        return execution.custom_properties[LAST_SEEN_PROPERTY].int_value
    return execution.last_update_time_since_epoch


def by_source(verdict: Dict) -> Dict[str, float]:
    """Accuracy per data source from the RunReport's summary.json (``sources``: {source: {"accuracy",
    "baseline_accuracy", "example_count"}}, components/evaluation/source_slices.py); {} for runs made before it."""
    sources = verdict.get("sources")
    if not isinstance(sources, dict):
        return {}
    return {str(source): float(figures["accuracy"]) for source, figures in sources.items()
            if isinstance(figures, dict) and isinstance(figures.get("accuracy"), (int, float))}


def history(config: PipelineConfig) -> List[Dict]:
    """One dict per run of ``config.pipeline_name``, oldest first; [] when no run happened yet."""
    if not os.path.exists(config.metadata_path):
        return []
    from components.data.span_usage import open_store
    from pipeline.runs import run_summary

    store = open_store(config.metadata_path)
    pipelines = [c for c in store.get_contexts_by_type("pipeline") if c.name == config.pipeline_name]
    ours = {e.id for c in pipelines for e in store.get_executions_by_context(c.id)}
    runs = []
    for context in sorted(store.get_contexts_by_type("pipeline_run"), key=lambda c: c.create_time_since_epoch):
        executions = [e for e in store.get_executions_by_context(context.id) if e.id in ours]
        if not executions:
            continue
        summary = run_summary.summarize(config, store, context)
        verdict = summary.verdict or {}
        start = min(e.create_time_since_epoch for e in executions)
        end = max(_last_update(e) for e in executions)
        runs.append({
            "run_id": context.name,
            "started": datetime.datetime.fromtimestamp(start / 1000, datetime.timezone.utc)
            .isoformat(timespec="seconds").replace("+00:00", "Z"),
            "seconds": round((end - start) / 1000.0, 1),
            "spans": _spans(store, executions),
            "split_sizes": verdict.get("split_sizes"),
            "test_examples": verdict.get("example_count"),
            "accuracy": verdict.get("accuracy"),
            "accuracy_by_source": by_source(verdict),
            "sources": verdict.get("sources"),  # with each source's baseline accuracy and test examples
            "blessed": bool(verdict["blessed"]) if "blessed" in verdict else None,
            "pushed": summary.pushed,
            "pushed_version": int(summary.pushed_version) if summary.pushed_version else None,
            "pushed_new": summary.pushed_new,
            "failed": [c.node_id for c in summary.components if c.state == "FAILED"],
        })
    return runs


def _spans_text(spans: Optional[List[dict]]) -> str:
    numbers = sorted(int(s["span"]) for s in spans or [] if int(s.get("span", 0)) > 0)
    if not numbers:
        return "MNIST only"
    from pipeline.runs.run_outcome import spans_used

    return spans_used(numbers, 0)


def _row(run: Dict) -> List[str]:
    sizes = run["split_sizes"] or {}
    examples = "/".join(f"{sizes[s]:,}" if s in sizes else "-" for s in ("train", "eval", "test")) if sizes \
        else (f"test {run['test_examples']:,}" if run["test_examples"] else "-")
    accuracy = f"{run['accuracy']:.4f}" if run["accuracy"] is not None else "-"
    sources = " ".join(f"{k} {v:.4f}" for k, v in sorted(run["accuracy_by_source"].items())) or "-"
    blessed = {True: "yes", False: "no", None: "-"}[run["blessed"]]
    if run["failed"]:
        blessed = f"- (failed: {', '.join(run['failed'])})"
    if run["pushed"] and run["pushed_new"]:
        pushed = f"version {run['pushed_version']}"
    elif run["pushed"]:
        pushed = f"no (version {run['pushed_version']} already serves it)"
    else:
        pushed = "no"
    minutes, seconds = divmod(int(round(run["seconds"])), 60)
    return [run["run_id"], run["started"].replace("T", " ").rstrip("Z"), f"{minutes}m{seconds:02d}s",
            _spans_text(run["spans"]), examples, accuracy, sources, blessed, pushed]


def table(runs: Sequence[Dict]) -> str:
    """A plain table, columns aligned."""
    rows = [list(COLUMNS)] + [_row(run) for run in runs]
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows)


def main(argv: Optional[Sequence[str]] = None, prog: str = "digits runs") -> int:
    config, args = config_lib.command_line(
        prog, "List the pipeline runs recorded in ML Metadata (<pipeline_root>/metadata.sqlite).", argv,
        lambda parser: parser.add_argument("--json", action="store_true", help="Print a JSON list instead of a table."))
    runs = history(config)
    if args.json:
        print(json.dumps(runs, indent=2))
    elif not runs:
        print(f"no pipeline run of {config.pipeline_name!r} in {config.metadata_path} yet; start one with digits run")
    else:
        print(table(runs))
    return 0


if __name__ == "__main__":
    sys.exit(main(prog="python -m pipeline.runs.run_history"))
