"""A real `digits run` killed with SIGKILL while the Trainer runs, then the next one killed mid-push
(its Pusher held between the staging copy and the rename, see HELD_PUSH):
each following run marks the dead run's executions FAILED, removes the dead push's staging copy,
says so in one line and in summary.json, and completes from the cache. A live run is never cleaned:
a second `digits run` beside it is refused and touches nothing, and a live foreign pusher's staging
copy stays. Three real runs on small data (two of them cut short)."""
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest
from ml_metadata import metadata_store
from ml_metadata.proto import metadata_store_pb2

from components import pusher
from pipeline import config as config_lib
from pipeline.runs import crash_cleanup, run_history, run_lock
from tests.conftest import SMALL_RUN

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# `digits run` whose Pusher holds still once its staging copy is complete (before the rename), so that a
# SIGKILL lands mid-push every time: a real push takes a millisecond or two, too short to catch by
# watching the directory. argv: a file to create when it holds, then `run` and its flags.
HELD_PUSH = """
import os, sys, time
os.environ["TF_USE_LEGACY_KERAS"] = "1"
from components import pusher
from pipeline import cli
copy_dir = pusher.io_utils.copy_dir
def copy_and_hold(*args, **kwargs):
    copy_dir(*args, **kwargs)
    destination = kwargs.get("dst", args[1] if len(args) > 1 else "")
    if os.path.basename(destination.rstrip("/")).startswith(pusher.STAGING_PREFIX):
        open(sys.argv[1], "w").close()
        time.sleep(3600)
pusher.io_utils.copy_dir = copy_and_hold
sys.exit(cli.main(sys.argv[2:]))
"""
STATE = {value: name for name, value in metadata_store_pb2.Execution.State.items()}


def wait_for(condition, timeout, what):
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.1)
    return value


class Run:
    """`digits run` as its own process, its console lines collected as they come."""

    def __init__(self, root, serving, data, hold_push=None):
        flags = [f"--{name.replace('_', '-')}={value}" for name, value in SMALL_RUN.items()]
        env = {k: v for k, v in os.environ.items() if not k.startswith("DIGITS_")}
        start = [sys.executable, "-c", HELD_PUSH, hold_push] if hold_push else [sys.executable, "-m", "pipeline.cli"]
        self.process = subprocess.Popen(
            [*start, "run", f"--pipeline-root={root}", f"--serving-dir={serving}", f"--data-root={data}", *flags],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.pid = self.process.pid
        self.lines = []
        self._reader = threading.Thread(target=lambda: self.lines.extend(line.rstrip("\n") for line in
                                                                         self.process.stdout), daemon=True)
        self._reader.start()

    def kill(self):
        self.process.send_signal(signal.SIGKILL)
        return self.finish(60)

    def finish(self, timeout):
        code = self.process.wait(timeout=timeout)
        self._reader.join(timeout=30)
        return code

    def output(self):
        return "\n".join(self.lines)


def executions(root):
    """[(node, run id, state, cleaned note)] of every execution in the run's ML Metadata (read-only)."""
    connection = metadata_store_pb2.ConnectionConfig()
    connection.sqlite.filename_uri = os.path.join(root, "metadata.sqlite")
    connection.sqlite.connection_mode = metadata_store_pb2.SqliteMetadataSourceConfig.READONLY
    if not os.path.exists(connection.sqlite.filename_uri):
        return []
    store = metadata_store.MetadataStore(connection)
    types = {t.id: t.name for t in store.get_context_types()}
    found = []
    for execution in store.get_executions():
        names = {types[c.type_id]: c.name for c in store.get_contexts_by_execution(execution.id)}
        note = execution.custom_properties.get(crash_cleanup.CLEANED_PROPERTY)
        found.append((names.get("node", "?").split(".", 1)[-1], names.get("pipeline_run"),
                      STATE[execution.last_known_state], note.string_value if note else None))
    return found


def readable(read, *args):
    """read(*args), or [] while the run is still creating its ML Metadata database."""
    try:
        return read(*args)
    except RuntimeError:
        return []


def tree(directory):
    return {os.path.relpath(os.path.join(d, n), directory): open(os.path.join(d, n), "rb").read()
            for d, _, names in os.walk(directory) for n in names}


@pytest.fixture
def live_foreign_pusher(tmp_path):
    """A live process that owns a staging copy in the serving directory, for another pipeline root."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)"])
    yield child.pid
    child.kill()
    child.wait()


def test_killed_runs_are_cleaned_by_the_next_run_and_a_live_one_never(tmp_path, live_foreign_pusher):
    root, serving, data = str(tmp_path / "root"), str(tmp_path / "serving"), str(tmp_path / "data")
    model_dir = os.path.join(serving, "mnist")

    # 1. Killed while the Trainer runs; meanwhile a second run is refused and touches nothing.
    first_started = time.time()
    first = Run(root, serving, data)
    try:
        wait_for(lambda: ("Trainer", "RUNNING") in [(n, s) for n, _, s, _ in readable(executions, root)], 900,
                 "a RUNNING Trainer execution in ML Metadata")
        os.makedirs(model_dir)
        foreign = os.path.join(model_dir, f".staging-1700000000-{live_foreign_pusher}-{pusher.host_name()}")
        os.makedirs(foreign)
        with open(os.path.join(foreign, "saved_model.pb"), "wb") as f:
            f.write(b"being copied")
        with open(foreign + pusher.OWNER_SUFFIX, "w") as f:
            json.dump({"pid": live_foreign_pusher, "host": pusher.host_name(),
                       "pushed_model": str(tmp_path / "another-root" / "Pusher" / "pushed_model" / "4")}, f)
        second = subprocess.run([sys.executable, "-m", "pipeline.cli", "run", f"--pipeline-root={root}",
                                 f"--serving-dir={serving}", f"--data-root={data}"], cwd=ROOT, capture_output=True,
                                text=True, timeout=300)
        assert second.returncode == 1, second.stderr
        assert f"refused: another pipeline run is in progress (pid {first.pid} on " in second.stderr
        assert first.process.poll() is None
        # nothing of the live run was touched: no execution marked, the staging copy in place
        assert not [e for e in executions(root) if e[2] == "FAILED" or e[3]], executions(root)
        assert os.path.exists(foreign + pusher.OWNER_SUFFIX)
    finally:
        first.kill()
        first_killed = time.time()
    [(dead_node, dead_run)] = [(node, run) for node, run, state, _ in executions(root) if state == "RUNNING"]
    assert run_lock.RunLock(root).stale().pid == first.pid

    # 2. The next run cleans that, then is killed mid-push (staging copy made, not yet renamed).
    held = str(tmp_path / "push-held")
    second = Run(root, serving, data, hold_push=held)
    try:
        cleaned = wait_for(lambda: [line for line in second.lines if "cleaned after a crashed run" in line], 300,
                           "the clean-up line")
        assert cleaned == [f"digits run: cleaned after a crashed run: 1 execution marked FAILED "
                           f"({dead_node} of run {dead_run})"], second.output()
        assert (f"digits run: kept {foreign}: its pusher (pid {live_foreign_pusher} on {pusher.host_name()}) "
                "is alive") in second.lines
        wait_for(lambda: os.path.exists(held) or second.process.poll() is not None, 900,
                 "the Pusher's staging copy")
        assert second.process.poll() is None, second.output()
    finally:
        second.kill()
    [(_, _, _, note)] = [e for e in executions(root) if e[:2] == (dead_node, dead_run)]
    assert f"the run that started it died (pid {first.pid} on {socket.gethostname()}" in note
    left = sorted(name for name in os.listdir(model_dir) if f"-{second.pid}-" in name)
    staging = left[0] if left else "none"
    assert left == [staging, staging + pusher.OWNER_SUFFIX] and staging.startswith(pusher.STAGING_PREFIX) and \
        staging.endswith(f"-{second.pid}-{pusher.host_name()}"), left
    staging = os.path.join(model_dir, staging)
    assert "saved_model.pb" in os.listdir(staging)  # the copy was complete, the rename not done
    served = {name: tree(os.path.join(model_dir, name)) for name in os.listdir(model_dir) if name.isdigit()}
    foreign_tree = tree(foreign)

    # 3. The run after that cleans the dead push and completes from the cache.
    third = Run(root, serving, data)
    assert third.finish(1200) == 0, third.output()
    [line] = [line for line in third.lines if "cleaned after a crashed run" in line]
    assert line.startswith("digits run: cleaned after a crashed run: 1 execution marked FAILED (Pusher of run "), line
    assert line.endswith(f"removed {staging}"), line
    assert not [n for n in os.listdir(model_dir) if f"-{second.pid}" in n or f"-{third.pid}" in n]
    for name, files in served.items():  # every version that was there is byte-for-byte the same
        assert tree(os.path.join(model_dir, name)) == files
    assert tree(foreign) == foreign_tree and os.path.exists(foreign + pusher.OWNER_SUFFIX)
    new = set(os.listdir(model_dir)) - set(served) - {os.path.basename(foreign), os.path.basename(foreign) +
                                                      pusher.OWNER_SUFFIX}
    assert all(name.isdigit() for name in new) and len(served) + len(new) == 1, os.listdir(model_dir)

    assert not [e for e in executions(root) if e[2] in ("NEW", "RUNNING")]
    [summary_line] = [line for line in third.lines if line.startswith("outcome: ")]
    with open(summary_line.split("(", 1)[1].rstrip(")")) as f:
        summary = json.load(f)
    assert [(e["node"], e["was"]) for e in summary["cleaned"]["executions"]] == [("Pusher", "RUNNING")]
    assert summary["cleaned"]["stale_lock"]["pid"] == second.pid
    assert [k["path"] for k in summary["cleaned"]["kept"]] == [foreign]
    assert summary["components"]["Trainer"]["state"] == "CACHED"  # the inputs did not change: the cache is used
    assert summary["outcome"] in ("pushed", "already_served")

    runs = run_history.history(config_lib.PipelineConfig(pipeline_root=root, serving_dir=serving, data_root=data))
    assert [run["failed"] for run in runs] == [[dead_node], ["Pusher"], []]  # `digits runs` shows what died
    assert runs[0]["seconds"] <= first_killed - first_started  # its own time, not until the clean-up
