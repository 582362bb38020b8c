"""serving.rest_api.api against a real server on 127.0.0.1 over a ModelRegistry serving the conftest SavedModel
as version 1. Expected texts and shapes are TF Serving 2.16.1's (http_rest_api_handler.cc,
http_rest_api_util.cc, http_server.cc, libevent's evhttp_send_error)."""
import gzip
import http.client
import json
import os
import threading

os.environ["TF_USE_LEGACY_KERAS"] = "1"

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from serving.model_servers.metrics import ServingMetrics  # noqa: E402
from serving.rest_api.transport import RestServer  # noqa: E402
from tests.component.conftest import serve_export  # noqa: E402

B = 8  # images per request
METRICS_PATH = "/monitoring/prometheus/metrics"


@pytest.fixture(scope="module")
def server(tmp_path_factory, digits_export):
    registry, _ = serve_export(tmp_path_factory, digits_export, version_labels={"stable": 1})
    rest = RestServer(registry, 0, host="127.0.0.1")
    rest.start()
    yield rest
    rest.stop()


@pytest.fixture(scope="module")
def served_model(server):
    return server.api.registry.get("digits")[1]


def call(server, method, path, body=None, headers=None):
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    try:
        if isinstance(body, (dict, list)):
            body = json.dumps(body)
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.getheader("Content-Type"), response.read().decode()
    finally:
        conn.close()


def call_json(server, method, path, body=None, headers=None):
    status, content_type, text = call(server, method, path, body, headers)
    assert content_type == "application/json", text
    return status, json.loads(text)


def error(server, method, path, body=None, headers=None):
    status, doc = call_json(server, method, path, body, headers)
    assert list(doc) == ["error"], doc
    return status, doc["error"]


# ---- status and metadata -----------------------------------------------------------------------------

def test_model_status(server):
    want = {"model_version_status": [{"version": "1", "state": "AVAILABLE",
                                      "status": {"error_code": "OK", "error_message": ""}}]}
    for path in ("/v1/models/digits", "/v1/models/digits/versions/1", "/v1/models/digits/labels/stable",
                 "/V1/MODELS/digits"):
        assert call_json(server, "GET", path) == (200, want), path


def test_model_status_errors(server):
    assert error(server, "GET", "/v1/models/nope") == (404, "Could not find any versions of model nope")
    assert error(server, "GET", "/v1/models/digits/versions/7") == (404, "Could not find version 7 of model digits")
    assert error(server, "GET", "/v1/models") == (400, "Missing model name in request.")
    assert error(server, "GET", "/v1/models/digits/versions/99999999999999999999") == (
        400, "Failed to convert version: 99999999999999999999 to numeric.")


def test_metadata(server, served_model):
    from google.protobuf import json_format
    status, doc = call_json(server, "GET", "/v1/models/digits/labels/stable/metadata")
    assert status == 200
    assert doc["model_spec"] == {"name": "digits", "signature_name": "", "version": "1"}
    assert list(doc["metadata"]) == ["signature_def"]
    want = json_format.MessageToDict(served_model.metadata(), including_default_value_fields=True,
                                   preserving_proto_field_name=True)
    assert doc["metadata"]["signature_def"] == want
    images = doc["metadata"]["signature_def"]["signature_def"]["serving_default"]["inputs"]["images"]
    assert images["dtype"] == "DT_FLOAT" and [d["size"] for d in images["tensor_shape"]["dim"]] == ["-1", "28", "28"]
    assert error(server, "GET", "/v1/models/digits/versions/3/metadata") == (
        404, "Servable not found for request: Specific(digits, 3)")


# ---- predict / classify ------------------------------------------------------------------------------

def test_predict_row_format_matches_the_core(server, served_model, digits):
    images = digits[0][:B]
    want = served_model.predict("serving_default", {"images": images})
    status, doc = call_json(server, "POST", "/v1/models/digits:predict", {"instances": images.tolist()})
    assert status == 200 and list(doc) == ["predictions"] and len(doc["predictions"]) == B
    assert [p["classes"] for p in doc["predictions"]] == want["classes"].tolist()
    got = np.array([p["probabilities"] for p in doc["predictions"]], dtype=np.float64)
    assert np.array_equal(got.astype(np.float32), want["probabilities"])


def test_predict_columnar_format_matches_the_core(server, served_model, digits):
    images = digits[0][:B]
    want = served_model.predict("serving_default", {"images": images})
    for path in ("/v1/models/digits/versions/1:predict", "/v1/models/digits/labels/stable:predict"):
        status, doc = call_json(server, "POST", path, {"signature_name": "serving_default",
                                                       "inputs": {"images": images.tolist()}})
        assert status == 200 and list(doc) == ["outputs"]
        assert doc["outputs"]["classes"] == want["classes"].tolist()
        assert np.array_equal(np.array(doc["outputs"]["probabilities"], dtype=np.float32), want["probabilities"])


def test_gzip_request_body(server, served_model, digits):
    images = digits[0][:2]
    body = gzip.compress(json.dumps({"inputs": images.tolist()}).encode())
    status, doc = call_json(server, "POST", "/v1/models/digits:predict", body, {"Content-Encoding": "gzip"})
    assert status == 200
    assert doc["outputs"]["classes"] == served_model.predict("", {"images": images})["classes"].tolist()
    # a body that does not gunzip reads as empty, as EvHTTPRequest::ReadRequestGzipBytes leaves it
    assert error(server, "POST", "/v1/models/digits:predict", b"{}", {"Content-Encoding": "gzip"}) == (
        400, "JSON Parse error: The document is empty")


def test_classify_matches_the_core(server, served_model, digits):
    images, labels, examples = digits
    want_classes, want_scores = served_model.classify("classify", examples[:B])
    body = {"signature_name": "classify",
            "examples": [{"image": images[i].reshape(-1).astype(int).tolist(), "label": int(labels[i])}
                         for i in range(B)]}
    status, doc = call_json(server, "POST", "/v1/models/digits:classify", body)
    assert status == 200 and len(doc["results"]) == B
    assert [[c for c, _ in row] for row in doc["results"]] == [[c.decode() for c in r] for r in want_classes]
    assert np.array_equal(np.array([[s for _, s in row] for row in doc["results"]], dtype=np.float32), want_scores)


# ---- errors --------------------------------------------------------------------------------------------

def test_unknown_model_version_label_and_signature(server, digits):
    body = {"instances": digits[0][:1].tolist()}
    assert error(server, "POST", "/v1/models/nope:predict", body) == (
        404, "Servable not found for request: Latest(nope)")
    assert error(server, "POST", "/v1/models/digits/versions/2:predict", body) == (
        404, "Servable not found for request: Specific(digits, 2)")
    assert error(server, "POST", "/v1/models/digits/labels/canary:predict", body) == (
        400, "Unrecognized servable version label: canary")
    assert error(server, "POST", "/v1/models/digits:predict", dict(body, signature_name="nope")) == (
        400, 'Serving signature name: "nope" not found in signature def')
    assert error(server, "POST", "/v1/models/digits:classify", {"signature_name": "nope", "examples": [{}]}) == (
        400, "No signature was found with the name: nope")


def test_bad_json_and_bad_requests(server):
    status, message = error(server, "POST", "/v1/models/digits:predict", "{not json")
    assert status == 400 and message.startswith("JSON Parse error: ")
    assert error(server, "POST", "/v1/models/digits:predict", "") == (400, "JSON Parse error: The document is empty")
    assert error(server, "POST", "/v1/models/digits:predict", {"instances": [[1.0]]})[0] == 400
    assert error(server, "POST", "/v1/models/digits:predict", {"foo": 1}) == (400, "Missing 'inputs' or 'instances' key")


def test_malformed_urls(server):
    assert error(server, "POST", "/v1/foo", "{}") == (400, "Malformed request: POST /v1/foo")
    assert error(server, "GET", "/v1/models/digits:predict") == (400, "Malformed request: GET /v1/models/digits:predict")
    assert error(server, "PUT", "/v1/models/digits", "{}") == (400, "Malformed request: PUT /v1/models/digits")
    assert error(server, "POST", "/v1/models/digits:PREDICT", "{}") == (
        400, "Malformed request: POST /v1/models/digits:PREDICT")


def test_not_found_outside_v1(server):
    for method, path in (("GET", "/"), ("GET", "/v2/models/digits"), ("POST", "/models/digits:predict")):
        status, content_type, text = call(server, method, path, "{}" if method == "POST" else None)
        assert status == 404 and content_type.startswith("text/html")
        assert "<TITLE>404 Not Found</TITLE>" in text


def test_keep_alive_serves_several_requests_on_one_connection(server):
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    try:
        for _ in range(3):
            conn.request("GET", "/v1/models/digits")
            response = conn.getresponse()
            assert response.status == 200 and json.loads(response.read())["model_version_status"]
    finally:
        conn.close()


# ---- metrics page ----------------------------------------------------------------------------------

@pytest.fixture
def metered(server):
    """A second server over the same registry, exporting a fresh ServingMetrics at METRICS_PATH."""
    rest = RestServer(server.api.registry, 0, host="127.0.0.1", metrics=ServingMetrics(), metrics_path=METRICS_PATH)
    rest.start()
    yield rest
    rest.stop()


def test_metrics_page_counts_rest_requests(metered, digits):
    body = {"instances": digits[0][:2].tolist()}
    assert call_json(metered, "POST", "/v1/models/digits:predict", body)[0] == 200
    assert call_json(metered, "POST", "/v1/models/digits/labels/stable:predict", body)[0] == 200
    assert call_json(metered, "GET", "/v1/models/digits")[0] == 200
    assert error(metered, "POST", "/v1/models/nope:predict", body)[0] == 404
    assert error(metered, "POST", "/v1/foo", "{}")[0] == 400
    status, content_type, page = call(metered, "GET", METRICS_PATH)
    assert (status, content_type) == (200, "text/plain")
    lines = page.splitlines()
    counts = [line for line in lines if line.startswith(":tensorflow:serving:request_count")]
    assert sorted(counts) == [':tensorflow:serving:request_count{model_name="",status="INVALID_ARGUMENT"} 1',
                              ':tensorflow:serving:request_count{model_name="digits",status="OK"} 3',
                              ':tensorflow:serving:request_count{model_name="nope",status="NOT_FOUND"} 1']
    assert "# TYPE :tensorflow:serving:request_count counter" in lines
    assert "# TYPE :tensorflow:serving:request_latency histogram" in lines
    # only OK requests are timed; the API label is the URL verb, empty for GET (http_server.cc)
    timed = sorted(line for line in lines if line.startswith(":tensorflow:serving:request_latency_count"))
    assert timed == [':tensorflow:serving:request_latency_count{model_name="digits",API="",entrypoint="REST"} 1',
                     ':tensorflow:serving:request_latency_count{model_name="digits",API="predict",entrypoint="REST"} 2']
    assert not [line for line in lines if line.startswith("# HELP") or "_total" in line]
    # the page itself is not a /v1/ request: asking again leaves the counts as they were
    assert sorted(line for line in call(metered, "GET", METRICS_PATH)[2].splitlines()
                  if line.startswith(":tensorflow:serving:request_count")) == sorted(counts)


def test_metrics_path_with_a_query_is_rejected(metered):
    assert call(metered, "GET", METRICS_PATH + "?x=1") == (
        400, "text/plain", f"Unexpected path: {METRICS_PATH}?x=1. Should be {METRICS_PATH}")


def test_no_metrics_page_without_metrics_path(server):
    status, content_type, text = call(server, "GET", METRICS_PATH)
    assert status == 404 and content_type.startswith("text/html") and "<TITLE>404 Not Found</TITLE>" in text


# ---- --rest_api_num_threads and --rest_api_timeout_in_ms, over a servable stub that blocks -------------

class BlockingServable:
    """predict() doubles its input once ``release`` is set, keeping count of the calls in flight."""

    def __init__(self):
        self.release = threading.Event()
        self.cond = threading.Condition()
        self.entered = self.running = self.max_running = 0

    def input_specs(self, signature_name):
        return {"x": (np.float32, None)}

    def predict(self, signature_name, inputs):
        with self.cond:
            self.entered += 1
            self.running += 1
            self.max_running = max(self.max_running, self.running)
            self.cond.notify_all()
        try:
            assert self.release.wait(60)
            return {"y": np.asarray(inputs["x"]) * 2}
        finally:
            with self.cond:
                self.running -= 1
                self.cond.notify_all()

    def wait_for(self, predicate):
        with self.cond:
            return self.cond.wait_for(lambda: predicate(self), timeout=60)


@pytest.fixture
def stub(stub_rest):
    servable = BlockingServable()
    yield servable, lambda **kwargs: stub_rest(servable, **kwargs)
    servable.release.set()  # before stub_rest stops the servers


def test_num_threads_bounds_the_requests_in_flight(stub):
    servable, start = stub
    rest = start(num_threads=2)
    results = []
    clients = [threading.Thread(target=lambda: results.append(
        call_json(rest, "POST", "/v1/models/stub:predict", {"instances": [1.5]}))) for _ in range(3)]
    for client in clients:
        client.start()
    assert servable.wait_for(lambda s: s.entered == 2)
    assert rest.slots.wait_until(lambda active, waiting: (active, waiting) == (2, 1), timeout=60)
    assert servable.entered == 2  # the third request waits for a thread: it is queued, not refused
    servable.release.set()
    for client in clients:
        client.join(60)
    assert results == [(200, {"predictions": [3.0]})] * 3
    assert (servable.entered, servable.max_running) == (3, 2)


def test_idle_keep_alive_connections_do_not_hold_a_thread(stub):
    servable, start = stub
    servable.release.set()
    rest = start(num_threads=1)
    connections = [http.client.HTTPConnection("127.0.0.1", rest.port, timeout=60) for _ in range(2)]
    try:
        for i in range(3):
            for conn in connections:  # each stays open between its requests
                conn.request("POST", "/v1/models/stub:predict", body=json.dumps({"inputs": [float(i)]}))
                response = conn.getresponse()
                assert (response.status, json.loads(response.read())) == (200, {"outputs": [2.0 * i]})
    finally:
        for conn in connections:
            conn.close()


def test_timeout_answers_deadline_exceeded(stub):
    servable, start = stub
    rest = start(timeout_ms=200, metrics=ServingMetrics(), metrics_path="/metrics")
    assert call_json(rest, "POST", "/v1/models/stub:predict", {"instances": [1.0]}) == (
        504, {"error": "Timed out waiting for notification"})
    assert (servable.entered, servable.running) == (1, 1)  # the overdue run goes on in the background
    servable.release.set()
    assert servable.wait_for(lambda s: s.running == 0)
    assert call_json(rest, "POST", "/v1/models/stub:predict", {"instances": [1.0]}) == (200, {"predictions": [2.0]})
    page = call(rest, "GET", "/metrics")[2]
    assert ':tensorflow:serving:request_count{model_name="stub",status="DEADLINE_EXCEEDED"} 1' in page
    assert ':tensorflow:serving:request_count{model_name="stub",status="OK"} 1' in page
