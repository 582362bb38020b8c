"""digits schedule --local's rule (pipeline/schedule/local_scheduler.decide, a pure function) and one scheduler
step on a fake clock with small real run commands: seal, run, one line per outcome, crashes survived."""
import datetime
import io
import os
import sys
import threading
import time

import numpy as np
import pytest

from components.data.spans import SpanStore
from pipeline.schedule import local_scheduler
from pipeline.runs import run_lock, run_outcome
from pipeline.config import PipelineConfig

UTC = datetime.timezone.utc
T = datetime.datetime(2026, 12, 7, 2, 59, 30, tzinfo=UTC)
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# A run as `digits run` ends one: summary.json under <root>/runs/<run id>/, then the exit code.
RUN = """
import json, os, sys
root, outcome, code = sys.argv[1], sys.argv[2], int(sys.argv[3])
if outcome != "none":
    os.makedirs(os.path.join(root, "runs", "2026-12-07T03:00:04.1"), exist_ok=True)
    with open(os.path.join(root, "runs", "2026-12-07T03:00:04.1", "summary.json"), "w") as f:
        json.dump({"run_id": "2026-12-07T03:00:04.1", "outcome": outcome, "exit_code": code,
                   "version": 17 if outcome == "pushed" else None, "test_accuracy": 0.9712}, f)
if code < 0:
    os.kill(os.getpid(), -code)
sys.exit(code)
"""


def at(minutes=0.0, seconds=0.0):
    return T + datetime.timedelta(minutes=minutes, seconds=seconds)


def test_cron_time_is_the_next_one_strictly_after():
    assert local_scheduler.next_cron_time("0 3 * * *", T) == datetime.datetime(2026, 12, 7, 3, 0, tzinfo=UTC)
    assert local_scheduler.next_cron_time("0 3 * * *", at(seconds=30)) == datetime.datetime(2026, 12, 8, 3, 0,
                                                                                            tzinfo=UTC)
    assert local_scheduler.next_cron_time("*/15 * * * 1", T) == datetime.datetime(2026, 12, 7, 3, 0, tzinfo=UTC)


@pytest.mark.parametrize("now, open_count, threshold, run, reason", [
    (at(seconds=29), 0, 0, False, ""),                               # before the cron time
    (at(seconds=30), 0, 0, True, "cron '0 3 * * *'"),               # the cron time
    (at(seconds=29), 199, 200, False, ""),                           # one digit short
    (at(seconds=29), 200, 200, True, "open span 200 >= 200 digits"),  # the threshold
    (at(seconds=29), 10_000, 0, False, ""),                          # threshold 0: not watched
    (at(minutes=600), 500, 200, True, "cron '0 3 * * *'"),           # both due: one run, said as cron
])
def test_decide(now, open_count, threshold, run, reason):
    decision = local_scheduler.decide(now, at(seconds=30), "0 3 * * *", open_count, threshold)
    assert (decision.run, decision.reason) == (run, reason)
    if reason.startswith("cron"):  # counted from now: cron times missed meanwhile are not caught up
        assert decision.next_cron == datetime.datetime(2026, 12, 8, 3, 0, tzinfo=UTC)
    else:
        assert decision.next_cron == at(seconds=30)


def test_without_cron_only_the_threshold_starts_runs():
    assert not local_scheduler.decide(at(minutes=10_000), None, "0 3 * * *", 5, 10).run
    assert local_scheduler.decide(at(), None, "0 3 * * *", 10, 10) == local_scheduler.Decision(
        True, "open span 10 >= 10 digits", None)


@pytest.mark.parametrize("sealed, window, text", [
    ([], 0, "MNIST only"), ([1], 0, "MNIST + span 1"), ([3, 1, 2], 0, "MNIST + spans 1-3"),
    ([1, 2, 5], 0, "MNIST + spans 1, 2, 5"), ([1, 2, 5, 6], 2, "MNIST + spans 5-6")])
def test_spans_used(sealed, window, text):
    assert run_outcome.spans_used(sealed, window) == text


class Clock:
    def __init__(self, now):
        self.now = now

    def __call__(self):
        return self.now


def scheduler(tmp_path, outcome="pushed", code=0, threshold=0, cron=True):
    config = PipelineConfig(pipeline_root=str(tmp_path / "root"), data_root=str(tmp_path / "data"),
                            run_on_open_span=threshold)
    clock, out = Clock(T), io.StringIO()
    command = [sys.executable, "-c", RUN, config.pipeline_root, outcome, str(code)]
    return local_scheduler.LocalScheduler(config, command, cron=cron, clock=clock, out=out), clock, out


def test_at_the_cron_time_it_seals_the_open_span_runs_and_says_the_outcome(tmp_path):
    sched, clock, out = scheduler(tmp_path)
    store = SpanStore(str(tmp_path / "data"))
    for label in (1, 2, 3):
        store.append(np.full((28, 28), 40 * label, np.uint8), label)
    assert "cron '0 3 * * *' UTC: next run 2026-12-07T03:00:00Z" in "\n".join(sched.describe())
    clock.now = at(seconds=29)
    assert sched.step() is None and store.open_count() == 3
    clock.now = at(seconds=30)
    line = sched.step()
    assert line == out.getvalue().strip()
    assert line.startswith("2026-12-07T03:00:00Z run 2026-12-07T03:00:04.1 pushed version 17, accuracy 0.9712 "
                           "(exit 0, "), line
    assert line.endswith(" s, MNIST + span 1, sealed span 1: 3 digits, cron '0 3 * * *')"), line
    assert store.open_count() == 0 and [s.count for s in store.sealed()] == [3]
    assert sched.next_cron == datetime.datetime(2026, 12, 8, 3, 0, tzinfo=UTC)
    assert sched.step() is None  # not again until tomorrow
    assert run_lock.RunLock(str(tmp_path / "root")).current_holder() is None


@pytest.mark.parametrize("outcome, code, says", [
    ("none", 1, "run error (no summary.json: it failed before one was written) (exit 1, "),
    ("none", -9, "run error (ended by SIGKILL) (exit -9, "),
    ("stopped_by_data_validation", 3, "run 2026-12-07T03:00:04.1 stopped_by_data_validation, accuracy 0.9712 "
                                      "(exit 3, "),
])
def test_a_failed_or_crashed_run_is_one_line_and_the_scheduler_goes_on(tmp_path, outcome, code, says):
    sched, clock, out = scheduler(tmp_path, outcome, code, threshold=2, cron=False)
    store = SpanStore(str(tmp_path / "data"))
    store.append(np.full((28, 28), 80, np.uint8), 7)
    assert sched.step() is None
    store.append(np.full((28, 28), 90, np.uint8), 8)
    line = sched.step()
    assert says in line and "open span 2 >= 2 digits" in line and f"log {tmp_path / 'root' / 'logs'}" in line, line
    store.append(np.full((28, 28), 70, np.uint8), 1)
    store.append(np.full((28, 28), 60, np.uint8), 2)
    assert "MNIST + spans 1-2, sealed span 2: 2 digits" in sched.step()  # the next trigger runs again


def test_a_trigger_while_another_run_holds_the_lock_is_skipped_and_said_once(tmp_path):
    sched, clock, out = scheduler(tmp_path, threshold=1, cron=False)
    store = SpanStore(str(tmp_path / "data"))
    store.append(np.full((28, 28), 80, np.uint8), 7)
    manual = run_lock.RunLock(str(tmp_path / "root"))
    with manual.held("digits run --epochs 1"):
        assert sched.step() is None and sched.step() is None
    (line,) = out.getvalue().splitlines()
    assert f"skipped (open span 1 >= 1 digits): another run is in progress (pid {os.getpid()}, started " in line
    assert store.open_count() == 1  # nothing sealed for a run that did not start
    assert "pushed version 17" in sched.step()


def test_an_error_before_a_run_is_said_once_and_the_scheduler_goes_on_until_stopped(tmp_path):
    (tmp_path / "data").write_text("a file where the data root should be")
    sched, clock, out = scheduler(tmp_path, threshold=1, cron=False)
    sched.poll_seconds = 0.01
    thread = threading.Thread(target=sched.serve_forever)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while "no run started: " not in out.getvalue() and time.monotonic() < deadline:
            time.sleep(0.01)
        polls = time.monotonic() + 0.2
        while time.monotonic() < polls:  # more polls fail the same way: not said again
            assert thread.is_alive()
            time.sleep(0.01)
    finally:
        sched.stop()
        thread.join(timeout=30)
    first, last = out.getvalue().splitlines()
    assert " no run started: " in first and str(tmp_path / "data") in first and last.endswith("stopped (SIGTERM); no new run starts")
