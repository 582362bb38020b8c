"""A serving process as the coordinator holds it: ``python -m serving.model_servers.worker FD`` with one end
of a socket pair as FD, a hand-shake (flags in; "ready" once TensorFlow is imported and configured), then
a Channel for commands and calls both ways.

Why a fresh interpreter (subprocess) rather than multiprocessing's "fork": the child must not inherit
threads and locks of the parent; and rather than multiprocessing's "spawn": no re-import of the main
module and no resource-tracker process, and the socket pair is the only descriptor passed.
"""
from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import time
from multiprocessing.connection import Connection
from typing import Optional

import serving
from serving.model_servers.ipc import Channel, decode_error

log = logging.getLogger("digits.model_server")
_PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(serving.__file__)))


class ServingProcess:
    """One serving process: its Popen, then (after the hand-shake) its Channel."""

    def __init__(self, index: int, popen: subprocess.Popen, conn: Connection):
        self.index, self.popen, self.conn = index, popen, conn
        self.channel: Optional[Channel] = None
        self.last_snapshot: Optional[dict] = None  # its metrics when last asked, kept if it dies

    def __repr__(self) -> str:
        return f"serving process {self.index} (pid {self.popen.pid})"

    @classmethod
    def spawn(cls, index: int) -> "ServingProcess":
        parent, child = socket.socketpair()
        path = os.pathsep.join(filter(None, [_PACKAGE_ROOT, os.environ.get("PYTHONPATH")]))
        try:
            popen = subprocess.Popen([sys.executable, "-m", "serving.model_servers.worker", str(child.fileno())],
                                     pass_fds=(child.fileno(),), env=dict(os.environ, PYTHONPATH=path),
                                     stdin=subprocess.DEVNULL)
        except BaseException:
            parent.close()
            raise
        finally:
            child.close()
        return cls(index, popen, Connection(parent.detach()))

    def handshake(self, options, extras: dict, handlers: dict, on_close) -> None:
        """Sends the flags; returns once the process has imported TensorFlow and applied them (raising the
        error it reports, e.g. OptionsError for a bad --tensorflow_session_config_file)."""
        try:
            self.conn.send((self.index, options, extras))
            kind, payload = self.conn.recv()
        except (EOFError, OSError):
            raise RuntimeError(f"{self} exited while starting (code {self.popen.poll()}); "
                               "its log above says why") from None
        if kind == "failed":
            raise decode_error(payload)
        self.channel = Channel(self.conn, handlers, repr(self), on_close=on_close).start()

    def ask_to_stop(self) -> None:
        """Drains (it stops accepting, answers what is in flight, exits); one still starting is killed."""
        if self.channel is not None:
            self.channel.call_async("stop")
        elif self.popen.poll() is None:
            self.popen.kill()

    def wait_or_kill(self, deadline: float) -> Optional[int]:
        try:
            self.popen.wait(max(deadline - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            log.warning("%s did not stop in time; killing it.", self)
            self.popen.kill()
            self.popen.wait()
        if self.channel is not None:
            self.channel.close()
        else:
            self.conn.close()
        return self.popen.returncode
