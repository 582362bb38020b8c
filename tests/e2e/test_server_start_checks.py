"""What a user sees before the model server serves: a port another program holds is refused (naming the
holder) with one serving process or several, ``digits serve --help`` is only the help, ``digits serve`` says
which directory it watches, shows its own lines with the libraries' output in a log file (or live with
--verbose), and ``python -m serving`` under a Python without the dependencies says so in
one line."""
import os

os.environ["TF_USE_LEGACY_KERAS"] = "1"

import http.client  # noqa: E402
import re  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402

import pytest  # noqa: E402

from pipeline import config as config_lib  # noqa: E402
from pipeline import serve  # noqa: E402
from serving.model_servers import ports  # noqa: E402
from tests.quiet_output import clean_env, noise_lines, output_until, push_half_plus_two  # noqa: E402
from tests.server_process import REPO, free_port, stop_process, wait_for  # noqa: E402

ENV = dict(os.environ, TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1")


def listening_socket(port: int) -> socket.socket:
    """A listener as a gRPC server holds one: SO_REUSEPORT set, so another SO_REUSEPORT bind would share it."""
    holder = socket.socket()
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    holder.bind(("0.0.0.0", port))
    holder.listen()
    return holder


def test_a_held_port_is_taken_and_its_holder_named():
    port = free_port()
    assert not ports.is_taken(port)
    with listening_socket(port):
        assert ports.is_taken(port)
        assert any(held.startswith(f"pid {os.getpid()} (") for held in ports.holders(port))
    assert not ports.is_taken(port)


@pytest.mark.parametrize("processes", [1, 2])
@pytest.mark.parametrize("held", ["port", "rest_api_port"])
def test_a_port_another_program_listens_on_is_refused(tmp_path, processes, held):
    flags = {"port": free_port(), "rest_api_port": free_port()}
    with listening_socket(flags[held]):
        result = subprocess.run(
            [sys.executable, "-m", "serving", f"--num_serving_processes={processes}", "--model_name=m",
             f"--model_base_path={tmp_path / 'm'}", *(f"--{name}={port}" for name, port in flags.items())],
            cwd=REPO, env=ENV, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1, result.stderr
    assert (f"Failed to start the server: port {flags[held]} (--{held}) is already in use by pid {os.getpid()} ("
            in result.stderr), result.stderr
    assert "Traceback" not in result.stderr and "Running gRPC ModelServer" not in result.stderr


def test_digits_serve_help_is_only_the_help(tmp_path):
    """Started where nothing was pushed: no notice about a missing model before the help."""
    result = subprocess.run([sys.executable, "-m", "pipeline.cli", "serve", "--help"], cwd=tmp_path, env=ENV,
                            capture_output=True, text=True, timeout=120)
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout.startswith("``digits serve``: the model server")
    assert "usage: digits-model-server" in result.stdout


def test_watch_line_names_the_directory_and_where_it_comes_from(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    default = config_lib.from_sources([], environ={})
    line = serve.watch_line(default, [], environ={})
    assert line.startswith(f"digits serve: watching {tmp_path / 'artifacts' / 'serving' / 'mnist'} for versions "
                           f"of model 'mnist' (the default serving_dir artifacts/serving, relative to the current "
                           f"directory {tmp_path}")
    environ = {"DIGITS_SERVING_DIR": "/srv/models", "DIGITS_MODEL_NAME": "digits"}
    line = serve.watch_line(config_lib.from_sources([], environ=environ), [], environ=environ)
    assert line == "digits serve: watching /srv/models/digits for versions of model 'digits' " \
                   "(DIGITS_SERVING_DIR=/srv/models)"
    assert serve.watch_line(default, ["--model_base_path=/a", "--model_base_path=/b"], environ={}) == \
        "digits serve: watching /b for versions (from --model_base_path)"
    assert serve.watch_line(default, ["--model_config_file=/etc/models.config"], environ={}) is None


def test_digits_serve_prints_the_watched_directory_first(tmp_path):
    env = dict(ENV, DIGITS_SERVING_DIR=str(tmp_path / "serving"))
    server = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "serve", f"--port={free_port()}",
                               f"--rest_api_port={free_port()}"], cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
    lines = []
    threading.Thread(target=lambda: lines.extend(server.stderr), daemon=True).start()
    try:
        wait_for(lambda: len(lines) >= 2 or server.poll() is not None, timeout=60, what="digits serve's first lines")
    finally:
        stop_process(server, 30)
    assert lines[0] == f"digits serve: watching {tmp_path / 'serving' / 'mnist'} for versions of model 'mnist' " \
                       f"(DIGITS_SERVING_DIR={tmp_path / 'serving'})\n"
    assert lines[1].startswith(f"digits serve: no model version under {tmp_path / 'serving' / 'mnist'} yet.")


def test_python_m_serving_without_the_dependencies_says_so_in_one_line():
    """-S leaves site-packages off the path: the Python a user without the virtualenv runs."""
    result = subprocess.run([sys.executable, "-S", "-m", "serving", "--help"], cwd=REPO, env=ENV,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.startswith(f"python -m serving: this Python ({sys.executable}) cannot import ")
    assert "pip install -r requirements.lock -e ." in result.stderr


@pytest.mark.parametrize("command", [["serving"], ["pipeline.cli", "serve"]])
def test_help_into_a_closed_pipe_ends_without_a_traceback(command):
    """`python -m serving --help | head -1`: the reader is gone (here before the first write)."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        result = subprocess.run([sys.executable, "-m", *command, "--help"], cwd=REPO, env=ENV, stdout=write_end,
                                stderr=subprocess.PIPE, text=True, timeout=60)
    finally:
        os.close(write_end)
    assert (result.returncode, result.stderr) == (1, "")


@pytest.fixture(scope="module")
def pushed(tmp_path_factory):
    """A serving directory with one version of "mnist" pushed (half_plus_two: the wrapper never predicts)."""
    serving_dir = tmp_path_factory.mktemp("pushed") / "serving"
    return serving_dir, push_half_plus_two(str(serving_dir))


def digits_serve_output(tmp_path, serving_dir, *flags):
    """`digits serve` started as from a new shell, until it answers on REST; then SIGTERM. (exit code, output)."""
    rest_port = free_port()
    env = clean_env(DIGITS_SERVING_DIR=str(serving_dir), DIGITS_PIPELINE_ROOT=str(tmp_path / "root"))
    return output_until([sys.executable, "-m", "pipeline.cli", "serve", f"--port={free_port()}",
                         f"--rest_api_port={rest_port}", *flags], env,
                        lambda out: "Exporting HTTP/REST API at:" in out and http_status(rest_port) == 200,
                        what="digits serve to answer on REST")


def http_status(port: int) -> int:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    try:
        connection.request("GET", "/v1/models/mnist")
        return connection.getresponse().status
    except (OSError, http.client.HTTPException):
        return 0
    finally:
        connection.close()


def test_digits_serve_shows_its_own_lines_and_logs_the_libraries(tmp_path, pushed):
    serving_dir, version = pushed
    code, out = digits_serve_output(tmp_path, serving_dir)
    assert code == 0, out
    assert noise_lines(out) == [], out
    lines = out.splitlines()
    assert len(lines) <= 8, out
    assert lines[0].startswith(f"digits serve: watching {serving_dir / 'mnist'} for versions of model 'mnist'")
    log_path = re.fullmatch(r"digits serve: the full log is in (.*) \(--verbose shows it here\)", lines[1]).group(1)
    assert re.fullmatch(re.escape(str(tmp_path / "root" / "logs")) + r"/serve-\d{8}T\d{6}Z\.log", log_path)
    assert f"digits serve: Successfully loaded servable version {{name: mnist version: {version}}}" in lines
    assert any(line.startswith("digits serve: Running gRPC ModelServer at 0.0.0.0:") for line in lines), out
    assert any(line.startswith("digits serve: Exporting HTTP/REST API at:localhost:") for line in lines), out
    with open(log_path) as f:
        log = f.read()
    assert "I digits.model_server] Running gRPC ModelServer at" in log and noise_lines(log), log[-3000:]


def test_digits_serve_verbose_shows_the_libraries_live(tmp_path, pushed):
    code, out = digits_serve_output(tmp_path, pushed[0], "--verbose")
    assert code == 0, out
    assert noise_lines(out) and "I digits.model_server] Exporting HTTP/REST API at:" in out, out
    assert "the full log is in" not in out and not (tmp_path / "root" / "logs").exists()


def test_digits_serve_shows_a_bad_flag_and_where_the_log_is(tmp_path, pushed):
    env = clean_env(DIGITS_SERVING_DIR=str(pushed[0]), DIGITS_PIPELINE_ROOT=str(tmp_path / "root"))
    result = subprocess.run([sys.executable, "-m", "pipeline.cli", "serve", "--rest_api_port=abc"], cwd=REPO,
                            env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "digits-model-server: Couldn't interpret value 'abc' for flag --rest_api_port" in result.stderr
    assert re.search(r"^digits serve: stopped \(exit 2\); the full log is in .*/serve-\d{8}T\d{6}Z\.log$",
                     result.stderr, re.M), result.stderr


def test_server_lines_show_the_announcements_and_each_warning_once():
    import io
    import logging

    terminal = io.StringIO()
    handler = serve.ServerLines(terminal)

    def emit(level, msg, *args):
        handler.emit(logging.LogRecord("serving.core.model_registry", level, __file__, 1, msg, args, None))

    emit(logging.INFO, "Serving with %d processes (pids %s).", 2, "1, 2")
    emit(logging.INFO, "Successfully loaded servable version {name: %s version: %d}", "mnist", 7)
    for _ in range(3):
        emit(logging.WARNING, "Waiting for a version of %s to appear", "mnist")
    emit(logging.ERROR, "Loading servable: {name: %s version: %d} failed: %s", "mnist", 8, "bad")
    assert terminal.getvalue().splitlines() == [
        "digits serve: Successfully loaded servable version {name: mnist version: 7}",
        "digits serve: warning: Waiting for a version of mnist to appear",
        "digits serve: error: Loading servable: {name: mnist version: 8} failed: bad"]
