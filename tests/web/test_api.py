"""The app's API without a browser (the real app process and model server, and in-process apps for the
failure cases) and its config: flags, DIGITS_UI_* variables and one-line errors."""
from __future__ import annotations

import http.server
import io
import json
import threading
import warnings

import numpy as np
import pytest
from PIL import Image, ImageDraw

from serving.client.mnist_image import load_bytes
from tests.server_process import free_port
from tests.web.conftest import http_json
from web.app import create_app
from web.config import ConfigError, WebConfig, from_sources


def in_process(config: WebConfig):
    """The app in this process (Starlette's TestClient): for model servers that are absent or stand-ins."""
    with warnings.catch_warnings():  # its notice that httpx 0.28 (the locked one) will give way to httpx2
        warnings.simplefilter("ignore")
        from fastapi.testclient import TestClient
    return TestClient(create_app(config))


def png(draw=True) -> bytes:
    image = Image.new("L", (280, 280), 0)
    if draw:
        ImageDraw.Draw(image).line([(140, 40), (145, 240)], fill=255, width=20)
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def test_predict_answers_what_the_model_server_says_for_mnist_image_s_input(app, model_server):
    body = png()
    status, answer = http_json(app.port, "POST", "/api/predict", body)
    assert status == 200 and set(answer) == {"digit", "probabilities", "model", "input"}
    prepared = np.round(load_bytes(body, "the drawing"))  # whole gray levels: what feedback stores
    assert np.array_equal(np.asarray(answer["input"], np.float32), prepared)
    _, doc = model_server.rest("POST", "/v1/models/mnist:predict", {"instances": [prepared.tolist()]})
    want = np.asarray(doc["predictions"][0]["probabilities"], np.float32)
    assert np.array_equal(np.asarray(answer["probabilities"], np.float32), want)
    assert answer["digit"] == int(want.argmax()) == 1
    assert answer["model"] == {"name": "mnist", "version": 1}


def test_the_pages_npy_of_its_pixels_reads_as_the_png_of_the_same_pixels(app):
    """The page sends its pad as a .npy (no PNG encode in the browser); image files keep working alike."""
    pixels = np.asarray(Image.open(io.BytesIO(png())), np.uint8)
    npy = io.BytesIO()
    np.save(npy, pixels)
    answers = [http_json(app.port, "POST", "/api/predict", body) for body in (png(), npy.getvalue())]
    assert [status for status, _ in answers] == [200, 200]
    assert answers[0][1]["input"] == answers[1][1]["input"] and answers[1][1]["digit"] == 1


def test_unreadable_empty_and_blank_bodies_are_plain_400s(app):
    status, answer = http_json(app.port, "POST", "/api/predict?name=notes.txt", b"not an image")
    assert status == 400 and answer["error"] == "bad_image"
    assert answer["message"] == ("notes.txt is not a picture this page can open: choose a photo or drawing of one "
                                 "digit (PNG, JPEG, GIF, BMP or WebP).")
    assert answer["detail"] == ("notes.txt is neither an image Pillow can read nor a .npy array: pass a PNG, JPEG, "
                                "BMP, GIF, TIFF or WebP image, or an array saved with numpy.save")
    status, answer = http_json(app.port, "POST", "/api/predict", b"")
    assert (status, answer["message"]) == (400, "the drawing is empty: choose a picture of one digit.")
    assert answer["detail"] == "the drawing is empty: send the contents of an image file"
    status, answer = http_json(app.port, "POST", "/api/predict", png(draw=False))
    assert (status, answer["error"]) == (422, "empty")
    assert answer["message"] == "Nothing to read in the drawing: draw a digit (or upload an image of one)."


def test_model_and_health(app, model_server):
    assert http_json(app.port, "GET", "/api/model") == (
        200, {"name": "mnist", "version": 1, "server": f"http://127.0.0.1:{model_server.rest_port}"})
    assert http_json(app.port, "GET", "/healthz") == (200, {"status": "ok"})


def test_page_and_static_files_are_served(app):
    client_page = in_process(WebConfig())
    page = client_page.get("/")
    assert page.status_code == 200 and 'id="canvas"' in page.text and "/static/app.js" in page.text
    for name, kind in (("app.js", "javascript"), ("style.css", "text/css")):
        response = client_page.get(f"/static/{name}")
        assert response.status_code == 200 and kind in response.headers["content-type"]


def test_model_server_down_is_503_in_plain_words():
    server = f"http://127.0.0.1:{free_port()}"
    client = in_process(WebConfig(server=server, timeout=2))
    detail = f"The model server at {server} is not answering. Start it with `make serve` (or check --server)."
    message = "The model that reads the digits is not answering. This page keeps trying and carries on once it is back."
    for response in (client.get("/api/model"), client.post("/api/predict", content=png())):
        assert response.status_code == 503
        assert response.json() == {"error": "server_down", "message": message, "detail": detail}
    assert client.get("/healthz").status_code == 200


def test_no_model_is_503_in_plain_words(model_server):
    client = in_process(WebConfig(server=f"http://127.0.0.1:{model_server.rest_port}", model_name="nope"))
    for response in (client.get("/api/model"), client.post("/api/predict", content=png())):
        assert response.status_code == 503
        assert response.json() == {
            "error": "no_model",
            "message": "There is no trained model to read the digits yet. This page starts reading as soon as one is "
                       "ready.",
            "detail": "The model server has no model 'nope' yet: push one with `make run`."}


class _Rejecting(http.server.BaseHTTPRequestHandler):
    """A stand-in model server: version 3 is AVAILABLE, and every predict is refused with TF Serving's body."""

    def _send(self, status, doc):
        body = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        self._send(200, {"model_version_status": [{"version": "3", "state": "AVAILABLE",
                                                   "status": {"error_code": "OK", "error_message": ""}}]})

    def do_POST(self):
        self.rfile.read(int(self.headers["Content-Length"]))
        self._send(400, {"error": "Input to reshape is a tensor with 784 values"})

    def log_message(self, *args):
        pass


def test_a_rejected_request_says_what_the_model_server_said():
    stub = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Rejecting)
    threading.Thread(target=stub.serve_forever, daemon=True).start()
    try:
        client = in_process(WebConfig(server=f"http://127.0.0.1:{stub.server_port}"))
        assert client.get("/api/model").json()["version"] == 3
        response = client.post("/api/predict", content=png())
        assert response.status_code == 502
        assert response.json() == {"error": "rejected", "message": "The model could not read this one. Please try again.",
                                   "detail": "The model server rejected the request: "
                                             "Input to reshape is a tensor with 784 values"}
    finally:
        stub.shutdown()
        stub.server_close()


# ---- config ------------------------------------------------------------------------------------------

def test_config_defaults_environment_and_flags():
    assert from_sources([], environ={}) == WebConfig(8080, "0.0.0.0", "http://localhost:8501", "mnist", 5.0)
    env = {"DIGITS_UI_PORT": "9000", "DIGITS_UI_SERVER": "http://tf-serving:8501", "DIGITS_UI_MODEL_NAME": "digits"}
    config = from_sources([], environ=env)
    assert (config.port, config.server, config.model_name) == (9000, "http://tf-serving:8501", "digits")
    config = from_sources(["--port", "9100", "--timeout", "1.5"], environ=env)  # flags win
    assert (config.port, config.timeout, config.model_name) == (9100, 1.5, "digits")
    with pytest.raises(AttributeError):
        config.port = 1  # frozen
    defaults = from_sources([], environ={})
    assert (defaults.data_root, defaults.feedback, defaults.feedback_token, defaults.feedback_per_minute) == \
        ("data", True, "", 30)
    env = {"DIGITS_UI_DATA_ROOT": "/data", "DIGITS_UI_FEEDBACK": "false", "DIGITS_UI_FEEDBACK_TOKEN": "t0ken",
           "DIGITS_UI_FEEDBACK_PER_MINUTE": "0"}
    config = from_sources([], environ=env)
    assert (config.data_root, config.feedback, config.token(), config.feedback_per_minute) == ("/data", False,
                                                                                               "t0ken", 0)
    assert "t0ken" not in repr(config), "the token stays out of logs"
    assert from_sources(["--feedback", "on"], environ=env).feedback is True


@pytest.mark.parametrize("argv, env, message", [
    ([], {"DIGITS_UI_PORT": "eighty"}, "DIGITS_UI_PORT='eighty' is not an integer: Port the page"),
    (["--port", "70000"], {}, "port must be in 1..65535, got 70000"),
    (["--server", "https://models:8501"], {}, "must be an http:// URL"),
    (["--server", "http://models:port"], {}, "server: bad port in server address"),
    (["--model-name", "a/b"], {}, "model name 'a/b' must be letters, digits"),
    (["--timeout", "0"], {}, "timeout must be a positive number of seconds, got 0"),
    ([], {"DIGITS_UI_FEEDBACK": "maybe"}, "DIGITS_UI_FEEDBACK='maybe' is not true or false: Accept labels"),
    (["--data-root", "gs://bucket/data"], {}, "data root 'gs://bucket/data' must be a local or mounted directory"),
    (["--feedback-per-minute", "-1"], {}, "feedback per minute must be 0 (no limit) or more, got -1"),
])
def test_bad_config_values_are_one_line_errors(argv, env, message):
    with pytest.raises(ConfigError) as error:
        from_sources(argv, environ=env)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_digits_ui_bad_value_exits_2_with_one_line(capsys, monkeypatch):
    from pipeline import cli

    monkeypatch.setenv("DIGITS_UI_PORT", "0")
    assert cli.main(["ui"]) == 2
    assert capsys.readouterr().err == "digits ui: port must be in 1..65535, got 0\n"


def test_digits_ui_help_lists_every_option_with_its_variable(capsys):
    from pipeline import cli

    with pytest.raises(SystemExit) as exit_:
        cli.main(["ui", "--help"])
    out = " ".join(capsys.readouterr().out.split())  # argparse wraps lines anywhere
    assert exit_.value.code == 0 and out.startswith("usage: digits ui")
    for name in ("PORT", "HOST", "SERVER", "MODEL_NAME", "TIMEOUT", "DATA_ROOT", "FEEDBACK", "FEEDBACK_TOKEN",
                 "FEEDBACK_TOKEN_FILE", "FEEDBACK_PER_MINUTE"):
        assert f"env DIGITS_UI_{name}" in out
