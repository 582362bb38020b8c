"""serving.rest against a real server on 127.0.0.1 over a ModelRegistry serving the conftest SavedModel
as version 1. Expected texts and shapes are TF Serving 2.16.1's (http_rest_api_handler.cc,
http_rest_api_util.cc, http_server.cc, libevent's evhttp_send_error)."""
import gzip
import http.client
import json
import os

os.environ["TF_USE_LEGACY_KERAS"] = "1"

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from serving.core import LoadedModel  # noqa: E402
from serving.model_registry import ModelRegistry  # noqa: E402
from serving.rest import RestServer  # noqa: E402
from serving.server_config import ModelSpec  # noqa: E402

B = 8  # images per request


@pytest.fixture(scope="module")
def server(tmp_path_factory, digits_export):
    base = tmp_path_factory.mktemp("rest_models") / "digits"
    base.mkdir()
    os.symlink(digits_export, base / "1")
    registry = ModelRegistry([ModelSpec("digits", str(base), version_labels={"stable": 1})],
                             LoadedModel.load, poll_seconds=-1)
    registry.poll_once()
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
