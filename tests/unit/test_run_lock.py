"""The run lock (pipeline/runs/run_lock.py): one pipeline run per pipeline root, a record naming the holder,
and no way for a dead run to hold it forever."""
import os
import signal
import subprocess
import sys
import time

import pytest

from pipeline.runs import run_lock

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# A run that takes the lock, says so, and waits to be stopped.
HOLDER = """
import os, sys, time
from pipeline.runs import run_lock
lock = run_lock.RunLock(sys.argv[1])
lock.acquire("digits run --epochs 1")
with lock.released_on_sigterm():
    open(sys.argv[2], "w").close()
    while True:
        time.sleep(0.05)
"""


def wait_for(condition, timeout=30.0, what="condition"):
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


@pytest.fixture
def holder(tmp_path):
    """Another process holding the lock of tmp_path/root."""
    root, ready = str(tmp_path / "root"), tmp_path / "ready"
    process = subprocess.Popen([sys.executable, "-c", HOLDER, root, str(ready)], cwd=ROOT)
    try:
        wait_for(lambda: ready.exists() or process.poll() is not None, what="the holder to take the lock")
        assert process.poll() is None, "the holder process ended early"
        yield root, process
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=30)


def test_a_second_process_is_refused_with_the_holders_pid_and_start(holder):
    root, process = holder
    lock = run_lock.RunLock(root)
    with pytest.raises(run_lock.RunLockHeld) as refused:
        lock.acquire("digits run")
    assert refused.value.holder.pid == process.pid and refused.value.holder.command == "digits run --epochs 1"
    assert f"pid {process.pid} on " in str(refused.value) and "started 20" in str(refused.value)
    assert lock.current_holder() == refused.value.holder and lock.stale() is None and not lock.is_held


def test_digits_run_is_refused_in_one_line_naming_the_holder(holder):
    root, process = holder
    done = subprocess.run([sys.executable, "-m", "pipeline.cli", "run", f"--pipeline-root={root}"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("digits run: refused: another pipeline run is in progress (pid ") and \
        f"pid {process.pid} on " in line and "started 20" in line and line.endswith("outcome: error"), line
    assert sorted(os.listdir(root)) == ["run.lock", "run.lock.json"]  # refused before anything was made


def test_a_killed_holder_frees_the_lock_and_its_stale_record_is_reported_and_replaced(holder):
    root, process = holder
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    lock = run_lock.RunLock(root)
    assert lock.current_holder() is None  # the kernel dropped the flock with the process
    stale = lock.stale()
    assert stale is not None and stale.pid == process.pid
    assert lock.acquire("digits run") == stale and lock.replaced == stale
    try:
        assert lock.current_holder().pid == os.getpid() and lock.stale() is None
    finally:
        lock.release()
    assert lock.current_holder() is None and lock.stale() is None
    assert not os.path.exists(lock.record_path)


def test_digits_run_holds_the_lock_while_it_runs_and_reports_a_stale_record(holder, monkeypatch, capsys):
    from pipeline import cli

    root, process = holder
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    seen = []
    monkeypatch.setattr(cli, "_run_locked",
                        lambda config, stale: seen.extend([run_lock.RunLock(root).current_holder(), stale]) or 0)
    assert cli.main(["run", f"--pipeline-root={root}", "--epochs=1"]) == 0
    assert seen[0].pid == os.getpid() and seen[0].command == f"digits run --pipeline-root={root} --epochs=1"
    assert seen[1].pid == process.pid  # the dead run's record goes on to the crash clean-up
    err = capsys.readouterr().err
    assert f"an earlier run ended without releasing the run lock (pid {process.pid} on " in err, err
    assert run_lock.RunLock(root).current_holder() is None and run_lock.RunLock(root).stale() is None


def test_sigterm_releases_the_lock_and_leaves_no_record(holder):
    root, process = holder
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == -signal.SIGTERM  # ended as SIGTERM's default would
    lock = run_lock.RunLock(root)
    assert lock.current_holder() is None and lock.stale() is None


def test_acquire_release_and_held_in_one_process(tmp_path):
    lock = run_lock.RunLock(str(tmp_path / "root"))
    with lock.held("digits run"):
        record = run_lock.RunLock(str(tmp_path / "root")).current_holder()
        assert record.pid == os.getpid() and record.command == "digits run" and record.started.endswith("Z")
        with pytest.raises(RuntimeError, match="already held"):
            lock.acquire("again")
    assert not lock.is_held and lock.current_holder() is None
    lock.release()  # releasing a free lock is a no-op
