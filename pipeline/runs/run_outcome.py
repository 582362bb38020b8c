"""What one scheduled run did, read back from what ``digits run`` leaves (pipeline/runs/outcomes.py): its
exit status and ``<pipeline_root>/runs/<run id>/summary.json``."""
from __future__ import annotations

import contextlib
import dataclasses
import glob
import json
import os
import signal
from typing import Dict, Optional, Sequence

from pipeline.runs import outcomes


@dataclasses.dataclass(frozen=True)
class RunOutcome:
    outcome: str  # one of outcomes.EXIT_CODES, or "error" when the run left no summary
    run_id: Optional[str]
    exit_code: Optional[int]  # the summary's; None without one
    version: Optional[int] = None
    accuracy: Optional[float] = None
    note: str = ""  # why there is no summary: "killed by SIGKILL", "no summary.json"

    def describe(self) -> str:
        """"run 2026-12-07T03:00:04.1 pushed version 17, accuracy 0.9712" and the like."""
        words = [f"run {self.run_id}" if self.run_id else "run", self.outcome]
        if self.outcome in ("pushed", "already_served") and self.version is not None:
            words.append(f"version {self.version}")
        text = " ".join(words)
        if self.accuracy is not None:
            text += f", accuracy {self.accuracy:.4f}"
        return text + (f" ({self.note})" if self.note else "")


def spans_used(sealed: Sequence[int], window: int) -> str:
    """"MNIST + spans 1-3" / "MNIST + spans 2, 5" / "MNIST only": what a run with ``span_window`` reads."""
    numbers = sorted(sealed)[-window:] if window else sorted(sealed)
    if not numbers:
        return "MNIST only"
    if numbers == list(range(numbers[0], numbers[-1] + 1)):
        shown = str(numbers[0]) if len(numbers) == 1 else f"{numbers[0]}-{numbers[-1]}"
    else:
        shown = ", ".join(map(str, numbers))
    return f"MNIST + span{'s' if len(numbers) > 1 else ''} {shown}"


def summaries(pipeline_root: str) -> Dict[str, int]:
    """Every run's summary.json with its modification time: taken before a run, so that the one it
    writes is told from earlier ones."""
    found = {}
    for path in glob.glob(os.path.join(pipeline_root, "runs", "*", outcomes.SUMMARY_NAME)):
        with contextlib.suppress(OSError):
            found[path] = os.stat(path).st_mtime_ns
    return found


def newest_summary(pipeline_root: str, before: Dict[str, int]) -> Optional[dict]:
    """The newest summary.json that is not in ``before`` (from summaries()) as it was then, or None."""
    now = summaries(pipeline_root)
    paths = [path for path, mtime in now.items() if before.get(path) != mtime]
    for path in sorted(paths, key=lambda p: now.get(p, 0), reverse=True):
        try:
            with open(path) as f:
                return json.load(f)
        except (OSError, ValueError):
            continue
    return None


def read(pipeline_root: str, before: Dict[str, int], returncode: int) -> RunOutcome:
    """The outcome of the run that ended with ``returncode``; ``before``: summaries() as the run started."""
    record = newest_summary(pipeline_root, before)
    if record is None or record.get("outcome") not in outcomes.EXIT_CODES:
        if returncode < 0:
            note = f"ended by {signal.Signals(-returncode).name}"
        elif returncode == outcomes.EXIT_CODES["error"] and record is None:
            note = "no summary.json: it failed before one was written"
        else:
            note = "no summary.json"
        return RunOutcome("error", None, None, note=note)
    version = record.get("version")
    return RunOutcome(record["outcome"], record.get("run_id"), record.get("exit_code"),
                      int(version) if version is not None else None, record.get("test_accuracy"),
                      note=f"ended by {signal.Signals(-returncode).name}" if returncode < 0 else "")
