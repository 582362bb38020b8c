"""``digits serve``: the model server on the directory the pipeline pushes to.

    digits serve                              # gRPC :8500, REST :8501, Prometheus at /monitoring/prometheus/metrics
    digits serve --rest_api_port=9001         # any tensorflow_model_server flag; later flags win
    DIGITS_SERVING_DIR=/srv/models digits serve

The serving directory and model name come from the pipeline's config (defaults and DIGITS_* variables),
so this serves exactly what ``digits run`` with the same environment pushed. A relative serving
directory (the default is artifacts/serving) is resolved against the current directory, as ``digits
run`` resolves it: start both from the project's directory, or set DIGITS_SERVING_DIR to an absolute
path. The first line printed names the directory the server watches.

Quiet by default: the terminal shows this command's lines (the directory watched, the log file, each version
loaded, the ports, warnings and errors) while everything else (TensorFlow's start-up lines, the serving
processes' output, every INFO line) goes to <pipeline_root>/logs/serve-<UTC time>.log. ``--verbose`` (or
DIGITS_VERBOSE=1) shows everything live, as ``digits-model-server`` itself always does.
"""
from __future__ import annotations

import logging
import os
import sys
from typing import IO, Optional, Sequence

from pipeline import config as config_lib

# Set by `digits demo` for its `digits serve` child: write the libraries' output into the demo's log.
LOG_ENV = "DIGITS_SERVE_LOG"
# The server's INFO lines the terminal shows (TF Serving's wording); the rest of INFO goes to the log only.
_SHOWN_INFO = ("Successfully loaded servable version", "Running gRPC ModelServer at", "Exporting HTTP/REST API at",
               "Shutting down", "Reloaded --model_config_file")

MONITORING_CONFIG = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                 "serving", "model_servers", "monitoring.config")


def server_flags(config: config_lib.PipelineConfig) -> list:
    """tensorflow_model_server flags for the model the pipeline pushes, on TF Serving's default ports."""
    return ["--port=8500", "--rest_api_port=8501", f"--model_name={config.model_name}",
            f"--model_base_path={os.path.abspath(config.model_serving_dir)}",
            f"--monitoring_config_file={MONITORING_CONFIG}"]


def waits_for_first_push(config: config_lib.PipelineConfig, flags: Sequence[str]) -> bool:
    """Whether the server will wait for ``digits run`` to push a first version: nothing is pushed
    under the config's serving dir, and the flags name no other model source."""
    if any(flag.startswith(("--model_base_path", "--model_config_file")) for flag in flags):
        return False
    try:
        return not any(name.isdigit() for name in os.listdir(os.path.abspath(config.model_serving_dir)))
    except OSError:
        return True


def watched_dir(config: config_lib.PipelineConfig, flags: Sequence[str]) -> Optional[str]:
    """The absolute directory the server watches for versions: the last --model_base_path given (later flags
    win), else the config's; None when --model_config_file names the models instead."""
    values = {}
    for flag in flags:
        name, _, value = flag.partition("=")
        values[name] = value
    if values.get("--model_config_file"):
        return None
    chosen = values.get("--model_base_path")
    return os.path.abspath(chosen or config.model_serving_dir)


def watch_line(config: config_lib.PipelineConfig, flags: Sequence[str], environ=os.environ) -> Optional[str]:
    """The one line that says which directory is watched and where that came from."""
    directory = watched_dir(config, flags)
    if directory is None:
        return None
    given = [flag.partition("=")[2] for flag in flags if flag.startswith("--model_base_path=")]
    if given and given[-1]:
        return f"digits serve: watching {directory} for versions (from --model_base_path)"
    name = config_lib.ENV_PREFIX + "SERVING_DIR"
    source = (f"{name}={environ[name]}" if name in environ else
              f"the default serving_dir {config_lib.PipelineConfig.serving_dir}")
    relative = "" if os.path.isabs(config.serving_dir) else \
        f", relative to the current directory {os.getcwd()} as for `digits run`; set {name} to serve another"
    return (f"digits serve: watching {directory} for versions of model {config.model_name!r} "
            f"({source}{relative})")


class ServerLines(logging.Handler):
    """Echoes the model server's own lines worth a person's attention to the terminal: the INFO lines of
    _SHOWN_INFO and every warning and error of this project's loggers, each distinct line once (the server
    repeats some while it waits for a version; the log keeps every one)."""

    def __init__(self, console: IO[str]) -> None:
        super().__init__(level=logging.INFO)
        self.console = console
        self._shown = set()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            if record.levelno < logging.WARNING and not str(record.msg).startswith(_SHOWN_INFO):
                return
            message = record.getMessage()
            if message in self._shown:
                return
            self._shown.add(message)
            level = "" if record.levelno < logging.WARNING else record.levelname.lower() + ": "
            self.console.write(f"digits serve: {level}{message}\n")
            self.console.flush()
        except Exception:  # noqa: BLE001 - a console line must never stop the server
            self.handleError(record)


def _serve_quietly(flags: Sequence[str], log_path: str) -> int:
    """The server with descriptors 1 and 2 on ``log_path``; ServerLines on the original stderr."""
    from pipeline.runs import console
    from serving.model_servers import main as server

    start = os.path.getsize(log_path) if os.path.exists(log_path) else 0  # the demo's log may hold lines already
    loggers = [logging.getLogger(name) for name in ("digits", "serving")]  # not root: basicConfig must still run
    with console.redirected(log_path, console_fd=2) as terminal:
        handler = ServerLines(terminal)
        for logger in loggers:
            logger.addHandler(handler)
        try:
            code = server.main(list(flags))
        finally:
            for logger in loggers:
                logger.removeHandler(handler)
    if code:  # the server prints a bad flag or config file as "digits-model-server: ..." (into the log here)
        with open(log_path, "rb") as log:
            log.seek(start)
            for line in log:
                if line.startswith(b"digits-model-server: "):
                    sys.stderr.write(line.decode("utf-8", "replace"))
        print(f"digits serve: stopped (exit {code}); the full log is in {log_path}", file=sys.stderr)
    return code


def main(argv: Sequence[str]) -> int:
    from serving.model_servers import main as server

    if any(arg in ("-h", "--help", "--version") for arg in argv):  # nothing is started: no config, no notices
        try:
            if "--version" not in argv:
                print(__doc__.strip() + "\n\nServer flags (tensorflow_model_server's):\n")
            return server.main(list(argv))
        except BrokenPipeError:  # `digits serve --help | head`: the reader left
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # the flush at exit would fail again
            return 1
    try:
        config = config_lib.from_sources([])
    except config_lib.ConfigError as error:
        print(f"digits serve: {error}", file=sys.stderr)
        return 2
    verbose = config.verbose or "--verbose" in argv
    argv = [arg for arg in argv if arg != "--verbose"]  # this command's flag, not the server's
    line = watch_line(config, argv)
    if line:
        print(line, file=sys.stderr, flush=True)
    if waits_for_first_push(config, argv):
        print(f"digits serve: no model version under {os.path.abspath(config.model_serving_dir)} yet. "
              "`make run` pushes one when the Evaluator blesses the model (its summary says why it did not); "
              "the server waits and serves the first version that appears.", file=sys.stderr)
    flags = server_flags(config) + list(argv)
    if verbose:
        return server.main(flags)
    log_path = os.environ.get(LOG_ENV)
    if not log_path:  # under `digits demo`, the demo names its log
        from pipeline.runs import console

        log_path = console.command_log_path(config.pipeline_root, "serve")
        print(f"digits serve: the full log is in {log_path} (--verbose shows it here)", file=sys.stderr, flush=True)
    return _serve_quietly(flags, log_path)
