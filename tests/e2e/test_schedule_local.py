"""`digits schedule --local` as its own process: digits appended to the open span start a run, one line
per run, a manual `digits run` is refused while a scheduled one runs, and SIGTERM stops both cleanly.
The runs here are a small real command that behaves like `digits run` (run lock, summary.json, exit
code); a real `digits run` under the scheduler is test_a_real_digits_run_under_the_scheduler."""
import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from components.data.spans import SpanStore
from pipeline.runs import run_lock
from tests.conftest import SMALL_RUN

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# argv: pipeline root, scratch dir. Takes the run lock as digits run does; with <scratch>/block it waits
# for SIGTERM (with <scratch>/stubborn it ignores it), else it ends as a pushed run.
RUN = """
import json, os, signal, sys, time
from pipeline.runs import run_lock
root, scratch = sys.argv[1], sys.argv[2]
lock = run_lock.RunLock(root)
lock.acquire("scheduled test run")
n = len([name for name in os.listdir(scratch) if name.startswith("started-")]) + 1
with lock.released_on_sigterm():
    if os.path.exists(os.path.join(scratch, "stubborn")):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    with open(os.path.join(scratch, f"started-{n}"), "w") as f:
        f.write(str(os.getpid()))
    while os.path.exists(os.path.join(scratch, "block")):
        time.sleep(0.05)
    run_id = f"2026-12-07T03:00:0{n}.1"
    os.makedirs(os.path.join(root, "runs", run_id))
    with open(os.path.join(root, "runs", run_id, "summary.json"), "w") as f:
        json.dump({"run_id": run_id, "outcome": "pushed", "exit_code": 0, "version": n, "test_accuracy": 0.97}, f)
lock.release()
"""


def wait_for(condition, timeout=60.0, what="condition"):
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


class Scheduler:
    """digits schedule --local in its own process; its stdout lines collected as they come."""

    def __init__(self, *args, env=None):
        self.process = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "schedule", "--local", *args],
                                        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                        env=env)
        self.lines = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait_line(self, text, timeout=60.0):
        wait_for(lambda: any(text in line for line in self.lines) or self.process.poll() is not None, timeout,
                 f"a line with {text!r}")
        found = [line for line in self.lines if text in line]
        assert found, "\n".join(self.lines)
        return found[-1]

    def stop(self):
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=30)
        self._reader.join(timeout=30)


def append(store, n, start=0):
    for i in range(n):
        store.append(np.full((28, 28), 10 + start + i, np.uint8), (start + i) % 10)


@pytest.fixture
def places(tmp_path):
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    (tmp_path / "run.py").write_text(RUN)
    return str(tmp_path / "root"), str(tmp_path / "data"), scratch


def start(places, *extra):
    root, data, scratch = places
    return Scheduler(f"--pipeline-root={root}", f"--data-root={data}", "--no-cron", "--run-on-open-span=3",
                     "--poll-seconds=0.1", f"--run-command={sys.executable} {os.path.dirname(root)}/run.py {root} {scratch}", *extra)


def test_the_open_span_threshold_starts_a_run_and_sigterm_stops_scheduler_and_run(places):
    root, data, scratch = places
    scheduler = start(places, "--stop-timeout=30")
    try:
        scheduler.wait_line("a run at 3 digits (now 0; checked every 0.1 s)")
        store = SpanStore(data)
        append(store, 2)
        append(store, 1, start=2)
        line = scheduler.wait_line("pushed version 1")
        assert "run 2026-12-07T03:00:01.1 pushed version 1, accuracy 0.9700 (exit 0, " in line, line
        assert line.endswith("MNIST + span 1, sealed span 1: 3 digits, open span 3 >= 3 digits)"), line
        assert store.open_count() == 0 and [s.count for s in store.sealed()] == [3]

        (scratch / "block").touch()  # the next run goes on until it is stopped
        append(store, 3, start=3)
        wait_for(lambda: (scratch / "started-2").exists(), what="the second run to start")
        pid = int((scratch / "started-2").read_text())
        manual = subprocess.run([sys.executable, "-m", "pipeline.cli", "run", f"--pipeline-root={root}"], cwd=ROOT,
                                capture_output=True, text=True, timeout=120)
        assert manual.returncode == 1 and f"refused: another pipeline run is in progress (pid {pid} on " in \
            manual.stderr, manual.stderr

        scheduler.process.send_signal(signal.SIGTERM)
        assert scheduler.process.wait(timeout=60) == 0
        scheduler._reader.join(timeout=30)
        assert not alive(pid)
        assert any("run error (ended by SIGTERM) (exit -15, " in line and "sealed span 2: 3 digits" in line
                   for line in scheduler.lines), scheduler.lines
        assert scheduler.lines[-1].endswith("stopped (SIGTERM); no new run starts"), scheduler.lines
        lock = run_lock.RunLock(root)
        assert lock.current_holder() is None and lock.stale() is None  # the run released it on SIGTERM
        assert len(scheduler.lines) == 4 + 2 + 1, scheduler.lines  # what it watches, a line per run, the stop
    finally:
        scheduler.stop()


def test_a_run_that_ignores_sigterm_is_killed_after_the_stop_timeout(places):
    root, data, scratch = places
    (scratch / "block").touch()
    (scratch / "stubborn").touch()
    scheduler = start(places, "--stop-timeout=1")
    try:
        scheduler.wait_line("a run at 3 digits")
        append(SpanStore(data), 3)
        wait_for(lambda: (scratch / "started-1").exists(), what="the run to start")
        pid = int((scratch / "started-1").read_text())
        scheduler.process.send_signal(signal.SIGINT)  # Ctrl-C: the same as SIGTERM
        assert scheduler.process.wait(timeout=60) == 0
        scheduler._reader.join(timeout=30)
        assert not alive(pid)
        text = "\n".join(scheduler.lines)
        assert f"the run did not end 1 s after SIGTERM: killing it (pid {pid})" in text
        assert "run error (ended by SIGKILL) (exit -9, " in text and "stopped (SIGINT)" in text
        stale = run_lock.RunLock(root).stale()  # killed: its record stays, for the next run to report
        assert stale is not None and stale.pid == pid
    finally:
        scheduler.stop()


def test_bad_scheduler_options_are_one_line_and_exit_2(places):
    root, data, _ = places
    for extra, says in ((["--no-cron"], "--no-cron without --run-on-open-span would never start a run"),
                        (["--schedule=99 3 * * *"], "is not a cron expression")):
        done = subprocess.run([sys.executable, "-m", "pipeline.cli", "schedule", "--local", f"--pipeline-root={root}",
                               *extra], cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert done.returncode == 2 and says in done.stderr and len(done.stderr.strip().splitlines()) == 1, \
            done.stderr


def test_a_real_digits_run_under_the_scheduler(places, package_splits):
    """The default run command: `digits run` with the scheduler's run flags, on small data."""
    root, data, _ = places
    serving = os.path.join(os.path.dirname(root), "serving")
    flags = [f"--{name.replace('_', '-')}={value}" for name, value in SMALL_RUN.items()]
    env = {k: v for k, v in os.environ.items() if not k.startswith("DIGITS_")}
    scheduler = Scheduler(f"--pipeline-root={root}", f"--data-root={data}", f"--serving-dir={serving}",
                          "--no-cron", "--run-on-open-span=1", "--poll-seconds=0.2", *flags, "--epochs=1", env=env)
    try:
        scheduler.wait_line("a run at 1 digits")
        assert f"pipeline.cli run --pipeline-root={root}" in scheduler.lines[0]
        train = package_splits["train"]  # one real digit reaches the threshold
        SpanStore(data).append(train.images[0].reshape(28, 28).astype(np.uint8), int(train.labels[0]))
        line = scheduler.wait_line("(exit ", timeout=900)
        assert " pushed version " in line and "(exit 0, " in line, "\n".join(scheduler.lines)
        assert "sealed span 1: 1 digits" in line
        assert os.listdir(os.path.join(serving, "mnist")) == [line.split(" pushed version ")[1].split(",")[0]]
    finally:
        scheduler.stop()
