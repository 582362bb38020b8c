"""components.infra.serving_requests against a real export: every signature gets a request, and its gRPC
and REST forms, answered by our server's RPC bodies and REST server, agree with the signatures called
in-process on the same digits."""
import http.client
import os

os.environ["TF_USE_LEGACY_KERAS"] = "1"

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

from components.infra import serving_requests as sr  # noqa: E402
from serving.grpc_api.services import Services  # noqa: E402
from serving.rest_api.transport import RestServer  # noqa: E402
from tests.component.conftest import serve_export  # noqa: E402

N = 12


@pytest.fixture(scope="module")
def registry(tmp_path_factory, digits_export):
    return serve_export(tmp_path_factory, digits_export, version=3)[0]


@pytest.fixture(scope="module")
def rest(registry):
    server = RestServer(registry, 0, host="127.0.0.1")
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def test_digits(package_splits):
    return package_splits["test"].images[:N]  # uint8 [N, 784]


def post(server, path, body):
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    try:
        conn.request("POST", path, body=body)
        response = conn.getresponse()
        return response.status, response.read().decode()
    finally:
        conn.close()


def test_the_export_signatures_are_read_from_saved_model_pb(digits_export):
    signatures = sr.model_signatures(digits_export)
    assert sorted(signatures) == ["classify", "serving_default", "serving_examples"]
    assert signatures["serving_default"] == sr.SignatureInputs(sr.PREDICT_METHOD_NAME,
                                                                {"images": ("DT_FLOAT", (-1, 28, 28))})
    assert signatures["classify"].method_name == sr.CLASSIFY_METHOD_NAME


def test_grpc_and_rest_answers_agree_with_in_process_outputs(digits_export, registry, rest, direct, test_digits):
    requests = sr.build_requests(test_digits, "digits", sr.model_signatures(digits_export), version=3)
    assert [r.signature for r in requests] == ["classify", "serving_default", "serving_examples"]
    services = Services(registry)
    pixels = tf.constant(test_digits.reshape(N, 28, 28).astype(np.float32))
    want = {name: {k: v.numpy() for k, v in fn(**args).items()} for name, fn, args in [
        ("serving_default", direct.signatures["serving_default"], {"images": pixels}),
        ("serving_examples", direct.signatures["serving_examples"],
         {"examples": tf.constant(sr.serialized_examples(test_digits))}),
        ("classify", direct.signatures["classify"], {"inputs": tf.constant(sr.serialized_examples(test_digits))})]}
    for request in requests:
        call = getattr(services, request.method)
        got_grpc = sr.grpc_outputs(call(request.grpc_request, request.grpc_request.SerializeToString()))
        status, text = post(rest, request.rest_path, request.rest_body)
        assert status == 200, text
        got_rest = sr.rest_outputs(request.method, text)
        expected = want[request.signature]
        for got in (got_grpc, got_rest):
            assert sorted(got) == sorted(expected)
            for key, value in expected.items():
                if value.dtype == object:
                    assert got[key].astype(str).tolist() == value.astype(str).tolist()
                else:
                    np.testing.assert_allclose(got[key], value, rtol=1e-6, atol=1e-7)
    # the digits answer the same through every signature
    np.testing.assert_array_equal(want["serving_default"]["classes"], want["serving_examples"]["classes"])


def test_warmup_file_covers_every_signature_and_replays_on_the_real_model(tmp_path, digits_export, model,
                                                                           test_digits):
    import shutil

    from tensorflow_serving.apis import prediction_log_pb2

    from components.training.warmup_requests import write_warmup_requests
    from serving.servables.warmup import run_warmup

    export = str(tmp_path / "export")
    shutil.copytree(digits_export, export)
    path = write_warmup_requests(export, test_digits)
    assert path == os.path.join(export, "assets.extra", "tf_serving_warmup_requests")
    logs = [prediction_log_pb2.PredictionLog.FromString(r) for r in tf.data.TFRecordDataset(path).as_numpy_iterator()]
    seen = []
    for log in logs:
        kind = log.WhichOneof("log_type")
        request = getattr(log, kind).request
        size = (len(request.input.example_list.examples) if kind == "classify_log"
                else tf.make_ndarray(next(iter(request.inputs.values()))).shape[0])
        seen.append((kind, request.model_spec.signature_name, size))
    assert sorted(seen) == sorted((kind, name, size) for size in (1, N) for kind, name in [
        ("classify_log", "classify"), ("predict_log", "serving_default"), ("predict_log", "serving_examples")])
    assert run_warmup(model, export) == 6  # every record runs on the model as loaded by the server
