"""``POST /api/feedback``: the real app process stores the 28×28 its model saw, with the label, the model's
answer and version, in the open span; in-process apps (Starlette's TestClient, the real SpanStore on a
temporary data root) for the refusals and limits; a store held up on a gate while predictions answer."""
from __future__ import annotations

import datetime
import json
import threading
import warnings

import numpy as np
import pytest

from components.data.spans import SpanStore
from serving.client.mnist_image import load_bytes
from tests.web.conftest import http_json
from tests.web.test_api import png
from web import server
from web.app import create_app
from web.config import ConfigError, WebConfig
from web.feedback import MAX_BODY, RateLimiter


def client_for(config: WebConfig, store=None, address: str = "testclient"):
    with warnings.catch_warnings():  # its notice that httpx 0.28 (the locked one) will give way to httpx2
        warnings.simplefilter("ignore")
        from fastapi.testclient import TestClient
    return TestClient(create_app(config, store), client=(address, 50000))


def digit() -> list:
    image = np.zeros((28, 28), np.int64)
    image[4:24, 12:16] = 255
    image[4:24, 11] = 90
    return image.tolist()


def feedback(label=7, image=None, answer=1, model_version=1) -> dict:
    return {"image": digit() if image is None else image, "label": label, "answer": answer,
            "model_version": model_version}


def open_files(root) -> list:
    return sorted((root / "spans" / "open").glob("*.npz")) if (root / "spans" / "open").exists() else []


def test_feedback_stores_exactly_the_28x28_the_model_saw(app):
    body = png()
    status, answer = http_json(app.port, "POST", "/api/predict", body)
    assert status == 200
    seen = np.asarray(answer["input"], np.float32)
    assert np.array_equal(seen, np.round(load_bytes(body, "the drawing"))), "the model sees whole gray levels"
    before = datetime.datetime.now(datetime.timezone.utc)
    status, saved = http_json(app.port, "POST", "/api/feedback",
                              {"image": answer["input"], "label": 7, "answer": answer["digit"],
                               "model_version": answer["model"]["version"]})
    assert status == 201, saved
    assert saved == {"id": saved["id"], "label": 7, "answer": 1, "model_version": 1,
                     "message": "Thanks — saved for the next training run."}
    (path,) = [p for p in open_files(app.data_root) if p.stem == saved["id"]]
    with np.load(path) as stored:
        assert stored["image"].dtype == np.uint8 and stored["image"].shape == (28, 28)
        assert np.array_equal(stored["image"].astype(np.float32), seen)
        assert (int(stored["label"]), int(stored["answer"]), int(stored["model_version"])) == (7, 1, 1)
        assert str(stored["source"]) == "feedback"
        when = datetime.datetime.strptime(str(stored["time"]), "%Y-%m-%dT%H:%M:%S.%fZ")
        assert abs(when.replace(tzinfo=datetime.timezone.utc) - before).total_seconds() < 60
        assert set(stored.files) == {"image", "label", "answer", "model_version", "time", "source"}, \
            "nothing about who sent it"
    assert not [p for p in (app.data_root / "spans" / "open").iterdir() if not p.name.endswith(".npz")], \
        "no temporary file is left"
    assert SpanStore(str(app.data_root)).open_count() == len(open_files(app.data_root))


def test_no_answer_and_no_version_are_stored_as_minus_one(tmp_path):
    client = client_for(WebConfig(data_root=str(tmp_path)))
    response = client.post("/api/feedback", json=feedback(label=3, answer=None, model_version=None))
    assert response.status_code == 201
    with np.load(open_files(tmp_path)[0]) as stored:
        assert (int(stored["label"]), int(stored["answer"]), int(stored["model_version"])) == (3, -1, -1)
        assert np.array_equal(stored["image"], np.asarray(digit(), np.uint8))


@pytest.mark.parametrize("label", [10, -1, "7", True, 2.5, None])
def test_a_bad_label_is_a_400_naming_the_field(tmp_path, label):
    client = client_for(WebConfig(data_root=str(tmp_path)))
    response = client.post("/api/feedback", json=feedback(label=label))
    assert response.status_code == 400
    assert response.json() == {"error": "bad_label", "message": "The label must be one digit, 0 to 9.",
                               "detail": f"label must be a whole number 0..9, got {json.dumps(label)}"}
    assert not open_files(tmp_path)


@pytest.mark.parametrize("image, got", [
    (digit()[:27], "27 rows"),
    ([row[:27] for row in digit()], "rows of 27 numbers"),
    ([[256] * 28] * 28, "the value 256"),
    ([[-1] * 28] * 28, "the value -1"),
    ([[0.5] * 28] * 28, "the value 0.5"),
    ([[None] * 28] * 28, "the value null"),
    ([[[0]] * 28] * 28, "the value [0]"),
    ("pixels", "a JSON str"),
])
def test_an_image_that_is_not_28_by_28_levels_is_a_400(tmp_path, image, got):
    client = client_for(WebConfig(data_root=str(tmp_path)))
    response = client.post("/api/feedback", json=feedback(image=image))
    assert response.status_code == 400
    assert response.json() == {
        "error": "bad_image", "message": "The feedback's image is not the 28 by 28 digit the model read. Please try "
                                         "again.",
        "detail": f"image must be 28 rows of 28 whole numbers 0..255 (the predict answer's input), got {got}"}
    missing = client.post("/api/feedback", json={"label": 1})
    assert missing.status_code == 400 and missing.json()["detail"].endswith("got nothing")
    assert not open_files(tmp_path)


def test_bad_json_answer_and_version_are_400s(tmp_path):
    client = client_for(WebConfig(data_root=str(tmp_path)))
    for body, kind, detail in (
            (b"{not json", "bad_json", "the body must be a JSON object {image, label, answer, model_version}: "),
            (b"[1, 2]", "bad_json", "got a JSON list"),
            (json.dumps(feedback(answer=11)).encode(), "bad_answer", "answer must be a whole number 0..9 or null, "
                                                                      "got 11"),
            (json.dumps(feedback(model_version="2")).encode(), "bad_model_version",
             'model_version must be a whole number 0 or more or null, got "2"')):
        response = client.post("/api/feedback", content=body)
        assert response.status_code == 400 and response.json()["error"] == kind, response.json()
        assert detail in response.json()["detail"]
        assert response.json()["message"] == "The feedback could not be read. Please try again."
    assert client.post("/api/feedback", json=feedback(image=np.asarray(digit(), float).tolist())).status_code == 201


def test_a_body_too_big_for_a_digit_is_a_413(tmp_path):
    client = client_for(WebConfig(data_root=str(tmp_path)))
    big = json.dumps(feedback()).encode() + b" " * MAX_BODY
    want = {"error": "too_large", "message": "The feedback is too big to be a digit.",
            "detail": f"A feedback body is at most {MAX_BODY} bytes (28x28 numbers as JSON need far less)."}
    response = client.post("/api/feedback", content=big)  # with Content-Length
    assert (response.status_code, response.json()) == (413, want)
    chunked = client.post("/api/feedback", content=iter([big[:40_000], big[40_000:]]))  # without
    assert "content-length" not in chunked.request.headers
    assert (chunked.status_code, chunked.json()) == (413, want)
    assert not open_files(tmp_path)


def test_each_client_address_is_limited_per_minute(tmp_path):
    config = WebConfig(data_root=str(tmp_path), feedback_per_minute=3)
    app = create_app(config)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from fastapi.testclient import TestClient
    first, second = (TestClient(app, client=(address, 50000)) for address in ("10.0.0.1", "10.0.0.2"))
    assert [first.post("/api/feedback", json=feedback()).status_code for _ in range(3)] == [201] * 3
    refused = first.post("/api/feedback", json=feedback())
    assert refused.status_code == 429 and 1 <= int(refused.headers["retry-after"]) <= 20
    assert refused.json() == {"error": "too_many", "message": f"That is a lot of feedback at once: please wait "
                                                              f"{refused.headers['retry-after']} s and try again.",
                              "detail": f"More than 3 feedback requests a minute from this address; retry after "
                                        f"{refused.headers['retry-after']} s."}
    assert second.post("/api/feedback", json=feedback()).status_code == 201, "another address has its own"
    assert len(open_files(tmp_path)) == 4


def test_the_token_bucket_refills_over_the_minute():
    now = [100.0]
    limiter = RateLimiter(6, clock=lambda: now[0])  # one more every 10 s
    assert [limiter.take("a") for _ in range(6)] == [0.0] * 6
    assert limiter.take("a") == pytest.approx(10.0)
    now[0] += 5
    assert limiter.take("a") == pytest.approx(5.0)
    now[0] += 5
    assert limiter.take("a") == 0.0 and limiter.take("a") == pytest.approx(10.0)
    now[0] += 3600  # a long pause refills to the burst size, no more
    assert [limiter.take("a") for _ in range(7)].count(0.0) == 6
    unlimited = RateLimiter(0)
    assert all(unlimited.take("a") == 0.0 for _ in range(1000))


def test_feedback_off_is_a_403_and_the_page_hides_its_buttons(tmp_path):
    root = tmp_path / "data"
    client = client_for(WebConfig(data_root=str(root), feedback=False))
    assert client.get("/api/feedback/status").json() == {"enabled": False, "token_required": False,
                                                         "per_minute": 30}
    response = client.post("/api/feedback", json=feedback())
    assert response.status_code == 403
    assert response.json() == {"error": "feedback_off", "message": "Feedback is turned off on this site.",
                               "detail": "Feedback is off (DIGITS_UI_FEEDBACK=false or --feedback false)."}
    assert not root.exists(), "nothing is written when feedback is off"


def test_a_configured_token_is_required(tmp_path):
    client = client_for(WebConfig(data_root=str(tmp_path), feedback_token="s3cret-token"))
    assert client.get("/api/feedback/status").json()["token_required"] is True
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic s3cret-token"},
                    {"Authorization": "Bearer s3cret-token-and-more"}):
        response = client.post("/api/feedback", json=feedback(), headers=headers)
        assert response.status_code == 401 and response.headers["www-authenticate"] == "Bearer"
        assert response.json() == {"error": "unauthorized", "message": "Feedback needs a token on this site.",
                                   "detail": "Send the feedback token as `Authorization: Bearer <token>` (the "
                                             "app's DIGITS_UI_FEEDBACK_TOKEN)."}
    assert not open_files(tmp_path)
    response = client.post("/api/feedback", json=feedback(), headers={"Authorization": "Bearer s3cret-token"})
    assert response.status_code == 201 and len(open_files(tmp_path)) == 1


def test_the_token_can_come_from_a_file_and_a_missing_file_stops_the_app(tmp_path, capsys):
    secret = tmp_path / "token"
    secret.write_text("from-a-secret\n")
    client = client_for(WebConfig(data_root=str(tmp_path / "data"), feedback_token_file=str(secret)))
    assert client.post("/api/feedback", json=feedback(), headers={"Authorization": "Bearer x"}).status_code == 401
    ok = client.post("/api/feedback", json=feedback(), headers={"Authorization": "Bearer from-a-secret"})
    assert ok.status_code == 201
    missing = tmp_path / "nope"
    assert server.main(["--feedback-token-file", str(missing), "--port", "1"], prog="digits ui") == 2
    assert capsys.readouterr().err == (f"digits ui: cannot read the feedback token file {missing}: "
                                       f"No such file or directory\n")
    with pytest.raises(ConfigError, match="not both"):
        WebConfig(feedback_token="a", feedback_token_file=str(secret))


class GatedStore(SpanStore):
    """The real store, whose appends wait at a gate: a disk that has stalled."""

    def __init__(self, root: str):
        super().__init__(root)
        self.gate, self.waiting = threading.Event(), threading.Semaphore(0)

    def append(self, *args, **kwargs) -> str:
        self.waiting.release()
        assert self.gate.wait(120), "the test never opened the gate"
        return super().append(*args, **kwargs)


def test_predictions_answer_while_stores_are_stalled(tmp_path, model_server):
    """More stalled stores than the threads predictions run on (40): predictions still answer at once."""
    store = GatedStore(str(tmp_path))
    config = WebConfig(server=f"http://127.0.0.1:{model_server.rest_port}", data_root=str(tmp_path),
                       feedback_per_minute=0)
    stalled, results = 45, []
    with client_for(config, store) as client:  # one event loop for every request, as in the real server
        senders = [threading.Thread(target=lambda: results.append(
            client.post("/api/feedback", json=feedback()).status_code)) for _ in range(stalled)]
        for sender in senders:
            sender.start()
        assert store.waiting.acquire(timeout=60), "no store started"
        answers = []
        predicting = threading.Thread(target=lambda: answers.extend(
            client.post("/api/predict", content=png()) for _ in range(3)))
        predicting.start()
        predicting.join(30)
        waited = predicting.is_alive()
        store.gate.set()  # whatever happened: let the stores finish
        predicting.join(60)
        assert not waited, "predictions waited for the stalled stores"
        assert [(r.status_code, r.json()["digit"]) for r in answers] == [(200, 1)] * 3
        for sender in senders:
            sender.join(120)
    assert results == [201] * stalled and len(open_files(tmp_path)) == stalled
