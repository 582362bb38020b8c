"""What `digits run` shows while it runs: a line per component started and finished, a line per
training epoch, then the summary. Everything else (TFX's launcher dumps, absl and TensorFlow's C++
logs, warnings) goes to a log file in the run's directory.

TensorFlow's C++ code and gRPC write to file descriptor 2 directly, so the log file is put onto
descriptors 1 and 2 for the whole run; the console lines go to a duplicate of the original stdout,
held here. Outside a quiet run (tests, Kubeflow, --verbose) no console is set and nothing extra
is printed.
"""
from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from typing import IO, Dict, Iterator, Mapping, Optional

_console: Optional[IO[str]] = None


def stream() -> Optional[IO[str]]:
    """The console of a quiet `digits run`, or None when nothing should be printed extra."""
    return _console


def show(line: str) -> None:
    """Writes ``line`` to the console, if there is one."""
    if _console is not None:
        _console.write(line + "\n")
        _console.flush()


def component_line(node_id: str, event: str, seconds: Optional[float] = None) -> str:
    """"  started  Trainer" / "  finished Trainer  12.3 s" / "  cached   Transform  0.4 s"."""
    timing = f" {seconds:6.1f} s" if seconds is not None else ""
    return f"  {event:<8} {node_id:<32}{timing}".rstrip()


def epoch_line(epoch: int, epochs: int, logs: Mapping[str, float]) -> str:
    """"  Trainer epoch 1/3: loss 0.2954, accuracy 0.9141, val_loss ..., val_accuracy ..." (training
    metrics first, then their val_ counterparts)."""
    names = sorted(logs, key=lambda name: (name.startswith("val_"), name != "loss" and name != "val_loss", name))
    shown = ", ".join(f"{name} {float(logs[name]):.4f}" for name in names)
    return f"  Trainer epoch {epoch}/{epochs}: {shown}"


class ComponentLines(logging.Handler):
    """Turns LocalDagRunner's "Component %s is running." / "... is finished." records (and the
    launcher's "A cached execution ... is used.") into console lines with each component's time."""

    def __init__(self) -> None:
        super().__init__(level=logging.INFO)
        self._started: Dict[str, float] = {}
        self._cached = set()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            if record.msg == "Component %s is running.":
                node_id = str(record.args[0])
                self._started[node_id] = time.monotonic()
                show(component_line(node_id, "started"))
            elif record.msg == "A cached execution %d is used.":
                self._cached.update(self._started)
            elif record.msg == "Component %s is finished.":
                node_id = str(record.args[0])
                seconds = time.monotonic() - self._started.pop(node_id, time.monotonic())
                event = "cached" if node_id in self._cached else "finished"
                self._cached.discard(node_id)
                show(component_line(node_id, event, seconds))
        except Exception:  # noqa: BLE001 - a console line must never stop the run
            self.handleError(record)


def log_path(pipeline_root: str) -> str:
    """<pipeline_root>/runs/<UTC timestamp>/run.log (the run id is known only when the run ends)."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    return os.path.join(os.path.abspath(pipeline_root), "runs", stamp, "run.log")


def move_log(path: str, run_dir: str) -> str:
    """Moves the finished log into the run's own directory (the one its summary.json is in, named by
    the run id known only at the end) and returns where it is now; the path printed at the start was
    the place to follow it while the run went on."""
    moved = os.path.join(run_dir, os.path.basename(path))
    if os.path.abspath(os.path.dirname(path)) == os.path.abspath(run_dir) or os.path.exists(moved):
        return path
    os.replace(path, moved)
    with contextlib.suppress(OSError):
        os.rmdir(os.path.dirname(path))  # only when empty
    return moved


def command_log_path(pipeline_root: str, command: str) -> str:
    """<pipeline_root>/logs/<command>-<UTC timestamp>.log: where `digits serve`, `digits demo` and `digits kfp`
    put the libraries' output (beside runs/, never in a serving directory another server may read)."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    return os.path.join(os.path.abspath(pipeline_root), "logs", f"{command}-{stamp}.log")


@contextlib.contextmanager
def redirected(path: str, console_fd: int = 1) -> Iterator[IO[str]]:
    """For the duration: descriptors 1 and 2 (and sys.stdout/stderr) go to ``path``, appended to, so that
    TensorFlow's C++ lines and child processes' output land there too; yields a duplicate of the original
    ``console_fd`` for the lines meant for the person."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = {fd: os.dup(fd) for fd in (1, 2)}
    console = os.fdopen(os.dup(saved[console_fd]), "w", buffering=1)
    try:
        with open(path, "a", buffering=1) as log, \
                contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
            os.dup2(log.fileno(), 1)
            os.dup2(log.fileno(), 2)
            try:
                yield console
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                for fd, copy in saved.items():
                    os.dup2(copy, fd)
    finally:
        for copy in saved.values():
            os.close(copy)
        console.close()


@contextlib.contextmanager
def quiet(path: str) -> Iterator[IO[str]]:
    """For the duration: descriptors 1 and 2 (and sys.stdout/stderr, warnings, absl) go to ``path``;
    the yielded console (the original stdout) gets the component and epoch lines."""
    global _console
    handler = ComponentLines()
    absl_logger = logging.getLogger("absl")
    with redirected(path) as console:
        _console = console
        absl_logger.addHandler(handler)
        logging.captureWarnings(True)
        try:
            yield console
        finally:
            logging.captureWarnings(False)
            absl_logger.removeHandler(handler)
            _console = None
