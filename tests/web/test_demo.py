"""``digits demo`` as ``make demo`` runs it on a fresh clone, nothing pushed: both processes start, the
launcher prints the page's URL and says nothing is pushed (the model server, like TF Serving, opens its
ports only once a version exists, so the page says it is not answering), and SIGINT stops both. With a
version pushed, a clean start shows only the demo's and the model server's own lines, the libraries' output
going to a log file (or showing live with --verbose)."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading

from tests.quiet_output import clean_env, noise_lines, output_until, push_half_plus_two
from tests.server_process import REPO, free_port, wait_for
from tests.web.conftest import http_json


def answers(port: int) -> bool:
    try:
        http_json(port, "GET", "/healthz", timeout=2)
        return True
    except (OSError, ValueError):
        return False


def test_demo_starts_both_says_no_model_yet_and_stops_both_on_ctrl_c(tmp_path):
    ui_port, rest_port, grpc_port = free_port(), free_port(), free_port()
    env = dict(os.environ, TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1",
               DIGITS_SERVING_DIR=str(tmp_path / "serving"),  # a fresh clone: nothing pushed
               DIGITS_PIPELINE_ROOT=str(tmp_path / "root"))
    demo = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "demo", "--ui-port", str(ui_port),
                             f"--rest_api_port={rest_port}", f"--port={grpc_port}"],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    reader = threading.Thread(target=lambda: lines.extend(demo.stdout), daemon=True)
    reader.start()
    try:
        wait_for(lambda: any("digits demo: open" in line for line in lines) or demo.poll() is not None,
                 timeout=240, what="digits demo to print the page's URL")
        output = "".join(lines)
        assert f"digits demo: open http://localhost:{ui_port}" in output, output
        assert f"digits demo: nothing is pushed under {tmp_path / 'serving' / 'mnist'} yet" in output
        status, answer = http_json(ui_port, "GET", "/api/model")
        assert (status, answer["error"]) == (503, "server_down")
        assert answer["detail"].startswith(f"The model server at http://localhost:{rest_port} is not answering.")
        demo.send_signal(signal.SIGINT)
        assert demo.wait(60) == 0
    finally:
        if demo.poll() is None:  # a failed test: stop it as Ctrl-C would, so its children go too
            demo.send_signal(signal.SIGINT)
            try:
                demo.wait(60)
            except subprocess.TimeoutExpired:
                demo.kill()
                demo.wait()
    reader.join(10)
    assert "digits demo: stopping the page and the model server" in "".join(lines)
    urls = [line for line in lines if "http://" in line]  # one URL, printed once both answer
    assert len(urls) == 1 and urls[0].startswith(f"digits demo: open http://localhost:{ui_port}"), "".join(lines)
    assert not answers(ui_port) and not answers(rest_port), "both children are gone"


def demo_output(tmp_path, serving_dir, *flags):
    """`digits demo` started as from a new shell until it says which version serves; then SIGTERM."""
    ui_port, rest_port = free_port(), free_port()
    env = clean_env(DIGITS_SERVING_DIR=str(serving_dir), DIGITS_PIPELINE_ROOT=str(tmp_path / "root"))
    code, out = output_until([sys.executable, "-m", "pipeline.cli", "demo", "--ui-port", str(ui_port),
                              f"--rest_api_port={rest_port}", f"--port={free_port()}", *flags], env,
                             lambda out: "is serving." in out, what="digits demo to say which version serves")
    return code, out, ui_port, rest_port


def test_a_clean_demo_shows_its_own_lines_and_logs_the_libraries(tmp_path):
    serving_dir = tmp_path / "serving"
    version = push_half_plus_two(str(serving_dir))
    code, out, ui_port, rest_port = demo_output(tmp_path, serving_dir)
    assert code == 0, out
    assert noise_lines(out) == [], out
    lines = [line for line in out.splitlines() if line]
    assert len(lines) <= 12, out
    log_path = re.fullmatch(r"digits demo: the full log is in (.*) \(--verbose shows it here\)", lines[0]).group(1)
    assert re.fullmatch(re.escape(str(tmp_path / "root" / "logs")) + r"/demo-\d{8}T\d{6}Z\.log", log_path)
    assert lines[1].startswith(f"digits serve: watching {serving_dir / 'mnist'} for versions of model 'mnist'")
    assert f"digits serve: Successfully loaded servable version {{name: mnist version: {version}}}" in lines
    assert f"digits serve: Exporting HTTP/REST API at:localhost:{rest_port} ..." in lines
    assert any(line.startswith(f"digits demo: open http://localhost:{ui_port}  (") for line in lines), out
    assert f"digits demo: model 'mnist' version {version} is serving." in lines
    assert out.count("the full log is in") == 1, out  # the model server writes into the demo's log
    with open(log_path) as f:
        log = f.read()
    assert "I digits.model_server] Exporting HTTP/REST API at:" in log and noise_lines(log), log[-3000:]


def test_demo_verbose_shows_the_libraries_live(tmp_path):
    serving_dir = tmp_path / "serving"
    push_half_plus_two(str(serving_dir))
    code, out, _, _ = demo_output(tmp_path, serving_dir, "--verbose")
    assert code == 0, out
    assert noise_lines(out) and "I digits.model_server] Exporting HTTP/REST API at:" in out, out
    assert "the full log is in" not in out and not (tmp_path / "root" / "logs").exists()
