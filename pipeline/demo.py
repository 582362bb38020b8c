"""``digits demo`` (``make demo``): the model server on what ``make run`` pushed, and the draw-a-digit page.

    digits demo                                   # REST :8501, gRPC :8500, the page on http://localhost:8080
    digits demo --ui-port 9000 --rest_api_port=9001   # any `digits serve` (tensorflow_model_server) flag

Both run as child processes; this waits until both answer, prints the page's URL, and stops both on
Ctrl-C (or SIGTERM). Quiet by default: the terminal shows the model server's own lines (`digits serve`'s:
the directory watched, each version loaded, the ports, errors) and this command's; the rest (TensorFlow's
start-up lines, the page's access log) goes to <pipeline_root>/logs/demo-<UTC time>.log, named at the start.
``--verbose`` (or DIGITS_VERBOSE=1) shows everything live.

If nothing is pushed yet, both still start and this says so; the model server then opens its ports only
once `make run` pushes a first version (as TF Serving does), so until then the page says that the model
server is not answering.
"""
from __future__ import annotations

import argparse
import http.client
import os
import signal
import subprocess
import sys
import time
from typing import List, Optional, Sequence

from pipeline import config as config_lib
from pipeline.runs import console
from pipeline.serve import LOG_ENV, waits_for_first_push

STARTUP_SECONDS = 300  # TensorFlow's import and the first model load on a busy 2-core machine
# The page's app without its own URL line or uvicorn's: the one URL is printed here once both answer.
_QUIET_UI = "import sys; from web.server import main; sys.exit(main(sys.argv[1:], 'digits demo', announce=False))"


class _Stop(Exception):
    """SIGTERM, handled like Ctrl-C."""


def _raise_stop(*_) -> None:
    raise _Stop()


def _flag(flags: Sequence[str], name: str) -> Optional[str]:
    """The last ``--name=value`` of tensorflow_model_server's flags (later flags win, as in serve)."""
    values = [f.split("=", 1)[1] for f in flags if f.startswith(f"--{name}=")]
    return values[-1] if values else None


def _answers(port: int, path: str, ok=(200,)) -> bool:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    try:
        connection.request("GET", path)
        return connection.getresponse().status in ok
    except (OSError, http.client.HTTPException):
        return False
    finally:
        connection.close()


def _stop(children: List[subprocess.Popen]) -> None:
    for child in children:
        if child.poll() is None:
            child.terminate()
    for child in children:
        try:
            child.wait(30)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="digits demo", add_help=False, allow_abbrev=False)
    parser.add_argument("--ui-port", type=int, help="the page's port (default: $DIGITS_UI_PORT, else 8080)")
    parser.add_argument("--verbose", action="store_true", help="every library's output live, not in the log file")
    parser.add_argument("-h", "--help", action="store_true")
    return parser


def main(argv: Sequence[str]) -> int:
    args, serve_flags = _parser().parse_known_args(list(argv))
    if args.help:
        print(__doc__.strip())
        return 0
    try:
        config = config_lib.from_sources([])
    except config_lib.ConfigError as error:
        print(f"digits demo: {error}", file=sys.stderr)
        return 2
    from web import config as web_config

    model = _flag(serve_flags, "model_name") or config.model_name
    rest_port = int(_flag(serve_flags, "rest_api_port") or 8501)
    ui_argv = ["--server", f"http://localhost:{rest_port}", "--model-name", model]
    ui_argv += ["--port", str(args.ui_port)] if args.ui_port is not None else []
    try:
        ui = web_config.from_sources(ui_argv, prog="digits demo")
    except web_config.ConfigError as error:
        print(f"digits demo: {error}", file=sys.stderr)
        return 2

    serve_env, ui_output, where = dict(os.environ), None, "above"
    if not (args.verbose or config.verbose):  # the serve child writes into the same log, echoing its own lines
        log_path = console.command_log_path(config.pipeline_root, "demo")
        os.makedirs(os.path.dirname(log_path), exist_ok=True)
        print(f"digits demo: the full log is in {log_path} (--verbose shows it here)", flush=True)
        serve_env[LOG_ENV] = log_path
        ui_output, where = open(log_path, "a", buffering=1), f"in {log_path}"
    elif args.verbose:
        serve_flags.append("--verbose")
    signal.signal(signal.SIGTERM, _raise_stop)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even when started in the background, where it is ignored
    children = []
    try:
        children.append(subprocess.Popen([sys.executable, "-m", "pipeline.cli", "serve", *serve_flags], env=serve_env))
        children.append(subprocess.Popen([sys.executable, "-c", _QUIET_UI, *ui_argv], stdout=ui_output,
                                         stderr=ui_output))
        names = ("the model server", "the page's app")
        deadline = time.monotonic() + STARTUP_SECONDS
        waits_for_model = waits_for_first_push(config, serve_flags)
        while not ((waits_for_model or _answers(rest_port, f"/v1/models/{model}", ok=(200, 404)))
                   and _answers(ui.port, "/healthz")):
            for name, child in zip(names, children):
                if child.poll() is not None:
                    print(f"digits demo: {name} stopped (exit {child.returncode}) before answering; its messages "
                          f"are {where}.", file=sys.stderr)
                    _stop(children)
                    return 1
            if time.monotonic() > deadline:
                print(f"digits demo: not answering after {STARTUP_SECONDS} s; stopping.", file=sys.stderr)
                _stop(children)
                return 1
            time.sleep(0.3)
        print(f"\ndigits demo: open http://localhost:{ui.port}  (model server REST on :{rest_port}; "
              f"Ctrl-C stops both)", flush=True)
        if waits_for_model:
            print(f"digits demo: nothing is pushed under {os.path.abspath(config.model_serving_dir)} yet: the model "
                  f"server opens its ports once `make run` pushes a version; until then the page says the model "
                  f"server is not answering.", flush=True)
        else:
            print(_model_line(rest_port, model), flush=True)
        while True:
            for name, child in zip(names, children):
                if child.poll() is not None:
                    print(f"digits demo: {name} stopped (exit {child.returncode}); stopping the other. Its "
                          f"messages are {where}.", file=sys.stderr)
                    _stop(children)
                    return 1
            time.sleep(0.5)
    except (KeyboardInterrupt, _Stop):
        print("\ndigits demo: stopping the page and the model server", file=sys.stderr, flush=True)
        _stop(children)
        return 0
    finally:
        if ui_output is not None:
            ui_output.close()


def _model_line(rest_port: int, model: str) -> str:
    from serving.client.model_client import ClientError, ModelClient

    try:
        version = ModelClient(f"localhost:{rest_port}", model).available_version()
    except ClientError:
        version = None
    if version is None:
        return (f"digits demo: no version of '{model}' is serving yet: `make run` pushes one (the server picks "
                f"it up); until then the page says so.")
    return f"digits demo: model '{model}' version {version} is serving."
