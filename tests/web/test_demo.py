"""``digits demo`` as ``make demo`` runs it on a fresh clone, nothing pushed: both processes start, the
launcher prints the page's URL and says nothing is pushed (the model server, like TF Serving, opens its
ports only once a version exists, so the page says it is not answering), and SIGINT stops both."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading

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
               DIGITS_SERVING_DIR=str(tmp_path / "serving"))  # a fresh clone: nothing pushed
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
