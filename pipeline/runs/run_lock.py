"""One pipeline run at a time per pipeline root: ``digits run`` and ``digits schedule --local`` share it.

    <pipeline_root>/run.lock        fcntl.flock'ed by the running run; the kernel drops the lock when
                                    the process ends, however it ends (SIGKILL, OOM, a crash)
    <pipeline_root>/run.lock.json   the liveness record: {"pid", "host", "started", "command"},
                                    written (tmp + rename) once the lock is held, removed on release

A record whose lock is free belongs to a run that died without releasing (``stale()``): the next
``acquire()`` reports it and replaces it. Crash clean-up code asks ``current_holder()`` (a live run,
or None) and ``stale()`` (what a dead one left) before touching that run's leftovers.
"""
from __future__ import annotations

import contextlib
import dataclasses
import datetime
import errno
import fcntl
import json
import os
import signal
import socket
import threading
from typing import Optional

LOCK_NAME = "run.lock"
RECORD_NAME = "run.lock.json"


@dataclasses.dataclass(frozen=True)
class Holder:
    """Who holds (or held) the run lock."""
    pid: int
    host: str
    started: str  # ISO 8601 UTC
    command: str

    def describe(self) -> str:
        return f"pid {self.pid} on {self.host}, started {self.started}: {self.command}"


class RunLockHeld(RuntimeError):
    """Another run holds the lock; ``holder`` says who (None if it has not written its record yet)."""

    def __init__(self, path: str, holder: Optional[Holder]) -> None:
        who = holder.describe() if holder else "a process that has not written its record yet"
        super().__init__(f"another pipeline run is in progress ({who}); lock {path}")
        self.holder = holder


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


class RunLock:
    """The run lock of one pipeline root. ``acquire()`` / ``release()``, or ``with lock.held(command):``."""

    def __init__(self, pipeline_root: str) -> None:
        self.pipeline_root = pipeline_root
        self.path = os.path.join(pipeline_root, LOCK_NAME)
        self.record_path = os.path.join(pipeline_root, RECORD_NAME)
        self._fd: Optional[int] = None
        self.replaced: Optional[Holder] = None  # the stale record the last acquire() replaced

    def _open(self) -> int:
        os.makedirs(self.pipeline_root, exist_ok=True)
        return os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)

    def _read_record(self) -> Optional[Holder]:
        try:
            with open(self.record_path) as f:
                record = json.load(f)
            return Holder(int(record["pid"]), str(record["host"]), str(record["started"]), str(record["command"]))
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError):  # hand-edited or from another version: still a record
            return Holder(-1, "?", "?", "an unreadable record")

    def _lock_free(self) -> bool:
        """Whether nobody holds the lock (tested by taking and dropping it at once)."""
        if self._fd is not None:
            return False
        fd = self._open()
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            if error.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                return False
            raise
        finally:
            os.close(fd)  # closing drops a lock taken here
        return True

    def acquire(self, command: str) -> Optional[Holder]:
        """Takes the lock without waiting and writes this process's record; raises RunLockHeld naming
        the holder. Returns the stale record of a dead run it replaced (also in ``replaced``), if any."""
        if self._fd is not None:
            raise RuntimeError("this RunLock is already held by this process")
        fd = self._open()
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            os.close(fd)
            if error.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise
            raise RunLockHeld(self.path, self._read_record()) from None
        self._fd = fd
        self.replaced = self._read_record()
        record = {"pid": os.getpid(), "host": socket.gethostname(), "started": _now(), "command": command}
        tmp = f"{self.record_path}.{os.getpid()}.tmp"
        with open(tmp, "w") as f:
            json.dump(record, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.record_path)
        return self.replaced

    def release(self) -> None:
        """Removes the record, then drops the lock (a no-op when not held)."""
        if self._fd is None:
            return
        with contextlib.suppress(FileNotFoundError):
            os.remove(self.record_path)
        fd, self._fd = self._fd, None
        os.close(fd)

    @property
    def is_held(self) -> bool:
        return self._fd is not None

    def current_holder(self) -> Optional[Holder]:
        """The live run holding the lock (its record; a placeholder pid -1 while it writes it), or None."""
        if self._fd is not None:
            return self._read_record()
        if self._lock_free():
            return None
        return self._read_record() or Holder(-1, "?", "?", "a run that has not written its record yet")

    def stale(self) -> Optional[Holder]:
        """The record left by a run that died holding the lock, or None (no record, or its run is alive)."""
        record = self._read_record()
        if record is None or not self._lock_free():
            return None
        return record

    @contextlib.contextmanager
    def held(self, command: str):
        self.acquire(command)
        try:
            yield self
        finally:
            self.release()

    @contextlib.contextmanager
    def released_on_sigterm(self):
        """For the duration, SIGTERM releases the lock, then ends the process as SIGTERM's default
        would (exit status -15 to its parent): a run stopped by the scheduler leaves no stale record.
        Outside the main thread (where signals cannot be handled) it does nothing."""
        def handler(signum, frame):  # noqa: ARG001 - signal's signature
            self.release()
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)

        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        previous = signal.signal(signal.SIGTERM, handler)
        try:
            yield self
        finally:
            signal.signal(signal.SIGTERM, previous)
