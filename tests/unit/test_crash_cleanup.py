"""Crash clean-up on a real ML Metadata store and a real serving directory: unfinished executions of
this pipeline are marked FAILED (others untouched), and staging copies go only when their pusher is
provably dead. A real `digits run` killed with SIGKILL is tests/e2e/test_crash_cleanup.py."""
import json
import os
import socket
import subprocess
import sys
import time

import pytest
from ml_metadata import metadata_store
from ml_metadata.proto import metadata_store_pb2

from components import pusher
from pipeline import config as config_lib
from pipeline.runs import crash_cleanup, outcomes, run_lock

State = metadata_store_pb2.Execution


def _store(path):
    connection = metadata_store_pb2.ConnectionConfig()
    connection.sqlite.filename_uri = str(path)
    connection.sqlite.connection_mode = metadata_store_pb2.SqliteMetadataSourceConfig.READWRITE_OPENCREATE
    return metadata_store.MetadataStore(connection)


class Metadata:
    """Contexts and executions laid out as TFX's LocalDagRunner records them."""

    def __init__(self, path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        self.store = _store(path)
        self.types = {name: self.store.put_context_type(metadata_store_pb2.ContextType(name=name))
                      for name in ("pipeline", "pipeline_run", "node")}
        self.contexts = {}

    def context(self, type_name, name):
        if (type_name, name) not in self.contexts:
            [self.contexts[type_name, name]] = self.store.put_contexts(
                [metadata_store_pb2.Context(type_id=self.types[type_name], name=name)])
        return self.contexts[type_name, name]

    def execution(self, pipeline, run_id, node, state):
        type_id = self.store.put_execution_type(metadata_store_pb2.ExecutionType(name=f"tfx.{node}"))
        contexts = [metadata_store_pb2.Context(id=self.context(*key), type_id=self.types[key[0]], name=key[1])
                    for key in (("pipeline", pipeline), ("pipeline_run", run_id), ("node", f"{pipeline}.{node}"))]
        execution_id, _, _ = self.store.put_execution(
            metadata_store_pb2.Execution(type_id=type_id, last_known_state=state), [], contexts)
        return execution_id

    def state(self, execution_id):
        [execution] = self.store.get_executions_by_id([execution_id])
        return execution


def test_unfinished_executions_of_this_pipeline_are_marked_failed_once(tmp_path):
    path = tmp_path / "metadata.sqlite"
    metadata = Metadata(path)
    done = metadata.execution("digits", "run-1", "ExampleGen", State.COMPLETE)
    trainer = metadata.execution("digits", "run-1", "Trainer", State.RUNNING)
    evaluator = metadata.execution("digits", "run-2", "Evaluator", State.NEW)
    failed = metadata.execution("digits", "run-2", "Transform", State.FAILED)
    other = metadata.execution("another-pipeline", "run-3", "Trainer", State.RUNNING)
    stale = run_lock.Holder(4242, "somewhere", "2026-12-07T02:00:00Z", "digits run --epochs 2")

    marked = crash_cleanup.mark_dead_executions(str(path), "digits", stale)
    assert marked == [{"id": trainer, "node": "Trainer", "run_id": "run-1", "was": "RUNNING"},
                      {"id": evaluator, "node": "Evaluator", "run_id": "run-2", "was": "NEW"}]
    for execution_id, was in ((trainer, "RUNNING"), (evaluator, "NEW")):
        execution = metadata.state(execution_id)
        seen = execution.custom_properties[crash_cleanup.LAST_SEEN_PROPERTY].int_value
        assert 0 < seen <= execution.last_update_time_since_epoch  # its run's last update, for `digits runs`
        assert execution.last_known_state == State.FAILED
        note = execution.custom_properties[crash_cleanup.CLEANED_PROPERTY].string_value
        assert f"found {was} by digits run pid {os.getpid()} on {socket.gethostname()}" in note
        assert "the run that started it died (pid 4242 on somewhere, started 2026-12-07T02:00:00Z" in note
        assert "never finished" in execution.custom_properties[crash_cleanup.EXECUTION_RESULT].string_value
    assert metadata.state(done).last_known_state == State.COMPLETE
    assert metadata.state(failed).last_known_state == State.FAILED
    assert crash_cleanup.CLEANED_PROPERTY not in metadata.state(failed).custom_properties
    assert metadata.state(other).last_known_state == State.RUNNING  # another pipeline's: not ours to judge
    assert crash_cleanup.mark_dead_executions(str(path), "digits", stale) == []  # nothing left to mark

    lines = crash_cleanup.Cleaned(stale=stale, executions=marked).lines()
    assert lines == ["digits run: cleaned after a crashed run: 2 executions marked FAILED "
                     "(Trainer of run run-1; Evaluator of run run-2)"]


def test_without_metadata_nothing_is_created(tmp_path):
    path = tmp_path / "root" / "metadata.sqlite"
    assert crash_cleanup.mark_dead_executions(str(path), "digits") == []
    assert not path.exists()


def _dead_pid():
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def _staging(model_dir, name, owner=None, files=True):
    if files:
        os.makedirs(model_dir / name / "variables")
        (model_dir / name / "saved_model.pb").write_bytes(b"half")
    if owner is not None:
        (model_dir / (name + pusher.OWNER_SUFFIX)).write_text(json.dumps(owner))
    return str(model_dir / name)


def _tree(root):
    return {os.path.relpath(os.path.join(d, n), root): open(os.path.join(d, n), "rb").read()
            for d, _, names in os.walk(root) for n in names}


@pytest.fixture
def live_process():
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    yield child.pid
    child.kill()
    child.wait()


def test_only_staging_copies_of_provably_dead_pushers_are_removed(tmp_path, live_process):
    root, model_dir = tmp_path / "root", tmp_path / "serving" / "mnist"
    here, dead = pusher.host_name(), _dead_pid()
    os.makedirs(model_dir / "7" / "variables")
    (model_dir / "7" / "saved_model.pb").write_bytes(b"served")
    ours = {"pushed_model": str(root / "Pusher" / "pushed_model" / "12")}
    theirs = {"pushed_model": str(tmp_path / "other-root" / "Pusher" / "pushed_model" / "3")}
    gone = _staging(model_dir, f".staging-100-{dead}-{here}", {"pid": dead, "host": here, **theirs})
    live = _staging(model_dir, f".staging-101-{live_process}-{here}", {"pid": live_process, "host": here, **theirs})
    our_root_elsewhere = _staging(model_dir, ".staging-102-7-pod-a", {"pid": 7, "host": "pod-a", **ours})
    foreign = _staging(model_dir, ".staging-103-8-pod-b", {"pid": 8, "host": "pod-b", **theirs})
    unowned = _staging(model_dir, ".staging-104")  # an older pusher's name: no owner in it
    orphan = _staging(model_dir, f".staging-105-{dead}-{here}", {"pid": dead, "host": here}, files=False)
    empty_record = _staging(model_dir, f".staging-106-{dead}-{here}", files=False)  # killed while writing it
    (model_dir / (os.path.basename(empty_record) + pusher.OWNER_SUFFIX)).write_bytes(b"")
    served = _tree(model_dir / "7")

    removed, kept = crash_cleanup.clean_staging(str(model_dir), str(root))
    assert removed == [gone, our_root_elsewhere, orphan + pusher.OWNER_SUFFIX, empty_record + pusher.OWNER_SUFFIX]
    assert [k["path"] for k in kept] == [live, foreign, unowned]
    assert kept[0]["reason"] == f"its pusher (pid {live_process} on {here}) is alive"
    assert kept[1]["reason"] == "its pusher (pid 8 on pod-b) is on another machine and may be alive"
    assert kept[2]["reason"].startswith("its name does not say who made it")
    assert sorted(os.listdir(model_dir)) == sorted([
        "7", os.path.basename(live), os.path.basename(live) + pusher.OWNER_SUFFIX,
        os.path.basename(foreign), os.path.basename(foreign) + pusher.OWNER_SUFFIX, os.path.basename(unowned)])
    assert _tree(model_dir / "7") == served
    assert crash_cleanup.clean_staging(str(model_dir), str(root))[0] == []


def test_a_killed_but_unreaped_pusher_counts_as_dead(tmp_path):
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        child.kill()
        stat = f"/proc/{child.pid}/stat"
        while open(stat).read().rsplit(")", 1)[1].split()[0] != "Z":  # the kernel makes it a zombie at once
            pass
        assert crash_cleanup.owner_verdict({"pid": child.pid, "host": pusher.host_name()}, str(tmp_path)) == \
            (True, f"its pusher (pid {child.pid} on {pusher.host_name()}) is gone")
    finally:
        child.wait()


def test_clean_reports_both_parts_and_summary_json_records_them(tmp_path):
    config = config_lib.PipelineConfig(pipeline_root=str(tmp_path / "root"), serving_dir=str(tmp_path / "serving"))
    Metadata(tmp_path / "root" / "metadata.sqlite").execution("digits", "2026-12-07T02:10:00.5", "Trainer",
                                                              State.RUNNING)
    dead = _dead_pid()
    staging = _staging(tmp_path / "serving" / "mnist", f".staging-1800000000-{dead}-{pusher.host_name()}",
                       {"pid": dead, "host": pusher.host_name()})
    cleaned = crash_cleanup.clean(config)
    assert cleaned.lines() == [f"digits run: cleaned after a crashed run: 1 execution marked FAILED (Trainer of run "
                               f"2026-12-07T02:10:00.5); removed {staging}"]
    path = outcomes.write(config.pipeline_root, "run-x", "error", message="stopped", cleaned=cleaned.record())
    with open(path) as f:
        record = json.load(f)["cleaned"]
    assert record["removed"] == [staging] and record["kept"] == [] and record["stale_lock"] is None
    assert [(e["node"], e["was"]) for e in record["executions"]] == [("Trainer", "RUNNING")]
    assert crash_cleanup.clean(config).lines() == []  # a second run finds nothing


def test_an_unowned_staging_copy_goes_once_it_has_been_idle_far_longer_than_a_push(tmp_path):
    """The issue's leftover: an empty ``.staging-<n>`` from a digits that recorded no owner."""
    root, model_dir = tmp_path / "root", tmp_path / "serving" / "mnist"
    os.makedirs(model_dir)
    fresh, old = _staging(model_dir, ".staging-200"), _staging(model_dir, ".staging-201")
    idle = time.time() - crash_cleanup.UNOWNED_STALE_SECONDS - 60
    os.utime(old, (idle, idle))
    removed, kept = crash_cleanup.clean_staging(str(model_dir), str(root))
    assert removed == [old] and [k["path"] for k in kept] == [fresh]
    assert "changed less than 10 minutes ago" in kept[0]["reason"]
    assert sorted(os.listdir(model_dir)) == [".staging-200"]
