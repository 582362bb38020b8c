"""Behaviours TF Serving's own end-to-end test (model_servers/tensorflow_model_server_test.py) relies on, checked
on ``python -m serving`` over REST and gRPC with small models made here (tests/half_plus_two.py):

* no input shape check of our own: half_plus_two (x declared [?,1]) answers [1.0, 2.0, 5.0] (shape [3]) with
  [2.5, 3.0, 4.5], as in TF Serving's README; a graph that refuses a shape answers INVALID_ARGUMENT / 400
  with TensorFlow's own message;
* --prefer_tflite_model: model.tflite versions (made by tf.lite.TFLiteConverter, with and without
  SignatureDef metadata) served for predict, metadata and status; a SavedModel version beside them is still
  served as a SavedModel;
* a malformed --model_config_file prints protobuf's "Error parsing text-format ..." text;
* --enable_profiler is accepted and the server says the profiler is not provided.
"""
import os

os.environ["TF_USE_LEGACY_KERAS"] = "1"

import subprocess  # noqa: E402
import sys  # noqa: E402

import grpc  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402
from tensorflow_serving.apis import (get_model_metadata_pb2, get_model_status_pb2, model_service_pb2_grpc,  # noqa: E402
                                     predict_pb2, prediction_service_pb2_grpc)

from tests import half_plus_two as hp2  # noqa: E402
from tests.server_process import REPO, ServerProcess  # noqa: E402

PLAIN_X, PLAIN_Y = "serving_default_x", "StatefulPartitionedCall"  # TF Serving's signature from tensor names
REFUSED = "Input to reshape is a tensor with 3 values, but the requested shape requires a multiple of 2"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("fidelity")
    saved = hp2.save_half_plus_two(str(root / "half_plus_two"))
    bases = {
        "half_plus_two": saved,
        "reshape_by_two": hp2.save_reshape_by_two(str(root / "reshape_by_two")),
        "tflite_plain": hp2.write_tflite(str(root / "tflite_plain"), hp2.half_plus_two_tflite(saved, False)),
        "tflite_sigdef": hp2.write_tflite(str(root / "tflite_sigdef"), hp2.half_plus_two_tflite(saved, True)),
    }
    config = root / "models.config"
    config.write_text("model_config_list {\n" + "".join(
        f'  config {{ name: "{name}" base_path: "{base}" model_platform: "tensorflow" }}\n'
        for name, base in bases.items()) + "}\n")
    with ServerProcess([f"--model_config_file={config}", "--prefer_tflite_model=true", "--enable_profiler=true"],
                       startup_timeout=240) as process:
        with grpc.insecure_channel(f"127.0.0.1:{process.grpc_port}") as channel:
            process.predictions = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            process.models = model_service_pb2_grpc.ModelServiceStub(channel)
            yield process


def grpc_predict(server, model, inputs, output_filter=()):
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    for alias, value in inputs.items():
        request.inputs[alias].CopyFrom(tf.make_tensor_proto(value))
    request.output_filter.extend(output_filter)
    response = server.predictions.Predict(request, timeout=30)
    assert response.model_spec.version.value == 123 and response.model_spec.signature_name == "serving_default"
    return {alias: tf.make_ndarray(proto) for alias, proto in response.outputs.items()}


def grpc_error(call, request):
    with pytest.raises(grpc.RpcError) as info:
        call(request, timeout=30)
    return info.value.code(), info.value.details()


# ---- input shapes: the graph decides -----------------------------------------------------------------------

def test_half_plus_two_takes_a_shape_other_than_its_signatures(server):
    assert server.rest("POST", "/v1/models/half_plus_two:predict", {"instances": [1.0, 2.0, 5.0]}) == \
        (200, {"predictions": [2.5, 3.0, 4.5]})
    assert server.rest("POST", "/v1/models/half_plus_two:predict", {"inputs": {"x": [1.0, 2.0, 5.0]}}) == \
        (200, {"outputs": [2.5, 3.0, 4.5]})
    got = grpc_predict(server, "half_plus_two", {"x": np.array([1.0, 2.0, 5.0], np.float32)})
    assert list(got) == ["y"] and got["y"].shape == (3,)
    np.testing.assert_array_equal(got["y"], [2.5, 3.0, 4.5])
    # TF Serving's own test request: x of shape [1]
    np.testing.assert_array_equal(grpc_predict(server, "half_plus_two", {"x": np.array([2.0], np.float32)})["y"], [3])


def test_a_shape_the_graph_refuses_is_invalid_argument_with_tensorflows_message(server):
    status, body = server.rest("POST", "/v1/models/reshape_by_two:predict", {"instances": [1.0, 2.0, 3.0]})
    assert status == 400 and body["error"].startswith(REFUSED), body
    assert "{{node Reshape}}" in body["error"]
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "reshape_by_two"
    request.inputs["x"].CopyFrom(tf.make_tensor_proto(np.array([1.0, 2.0, 3.0], np.float32)))
    code, details = grpc_error(server.predictions.Predict, request)
    assert code == grpc.StatusCode.INVALID_ARGUMENT and details == body["error"]
    # the same graph runs a shape it can take, whatever the signature declares ([?,2])
    assert server.rest("POST", "/v1/models/reshape_by_two:predict", {"inputs": {"x": [1.0, 2.0, 3.0, 4.0]}}) == \
        (200, {"outputs": [[2.0, 4.0], [6.0, 8.0]]})


def test_the_dtype_is_still_checked(server):
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "half_plus_two"
    request.inputs["x"].CopyFrom(tf.make_tensor_proto(np.array([1, 2], np.int32)))
    assert grpc_error(server.predictions.Predict, request) == (
        grpc.StatusCode.INVALID_ARGUMENT, "Expects arg[0] to be float but int32 is provided")


# ---- TensorFlow Lite ---------------------------------------------------------------------------------------

def test_tflite_without_signature_defs_over_rest_and_grpc(server):
    assert server.rest("POST", "/v1/models/tflite_plain:predict", {"instances": [1.0, 2.0, 5.0]}) == \
        (200, {"predictions": [2.5, 3.0, 4.5]})
    got = grpc_predict(server, "tflite_plain", {PLAIN_X: np.array([[1.0], [2.0]], np.float32)})
    assert list(got) == [PLAIN_Y]
    np.testing.assert_array_equal(got[PLAIN_Y], [[2.5], [3.0]])
    status, body = server.rest("GET", "/v1/models/tflite_plain/metadata")
    signature = body["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert status == 200 and body["model_spec"]["version"] == "123"
    assert signature["method_name"] == "tensorflow/serving/predict"
    assert signature["inputs"] == {PLAIN_X: {"dtype": "DT_FLOAT", "tensor_shape": {
        "dim": [{"size": "1", "name": ""}, {"size": "1", "name": ""}], "unknown_rank": False},
        "name": f"{PLAIN_X}:0"}}
    assert list(signature["outputs"]) == [PLAIN_Y]


def test_tflite_with_signature_defs_over_rest_and_grpc(server):
    assert server.rest("POST", "/v1/models/tflite_sigdef:predict", {"inputs": {"x": [[1.0], [2.0], [5.0]]}}) == \
        (200, {"outputs": [[2.5], [3.0], [4.5]]})
    assert server.rest("POST", "/v1/models/tflite_sigdef/versions/123:predict",
                       {"signature_name": "serving_default", "instances": [1.0, 2.0, 5.0]}) == \
        (200, {"predictions": [2.5, 3.0, 4.5]})
    # TF Serving's testPredictWithSignatureDefOnTfLite request: x [1] = 2.0, y = 3.0
    np.testing.assert_array_equal(grpc_predict(server, "tflite_sigdef", {"x": np.array([2.0], np.float32)}, ["y"])["y"],
                                  [3.0])
    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    request.model_spec.name = "tflite_sigdef"
    response = server.predictions.GetModelMetadata(request, timeout=30)
    signatures = get_model_metadata_pb2.SignatureDefMap()
    response.metadata["signature_def"].Unpack(signatures)
    signature = signatures.signature_def["serving_default"]
    assert (list(signature.inputs), list(signature.outputs)) == (["x"], ["y"])
    assert signature.inputs["x"].name == f"{PLAIN_X}:0" and signature.outputs["y"].name == f"{PLAIN_Y}:0"
    assert [d.size for d in signature.inputs["x"].tensor_shape.dim] == [-1, 1]


def test_tflite_versions_status_over_rest_and_grpc(server):
    for model in ("tflite_plain", "tflite_sigdef"):
        assert server.rest("GET", f"/v1/models/{model}") == (200, {"model_version_status": [{
            "version": "123", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}]})
        request = get_model_status_pb2.GetModelStatusRequest()
        request.model_spec.name = model
        (status,) = server.models.GetModelStatus(request, timeout=30).model_version_status
        assert (status.version, status.state, status.status.error_code) == (
            123, get_model_status_pb2.ModelVersionStatus.AVAILABLE, 0)


def test_a_savedmodel_version_is_served_as_a_savedmodel_under_prefer_tflite_model(server):
    status, body = server.rest("GET", "/v1/models/half_plus_two/metadata")
    signatures = body["metadata"]["signature_def"]["signature_def"]
    assert status == 200 and signatures["serving_default"]["inputs"]["x"]["name"] == "serving_default_x:0"
    assert "__saved_model_init_op" in signatures  # only a SavedModel's MetaGraphDef has it


# ---- start-up texts ----------------------------------------------------------------------------------------

def test_the_profiler_flag_is_accepted_and_the_server_says_it_is_not_provided(server):
    assert any("Profiler service is not provided by this server" in line for line in server.log_lines)
    help_text = subprocess.run([sys.executable, "-m", "serving", "--help"], cwd=REPO, capture_output=True,
                               text=True, timeout=120).stdout
    entry = help_text[help_text.index("--enable_profiler"):]
    assert "Not provided by this server" in " ".join(entry[:400].split())


def test_a_malformed_model_config_file_prints_protobufs_parser_text(tmp_path):
    bad = tmp_path / "bad_model_config.txt"
    bad.write_text("improperly formatted file\n")  # TF Serving's testdata/bad_model_config.txt
    done = subprocess.run([sys.executable, "-m", "serving", f"--model_config_file={bad}"], cwd=REPO,
                          capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    assert done.returncode != 0
    assert "Error parsing text-format tensorflow.serving.ModelServerConfig: 1:1: Message type " \
           '"tensorflow.serving.ModelServerConfig" has no field named "improperly".' in done.stderr
    assert f"Invalid protobuf file: '{bad}'" in done.stderr
