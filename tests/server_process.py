"""A real ``python -m serving`` process for tests and benchmarks: started with TF Serving's flags on
free ports, ready when its log says the REST API is exported, stopped with SIGTERM."""
from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import sys
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
READY_LINE = "Exporting HTTP/REST API at:"


def stop_process(process: subprocess.Popen, grace: float) -> None:
    """SIGTERM, then SIGKILL if it has not exited after ``grace`` seconds."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """``with ServerProcess(["--model_name=m", ...]) as server:`` gives server.rest_port / grpc_port."""

    def __init__(self, flags, startup_timeout: float = 180.0, grpc_port: int = 0, rest_port: int = 0):
        """Free ports unless given (a restart on the same ports: the port a client was told stays valid)."""
        self.grpc_port, self.rest_port = grpc_port or free_port(), rest_port or free_port()
        self.args = [sys.executable, "-m", "serving", f"--port={self.grpc_port}",
                     f"--rest_api_port={self.rest_port}", *flags]
        self.startup_timeout = startup_timeout
        self.log_lines: list = []
        self._ready = threading.Event()
        self._exited = threading.Event()
        self.process = None

    def __enter__(self) -> "ServerProcess":
        env = dict(os.environ, TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1")
        self.process = subprocess.Popen(self.args, cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.PIPE, text=True)
        threading.Thread(target=self._read_log, daemon=True).start()
        deadline = time.monotonic() + self.startup_timeout
        while not self._ready.wait(0.2):
            if self._exited.is_set() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("model server did not start:\n" + self.log())
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def _read_log(self) -> None:
        for line in self.process.stderr:
            self.log_lines.append(line.rstrip("\n"))
            if READY_LINE in line:
                self._ready.set()
        self._exited.set()

    def log(self) -> str:
        return "\n".join(self.log_lines)

    def stop(self) -> int:
        stop_process(self.process, 30)
        self._exited.wait(10)
        return self.process.returncode

    # ---- REST helpers -------------------------------------------------------------------------------

    def rest(self, method: str, path: str, body=None, timeout: float = 30.0) -> tuple:
        """(HTTP status, decoded JSON or text) from the REST port."""
        conn = http.client.HTTPConnection("127.0.0.1", self.rest_port, timeout=timeout)
        try:
            data = json.dumps(body).encode() if body is not None else None
            conn.request(method, path, body=data, headers={"Content-Type": "application/json"} if data else {})
            response = conn.getresponse()
            text = response.read().decode("utf-8")
        finally:
            conn.close()
        try:
            return response.status, json.loads(text)
        except ValueError:
            return response.status, text

    def version_states(self, model: str) -> dict:
        status, body = self.rest("GET", f"/v1/models/{model}")
        if status != 200:
            return {}
        return {int(v["version"]): (v["state"], v["status"].get("error_message", ""))
                for v in body["model_version_status"]}


def wait_for(condition, timeout: float = 90.0, interval: float = 0.1, what: str = "condition"):
    """Polls ``condition`` until it returns something truthy; fails the test with ``what`` on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


class BackgroundTraffic:
    """Runs each target in a daemon thread from ``with`` to its end; a target loops until ``stopping`` is set
    (load sent while a test changes the server's versions)."""

    def __init__(self, *targets):
        self.stopping = threading.Event()
        self._threads = [threading.Thread(target=target, daemon=True) for target in targets]

    def __enter__(self):
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc):
        self.stopping.set()
        for thread in self._threads:
            thread.join(60)
