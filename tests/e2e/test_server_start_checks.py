"""What a user sees before the model server serves: a port another program holds is refused (naming the
holder) with one serving process or several, ``digits serve --help`` is only the help, ``digits serve`` says
which directory it watches, and ``python -m serving`` under a Python without the dependencies says so in
one line."""
import os

os.environ["TF_USE_LEGACY_KERAS"] = "1"

import socket  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402

import pytest  # noqa: E402

from pipeline import config as config_lib  # noqa: E402
from pipeline import serve  # noqa: E402
from serving.model_servers import ports  # noqa: E402
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
