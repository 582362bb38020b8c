"""``digits schedule --local``: scheduled runs on this machine, without Kubeflow.

    digits schedule --local                               # `digits run` at --schedule (cron, UTC)
    digits schedule --local --run-on-open-span 200        # ... and whenever the open span holds 200 digits
    digits schedule --local --no-cron --run-on-open-span 200 --epochs 1   # run flags go to each run

Before each run the open span is sealed (new digits then go to a fresh open span), then ``digits run``
with the same flags and environment runs as a child process; its outcome (pipeline/runs/outcomes.py) is one
line here. A run that crashes ends that run, not the scheduler. The run lock (pipeline/runs/run_lock.py) keeps
a manual ``digits run`` and a scheduled one apart. A cron time that passes while a run is going is not
caught up: the next run starts at the next cron time after it. SIGTERM or Ctrl-C stops the scheduler;
a run in progress gets SIGTERM and up to --stop-timeout seconds to end.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from typing import Callable, List, Optional, Sequence

from croniter import croniter

from pipeline import config as config_lib
from pipeline.runs import console, run_lock, run_outcome
from pipeline.config import PipelineConfig

UTC = datetime.timezone.utc


def utc_now() -> datetime.datetime:
    return datetime.datetime.now(UTC)


def stamp(moment: datetime.datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def next_cron_time(cron: str, after: datetime.datetime) -> datetime.datetime:
    """The first time strictly after ``after`` that the 5-field cron expression (UTC) names."""
    return croniter(cron, after.astimezone(UTC)).get_next(datetime.datetime)


@dataclasses.dataclass(frozen=True)
class Decision:
    run: bool
    reason: str  # why a run starts: "cron '0 3 * * *'" or "open span 200 >= 200 digits"
    next_cron: Optional[datetime.datetime]  # the cron time to wait for next (None: cron not watched)


def decide(now: datetime.datetime, next_cron: Optional[datetime.datetime], cron: str, open_count: int,
           threshold: int) -> Decision:
    """The scheduling rule, as a pure function: a run is due when the awaited cron time has come (the
    next one is then counted from now: no catch-up) or when the open span holds ``threshold`` digits
    (0 = not watched)."""
    if next_cron is not None and now >= next_cron:
        return Decision(True, f"cron '{cron}'", next_cron_time(cron, now))
    if threshold and open_count >= threshold:
        return Decision(True, f"open span {open_count} >= {threshold} digits", next_cron)
    return Decision(False, "", next_cron)


class LocalScheduler:
    """Watches the clock and the open span; starts ``run_command`` when ``decide`` says so, one at a time."""

    def __init__(self, config: PipelineConfig, run_command: Sequence[str], *, cron: bool = True,
                 poll_seconds: float = 10.0, stop_timeout: float = 120.0,
                 clock: Callable[[], datetime.datetime] = utc_now, out=None) -> None:
        from components.data.spans import SpanStore  # numpy only; the scheduler never imports TensorFlow

        self.config = config
        self.run_command = list(run_command)
        self.poll_seconds = poll_seconds
        self.stop_timeout = stop_timeout
        self.clock = clock
        self.out = out or sys.stdout
        self.store = SpanStore(config.data_root)
        self.lock = run_lock.RunLock(config.pipeline_root)
        self.next_cron = next_cron_time(config.schedule, clock()) if cron else None
        self._stop = threading.Event()
        self._stop_signal: Optional[int] = None
        self._child: Optional[subprocess.Popen] = None
        self._busy_reported: Optional[run_lock.Holder] = None

    def say(self, line: str) -> None:
        self.out.write(line + "\n")
        self.out.flush()

    def describe(self) -> List[str]:
        """What it watches, for the first lines of its output."""
        lines = [f"digits schedule --local: {shlex.join(self.run_command)}"]
        if self.next_cron is not None:
            lines.append(f"  cron '{self.config.schedule}' UTC: next run {stamp(self.next_cron)}")
        else:
            lines.append("  cron: not watched (--no-cron)")
        threshold = self.config.run_on_open_span
        if threshold:
            lines.append(f"  open span of {self.config.data_root}: a run at {threshold} digits "
                         f"(now {self.store.open_count()}; checked every {self.poll_seconds:g} s)")
        else:
            lines.append("  open span: not watched (--run-on-open-span 0)")
        lines.append(f"  run output: {os.path.join(self.config.pipeline_root, 'logs')}/scheduled-run-*.log; "
                     "one line per run below; SIGTERM or Ctrl-C stops")
        return lines

    def stop(self, signum: int = signal.SIGTERM) -> None:
        """Asks the loop to end (safe from a signal handler); a run in progress gets SIGTERM."""
        self._stop_signal = signum
        self._stop.set()
        child = self._child
        if child is not None and child.poll() is None:
            child.send_signal(signal.SIGTERM)

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def step(self) -> Optional[str]:
        """One decision, and the run it calls for; returns the run's line (None when no run started)."""
        decision = decide(self.clock(), self.next_cron, self.config.schedule,
                          self.store.open_count() if self.config.run_on_open_span else 0,
                          self.config.run_on_open_span)
        self.next_cron = decision.next_cron
        if not decision.run or self.stopping:
            return None
        holder = self.lock.current_holder()
        if holder is not None:  # a manual run: said once, tried again at the next trigger
            if holder != self._busy_reported:
                self.say(f"{stamp(self.clock())} skipped ({decision.reason}): another run is in progress "
                         f"(pid {holder.pid}, started {holder.started})")
            self._busy_reported = holder
            return None
        self._busy_reported = None
        line = self.run_once(decision.reason)
        if self.next_cron is not None:  # cron times passed during the run are not caught up
            self.next_cron = next_cron_time(self.config.schedule, self.clock())
        return line

    def run_once(self, reason: str) -> str:
        """Seals the open span, runs the run command to its end and says its outcome in one line."""
        started_at = self.clock()
        sealed = self.store.seal()
        spans = run_outcome.spans_used([s.number for s in self.store.sealed()], self.config.span_window)
        log_path = console.command_log_path(self.config.pipeline_root, "scheduled-run")
        os.makedirs(os.path.dirname(log_path), exist_ok=True)
        before, began = run_outcome.summaries(self.config.pipeline_root), time.monotonic()
        with open(log_path, "ab") as log:
            try:  # its own session: a Ctrl-C in the terminal reaches the scheduler, which stops the run
                self._child = subprocess.Popen(self.run_command, stdout=log, stderr=subprocess.STDOUT,
                                               stdin=subprocess.DEVNULL, start_new_session=True)
            except OSError as error:
                return self._said(f"{stamp(started_at)} run not started ({reason}): {error}")
            if self.stopping:  # a stop that came while the child was being started
                self._child.send_signal(signal.SIGTERM)
            code = self._wait(self._child)
        self._child = None
        outcome = run_outcome.read(self.config.pipeline_root, before, code)
        details = [f"exit {code}", f"{time.monotonic() - began:.0f} s", spans]
        if sealed is not None:
            details.append(f"sealed span {sealed.number}: {sealed.count} digits")
        details.append(reason)
        if outcome.exit_code not in (0, None) or code != 0:
            details.append(f"log {log_path}")
        return self._said(f"{stamp(started_at)} {outcome.describe()} ({', '.join(details)})")

    def _said(self, line: str) -> str:
        self.say(line)
        return line

    def _wait(self, child: subprocess.Popen) -> int:
        """The child's exit status; after a stop, SIGKILL once --stop-timeout has passed."""
        deadline = None
        while True:
            try:
                return child.wait(timeout=0.2)
            except subprocess.TimeoutExpired:
                pass
            if self.stopping:
                deadline = deadline or time.monotonic() + self.stop_timeout
                if time.monotonic() >= deadline:
                    self.say(f"{stamp(self.clock())} the run did not end {self.stop_timeout:g} s after SIGTERM: "
                             f"killing it (pid {child.pid})")
                    child.kill()
                    deadline = float("inf")  # killed once; wait() reaps it

    def serve_forever(self) -> int:
        """Steps until stopped; returns 0."""
        failed = None
        while not self.stopping:
            try:
                self.step()
                failed = None
            except Exception as error:  # noqa: BLE001 - e.g. an unreadable data root: said, tried again
                if str(error) != failed:
                    self.say(f"{stamp(self.clock())} no run started: {type(error).__name__}: {error}")
                failed = str(error)
            wait = self.poll_seconds if self.config.run_on_open_span else 3600.0
            if self.next_cron is not None:
                wait = min(wait, max(0.0, (self.next_cron - self.clock()).total_seconds()))
            self._stop.wait(max(wait, 0.05))
        name = signal.Signals(self._stop_signal).name if self._stop_signal else "stop"
        self.say(f"{stamp(self.clock())} stopped ({name}); no new run starts")
        return 0


def _own_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("schedule --local options", "The scheduler itself (not passed to the runs).")
    group.add_argument("--local", action="store_true", required=True,
                       help="Schedule runs on this machine (without it: a Kubeflow recurring run).")
    group.add_argument("--no-cron", action="store_true",
                       help="Do not run at --schedule; only the open-span threshold (--run-on-open-span) starts runs.")
    group.add_argument("--poll-seconds", type=float, default=10.0, metavar="SECONDS",
                       help="How often the open span is counted (default: 10).")
    group.add_argument("--stop-timeout", type=float, default=120.0, metavar="SECONDS",
                       help="Seconds a run gets to end after SIGTERM when the scheduler stops (default: 120).")
    group.add_argument("--run-command", default="", metavar="COMMAND",
                       help="The command each run executes, shell-quoted (default: digits run with this command's "
                            "run options; for wrappers and tests).")


def main(argv: Optional[Sequence[str]] = None, prog: str = "digits schedule --local") -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    config, args = config_lib.command_line(
        prog, "Run the pipeline on this machine at --schedule and/or when the open span reaches "
              "--run-on-open-span digits.", argv, _own_options)
    own = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    _own_options(own)
    _, run_argv = own.parse_known_args(argv)  # the config flags, passed on to every run unchanged
    command = shlex.split(args.run_command) if args.run_command else \
        [sys.executable, "-m", "pipeline.cli", "run", *run_argv]
    if args.no_cron and not config.run_on_open_span:
        print(f"{prog}: --no-cron without --run-on-open-span would never start a run; give a threshold "
              "(e.g. --run-on-open-span 200) or drop --no-cron", file=sys.stderr)
        return 2
    if not croniter.is_valid(config.schedule):
        print(f"{prog}: --schedule {config.schedule!r} is not a cron expression croniter reads "
              "(minute hour day month weekday, UTC, e.g. '0 3 * * *')", file=sys.stderr)
        return 2
    if args.poll_seconds <= 0 or args.stop_timeout < 0:
        print(f"{prog}: --poll-seconds must be positive and --stop-timeout 0 or more", file=sys.stderr)
        return 2
    scheduler = LocalScheduler(config, command, cron=not args.no_cron, poll_seconds=args.poll_seconds,
                               stop_timeout=args.stop_timeout)
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda number, frame: scheduler.stop(number))
    for line in scheduler.describe():
        scheduler.say(line)
    return scheduler.serve_forever()


if __name__ == "__main__":
    sys.exit(main(prog="python -m pipeline.schedule.local_scheduler"))
