"""The InfraValidator's local-process runner: ``digits-model-server`` (``python -m serving``) on this machine.

TFX 1.16 runs its model server in Docker or Kubernetes only. This is TFX's ``BaseModelServerRunner``
for the model server this project serves with, started as a child process with TF Serving's flags on
free ports, so the Executor (components/infra/infra_validator.py) drives it as it drives TFX's own runners.

Our server, like ``tensorflow_model_server``, loads every model before it opens its ports and exits
when a model fails to load: a process that exits before its gRPC port answers has refused the model
(:class:`ModelRefused`, the error line of its log as the reason), unless it could not bind a port,
which is a retry's business.
"""
from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from typing import List, Optional

from tfx.components.infra_validator import error_types
from tfx.components.infra_validator.model_server_runners import base_runner
from tfx.utils.model_paths import tf_serving_flavor

_REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_STOP_GRACE_SECONDS = 20.0
_POLL_SECONDS = 0.1
_PORT_IN_USE = "Failed to start the server"  # serving/model_servers/main.py: a port could not be bound


class ModelRefused(error_types.ValidationFailed):
    """The model server exited while loading the model: a verdict on the model, not worth a retry."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def die_with_parent(command: List[str]) -> List[str]:
    """``command`` under util-linux's ``setpriv --pdeathsig TERM``: a SIGKILLed pipeline leaves no server behind.

    Why not ``preexec_fn`` calling prctl: with it, Python forks instead of vforking, so gRPC's fork handlers
    run in the child and may start a poller thread whose epoll descriptor ``close_fds`` then closes before
    exec; that thread aborts the child (exit -6, "epoll_wait error: Bad file descriptor"), about 1 start in 300
    from a pipeline that has used gRPC. Where setpriv is missing the server simply runs without the signal."""
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", "TERM", "--", *command] if setpriv else command


_SERVER_ERROR = re.compile(r": E (?:serving|digits)[\w.]*\] (.*)$")  # our server's log format, level E


def refusal_reason(log: str) -> str:
    """The server's first error line (``... E serving.x] message``, not TensorFlow's C++ ones: the cause; later
    ones repeat it as "did not become available"), without the timestamp; else the log's tail."""
    errors = [m.group(1) for m in map(_SERVER_ERROR.search, log.splitlines()) if m]
    lines = errors[:1] or [line for line in log.splitlines() if line.strip()][-3:]
    return " | ".join(lines) or "it exited without a word"


def spawn(command: List[str], log_file) -> subprocess.Popen:
    """``command`` from the repository, its output into ``log_file``, dying with this process."""
    env = dict(os.environ, TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1")
    return subprocess.Popen(die_with_parent(command), cwd=_REPO, env=env, stdin=subprocess.DEVNULL,
                            stdout=log_file, stderr=subprocess.STDOUT)


class LocalProcessRunner(base_runner.BaseModelServerRunner):
    """``python -m serving --port --rest_api_port --model_name --model_base_path`` on free ports."""

    def __init__(self, model_path: str, model_name: str, extra_flags: Optional[List[str]] = None):
        """``model_path`` is TF Serving-flavoured (``<base>/<model_name>/<version>``), as the Executor's
        _PrepareModelPath makes it."""
        # TF Serving's --model_base_path is <base>/<model_name> (the docker entrypoint's $MODEL_BASE_PATH/$MODEL_NAME)
        base = tf_serving_flavor.parse_model_base_path(model_path)
        self._model_base_path = os.path.join(base, model_name)
        self._model_name = model_name
        self._extra_flags = list(extra_flags or [])
        self.grpc_port = self.rest_port = 0
        self._process: Optional[subprocess.Popen] = None
        self._log_file = None

    def __repr__(self) -> str:
        return (f"LocalProcessRunner(digits-model-server, model_name={self._model_name!r}, "
                f"model_base_path={self._model_base_path!r}, port={self.grpc_port}, rest_api_port={self.rest_port})")

    def command(self) -> List[str]:
        return [sys.executable, "-m", "serving", f"--port={self.grpc_port}", f"--rest_api_port={self.rest_port}",
                f"--model_name={self._model_name}", f"--model_base_path={self._model_base_path}",
                # one process is enough to validate; a load that fails is final (TF Serving retries 5 times,
                # a minute apart, for storage that may come back: a local copy will not)
                "--num_serving_processes=1", "--max_num_load_retries=0", *self._extra_flags]

    def Start(self) -> None:
        assert self._process is None, "a runner starts once; make another to restart"
        self.grpc_port, self.rest_port = free_port(), free_port()
        while self.rest_port == self.grpc_port:
            self.rest_port = free_port()
        self._log_file = tempfile.TemporaryFile(mode="w+", prefix="infra-validation-server-")
        self._process = spawn(self.command(), self._log_file)

    def WaitUntilRunning(self, deadline: float) -> None:
        """Until the gRPC port accepts connections (the model is loaded then); ModelRefused if it exits."""
        assert self._process is not None, "Start() first"
        while time.time() < deadline:
            if self._process.poll() is not None:
                log = self.GetLogs() or ""
                reason = refusal_reason(log)
                if _PORT_IN_USE in log:  # not the model's fault: the retry takes other free ports
                    raise error_types.JobAborted(f"the model server could not start: {reason}")
                raise ModelRefused(f"the model server refused the model (exit code {self._process.returncode}): "
                                   f"{reason}")
            try:
                socket.create_connection(("127.0.0.1", self.grpc_port), timeout=1).close()
                return
            except OSError:
                time.sleep(_POLL_SECONDS)
        raise error_types.DeadlineExceeded("the model server did not open its ports before the deadline "
                                           "(ValidationSpec.max_loading_time_seconds)")

    def GetEndpoint(self) -> str:
        return f"localhost:{self.grpc_port}"

    def GetRestEndpoint(self) -> str:
        return f"localhost:{self.rest_port}"

    def Stop(self) -> None:
        """SIGTERM, then SIGKILL after a grace period; safe to call at any point, and more than once."""
        process = self._process
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(_STOP_GRACE_SECONDS)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    @property
    def pid(self) -> Optional[int]:
        return None if self._process is None else self._process.pid

    @property
    def returncode(self) -> Optional[int]:
        return None if self._process is None else self._process.poll()

    def GetLogs(self) -> Optional[str]:
        if self._log_file is None:
            return None
        self._log_file.flush()
        self._log_file.seek(0)
        return self._log_file.read()[-20000:]
