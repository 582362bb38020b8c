"""What a killed ``digits run`` leaves behind, cleaned by the next one once it holds the run lock.

A run killed with SIGKILL (or by the OOM killer, a power cut) loses nothing: the serving directory
only ever gains whole versions and ML Metadata keeps every finished execution, so the next run
reuses the cache. Two things stay, though:

* executions it had started, left NEW or RUNNING in ML Metadata for ever. Holding the run lock
  (pipeline/runs/run_lock.py) means no other run of this pipeline root is alive, so every unfinished
  execution of this pipeline is a dead run's: it is marked FAILED, with ``digits_cleaned_after_crash``
  saying when and which run died (``digits runs`` then shows "failed: Trainer").
* a ``.staging-*`` copy in the serving model directory from a push that died half-way. The serving
  directory may be shared with pushers of other pipeline roots or machines, so a staging copy is
  removed only when its owner record (components/pusher.py) proves its pusher dead: on this host with
  its pid gone, or a run of this pipeline root (whose lock this run holds). Anything else is kept
  and said.
"""
from __future__ import annotations

import dataclasses
import datetime
import json
import os
import socket
import time
from typing import Dict, List, Optional, Tuple

from pipeline.runs import run_lock

CLEANED_PROPERTY = "digits_cleaned_after_crash"  # on an execution this marked FAILED: when and why
# Its last update before it was marked (ML Metadata sets last_update_time to the marking): the run's real end.
LAST_SEEN_PROPERTY = "digits_last_update_before_cleaning"
EXECUTION_RESULT = "__execution_result__"  # TFX's message on an execution (shown by its tools)
MARKED_STATE = "FAILED"


@dataclasses.dataclass
class Cleaned:
    """What one run's clean-up did; ``lines()`` for the console, ``record()`` for summary.json."""
    stale: Optional[run_lock.Holder] = None
    executions: List[Dict] = dataclasses.field(default_factory=list)  # {"id", "node", "run_id", "was"}
    removed: List[str] = dataclasses.field(default_factory=list)
    kept: List[Dict] = dataclasses.field(default_factory=list)  # {"path", "reason"}
    errors: List[str] = dataclasses.field(default_factory=list)

    def lines(self) -> List[str]:
        lines = []
        if self.executions or self.removed:
            parts = []
            if self.executions:
                by_run: Dict[str, List[str]] = {}
                for execution in self.executions:
                    by_run.setdefault(execution["run_id"] or "?", []).append(execution["node"])
                runs = "; ".join(f"{', '.join(nodes)} of run {run_id}" for run_id, nodes in by_run.items())
                count = len(self.executions)
                parts.append(f"{count} execution{'s' if count > 1 else ''} marked {MARKED_STATE} ({runs})")
            if self.removed:
                parts.append("removed " + ", ".join(self.removed))
            lines.append("digits run: cleaned after a crashed run: " + "; ".join(parts))
        lines += [f"digits run: kept {kept['path']}: {kept['reason']}" for kept in self.kept]
        lines += [f"digits run: crash clean-up incomplete: {error}" for error in self.errors]
        return lines

    def record(self) -> Dict:
        return {"executions": self.executions, "removed": self.removed, "kept": self.kept,
                "errors": self.errors,
                "stale_lock": dataclasses.asdict(self.stale) if self.stale else None}


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def _dead_run(stale: Optional[run_lock.Holder]) -> str:
    if stale is None:
        return "the run that started it died (no run lock record was left)"
    return f"the run that started it died ({stale.describe()})"


def mark_dead_executions(metadata_path: str, pipeline_name: str,
                         stale: Optional[run_lock.Holder] = None) -> List[Dict]:
    """Marks every NEW or RUNNING execution of ``pipeline_name`` FAILED; the caller holds the run lock
    (no run of this pipeline root is alive) and has not started its own run yet. Returns them."""
    if not os.path.exists(metadata_path):
        return []
    from ml_metadata import metadata_store
    from ml_metadata.proto import metadata_store_pb2

    connection = metadata_store_pb2.ConnectionConfig()
    connection.sqlite.filename_uri = metadata_path
    connection.sqlite.connection_mode = metadata_store_pb2.SqliteMetadataSourceConfig.READWRITE
    store = metadata_store.MetadataStore(connection)
    unfinished = (metadata_store_pb2.Execution.NEW, metadata_store_pb2.Execution.RUNNING)
    executions = [e for c in store.get_contexts_by_type("pipeline") if c.name == pipeline_name
                  for e in store.get_executions_by_context(c.id) if e.last_known_state in unfinished]
    if not executions:
        return []
    type_names = {t.id: t.name for t in store.get_context_types()}
    state_names = {value: name for name, value in metadata_store_pb2.Execution.State.items()}
    note = (f"{_now()}: found {{state}} by digits run pid {os.getpid()} on {socket.gethostname()}, "
            f"which holds the run lock; {_dead_run(stale)}")
    marked = []
    for execution in sorted(executions, key=lambda e: e.id):
        names = {type_names.get(c.type_id): c.name for c in store.get_contexts_by_execution(execution.id)}
        node = (names.get("node") or execution.type or "?").split(".", 1)[-1]
        was = state_names.get(execution.last_known_state, "UNKNOWN")
        execution.custom_properties[LAST_SEEN_PROPERTY].int_value = execution.last_update_time_since_epoch
        execution.last_known_state = metadata_store_pb2.Execution.FAILED
        text = note.format(state=was)
        execution.custom_properties[CLEANED_PROPERTY].string_value = text
        execution.custom_properties[EXECUTION_RESULT].string_value = json.dumps(
            {"resultMessage": f"never finished: {text}"})
        marked.append({"id": execution.id, "node": node, "run_id": names.get("pipeline_run"), "was": was})
    store.put_executions(executions)
    return marked


def _pid_alive(pid: int) -> bool:
    """Whether a process with ``pid`` runs on this host (a zombie, killed but not yet reaped, does not)."""
    if pid <= 0:
        return True  # not a pid we can test: assume alive
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _inside(path: Optional[str], root: str) -> bool:
    if not path:
        return False
    path, root = path.rstrip("/"), root.rstrip("/")
    return path.startswith(root + "/")


# A push copies a model in well under a second: a staging copy that names no owner (made by a digits
# from before owners were recorded) and has not changed for this long belongs to no live push.
UNOWNED_STALE_SECONDS = 600


def owner_verdict(owner: Optional[Dict], pipeline_root: str, idle_seconds: float = 0.0) -> Tuple[bool, str]:
    """(dead, why) for a staging copy's owner (components.pusher.owner_of); only a provably dead owner's
    copy may go. ``idle_seconds``: how long since the copy last changed (for copies naming no owner)."""
    if owner is None:
        if idle_seconds > UNOWNED_STALE_SECONDS:
            return True, (f"it names no owner (an older digits made it) and has not changed for "
                          f"{idle_seconds / 60:.0f} minutes, far longer than a push takes")
        return False, ("its name does not say who made it (an older digits or another tool) and it changed "
                       f"less than {UNOWNED_STALE_SECONDS // 60} minutes ago; a later run removes it if it stays")
    from components.pusher import host_name

    pid, host = int(owner.get("pid") or -1), str(owner.get("host") or "?")
    who = f"pid {pid} on {host}"
    if host == host_name():
        if pid == os.getpid():
            return True, f"its pusher ({who}) had this run's pid and is gone"
        if _pid_alive(pid):
            return False, f"its pusher ({who}) is alive"
        return True, f"its pusher ({who}) is gone"
    if _inside(owner.get("pushed_model"), pipeline_root):
        return True, f"its pusher ({who}) was a run of this pipeline root, whose run lock this run holds"
    return False, f"its pusher ({who}) is on another machine and may be alive"


def _idle_seconds(path: str) -> float:
    """Seconds since ``path`` last changed (0 when that cannot be read: then it counts as fresh)."""
    from tfx.dsl.io import fileio

    try:
        return max(0.0, time.time() - fileio.stat(path).mtime_nsec / 1e9)
    except Exception:  # noqa: BLE001 - a vanished or unreadable path is not evidence of a dead push
        return 0.0


def clean_staging(model_dir: str, pipeline_root: str) -> Tuple[List[str], List[Dict]]:
    """Removes the staging copies (and owner records) of dead pushes in ``model_dir``; returns
    (removed paths, [{"path", "reason"}] kept)."""
    from tfx.dsl.io import fileio

    from components.pusher import OWNER_SUFFIX, STAGING_PREFIX, owner_of

    if not fileio.exists(model_dir):
        return [], []
    names = {name.rstrip("/") for name in fileio.listdir(model_dir) if name.startswith(STAGING_PREFIX)}
    stagings = {name[:-len(OWNER_SUFFIX)] if name.endswith(OWNER_SUFFIX) else name for name in names}
    removed, kept = [], []
    for staging in sorted(stagings):
        path, marker = os.path.join(model_dir, staging), os.path.join(model_dir, staging + OWNER_SUFFIX)
        dead, reason = owner_verdict(owner_of(staging, marker if staging + OWNER_SUFFIX in names else None),
                                     pipeline_root, _idle_seconds(path if staging in names else marker))
        if not dead:
            kept.append({"path": path if staging in names else marker, "reason": reason})
            continue
        if staging in names:
            fileio.rmtree(path)
        if staging + OWNER_SUFFIX in names:
            fileio.remove(marker)  # after the copy: a copy without its record would be kept for ever
        removed.append(path if staging in names else marker)
    return removed, kept


def clean(config, stale: Optional[run_lock.Holder] = None) -> Cleaned:
    """Both clean-ups for ``config`` (a PipelineConfig); call with the run lock held, before the run.
    A part that fails is reported, never stops the run."""
    cleaned = Cleaned(stale=stale)
    pipeline_root = os.path.abspath(config.pipeline_root)
    try:
        cleaned.executions = mark_dead_executions(os.path.join(pipeline_root, "metadata.sqlite"),
                                                  config.pipeline_name, stale)
    except Exception as error:  # noqa: BLE001 - the run itself may still work
        cleaned.errors.append(f"ML Metadata: {type(error).__name__}: {error}")
    try:
        model_dir = config.model_serving_dir
        if "://" not in model_dir:
            model_dir = os.path.abspath(model_dir)
        cleaned.removed, cleaned.kept = clean_staging(model_dir, pipeline_root)
    except Exception as error:  # noqa: BLE001
        cleaned.errors.append(f"staging copies: {type(error).__name__}: {error}")
    return cleaned
