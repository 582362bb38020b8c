"""serving.grpc_api.front: a real GrpcServer on 127.0.0.1 over a ModelRegistry serving the conftest SavedModel as
version 1 (label "stable"), driven through tensorflow-serving-api's own stubs. Expected codes and texts are
TF Serving 2.16.1's (prediction_service_impl.cc, model_service_impl.cc, predict_util.cc, classifier.cc,
multi_inference.cc, get_model_metadata_impl.cc, get_model_status_impl.cc, server_core.cc, util.cc)."""
import contextlib
import http.client
import json
import os
import sys
import threading

os.environ["TF_USE_LEGACY_KERAS"] = "1"

import grpc  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402
from tensorflow_serving.apis import (classification_pb2, get_model_metadata_pb2, get_model_status_pb2,  # noqa: E402
                                     inference_pb2, model_management_pb2, model_service_pb2_grpc,
                                     predict_pb2, prediction_service_pb2_grpc, regression_pb2)
from tensorflow_serving.config import model_server_config_pb2  # noqa: E402

from serving.errors import ServingError  # noqa: E402
from serving.grpc_api.front import GrpcServer  # noqa: E402
from serving.rest_api.transport import RestServer  # noqa: E402
from serving.grpc_api.tensor_proto import from_ndarray, to_ndarray  # noqa: E402
from tests.component.conftest import serve_export  # noqa: E402

B = 8  # images per request
INVALID, NOT_FOUND = grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND


class Recorder:
    """The metrics interface GrpcServer expects: request() times a block and records its outcome."""

    def __init__(self):
        self.calls, self._lock = [], threading.Lock()

    @contextlib.contextmanager
    def request(self, model_name, api, entrypoint):
        code = "OK"
        try:
            yield
        except ServingError as e:
            code = e.code
            raise
        finally:
            with self._lock:
                self.calls.append((model_name, api, entrypoint, code))


class ExplodingRegistry:
    """The real registry, except that model "explode" hits a bug (an exception that is no ServingError)."""

    def __init__(self, registry):
        self._registry = registry

    def get(self, name, version=None, label=None):
        if name == "explode":
            raise RuntimeError("boom")
        return self._registry.get(name, version, label)

    def __getattr__(self, name):
        return getattr(self._registry, name)


def make_registry(tmp_path_factory, digits_export, name="grpc_models"):
    return serve_export(tmp_path_factory, digits_export, version_labels={"stable": 1})


@pytest.fixture(scope="module")
def registry(tmp_path_factory, digits_export):
    return make_registry(tmp_path_factory, digits_export)[0]


@pytest.fixture(scope="module")
def server(registry):
    server = GrpcServer(ExplodingRegistry(registry), -1, host="127.0.0.1", max_threads=4, metrics=Recorder())
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def channel(server):
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        yield channel


@pytest.fixture(scope="module")
def stub(channel):
    return prediction_service_pb2_grpc.PredictionServiceStub(channel)


@pytest.fixture(scope="module")
def model_stub(channel):
    return model_service_pb2_grpc.ModelServiceStub(channel)


@pytest.fixture(scope="module")
def served_model(registry):
    return registry.get("digits")[1]


def failure(method, request):
    with pytest.raises(grpc.RpcError) as info:
        method(request, timeout=60)
    return info.value.code(), info.value.details()


def predict_request(images, name="digits", signature="", **inputs):
    request = predict_pb2.PredictRequest()
    request.model_spec.name = name
    request.model_spec.signature_name = signature
    request.inputs["images"].CopyFrom(from_ndarray(images))
    for alias, proto in inputs.items():
        request.inputs[alias].CopyFrom(proto)
    return request


def examples_input(input_, examples):
    input_.example_list.examples.extend(tf.train.Example.FromString(e) for e in examples)


def classify_request(examples, signature="classify", name="digits"):
    request = classification_pb2.ClassificationRequest()
    request.model_spec.name, request.model_spec.signature_name = name, signature
    examples_input(request.input, examples)
    return request


def core_error(call, *args):
    with pytest.raises(ServingError) as info:
        call(*args)
    return grpc.StatusCode[info.value.code], info.value.message


# ---- Predict ---------------------------------------------------------------------------------------------

def test_predict_matches_the_core_with_typed_fields_or_tensor_content(stub, served_model, digits):
    images = digits[0][:B]
    want = served_model.predict("serving_default", {"images": images})
    for proto in (from_ndarray(images), from_ndarray(images, content=True), tf.make_tensor_proto(images)):
        request = predict_pb2.PredictRequest()
        request.model_spec.name = "digits"
        request.inputs["images"].CopyFrom(proto)
        response = stub.Predict(request, timeout=60)
        assert response.model_spec.name == "digits" and response.model_spec.version.value == 1
        assert response.model_spec.signature_name == "serving_default"  # "" is reported as the default
        assert sorted(response.outputs) == ["classes", "probabilities"]
        probabilities = response.outputs["probabilities"]
        assert probabilities.float_val and not probabilities.tensor_content  # AsProtoField, TF Serving's default
        assert list(response.outputs["classes"].int64_val) == want["classes"].tolist()
        assert to_ndarray(probabilities).tobytes() == want["probabilities"].tobytes()


def test_predict_versions_labels_and_output_filter(stub):
    images = np.zeros((2, 28, 28), np.float32)
    request = predict_request(images, signature="serving_default")
    request.model_spec.version.value = 1
    assert stub.Predict(request, timeout=60).model_spec.version.value == 1
    request = predict_request(images)
    request.model_spec.version_label = "stable"
    request.output_filter.append("classes")
    response = stub.Predict(request, timeout=60)
    assert list(response.outputs) == ["classes"] and response.model_spec.version.value == 1
    assert [d.size for d in response.outputs["classes"].tensor_shape.dim] == [2]


def test_predict_errors(stub, served_model):
    images = np.zeros((1, 28, 28), np.float32)
    feed = served_model.signatures["serving_default"].inputs[0].name
    no_spec = predict_pb2.PredictRequest()
    no_name = predict_request(images, name="")
    version7, canary = predict_request(images), predict_request(images)
    version7.model_spec.version.value = 7
    canary.model_spec.version_label = "canary"
    pixels = predict_pb2.PredictRequest()
    pixels.model_spec.name = "digits"
    pixels.inputs["pixels"].CopyFrom(from_ndarray(images))
    extra = predict_request(images, extra=tf.make_tensor_proto(1.0))
    extra.inputs["extra"].dtype = 0  # unparsable, but the size check comes before any tensor is parsed
    bad_filter, duplicate_filter = predict_request(images), predict_request(images)
    bad_filter.output_filter.append("nope")
    duplicate_filter.output_filter.extend(["classes", "classes"])
    cases = [
        (no_spec, INVALID, "Missing ModelSpec"),
        (no_name, INVALID, "ModelSpec has no name specified."),
        (predict_request(images, name="nope"), NOT_FOUND, "Servable not found for request: Latest(nope)"),
        (version7, NOT_FOUND, "Servable not found for request: Specific(digits, 7)"),
        (canary, INVALID, "Unrecognized servable version label: canary"),
        (predict_request(images, signature="nope"), grpc.StatusCode.FAILED_PRECONDITION,
         'Serving signature key "nope" not found.'),
        (predict_request(images.astype(np.int64)), INVALID, "Expects arg[0] to be float but int64 is provided"),
        (pixels, INVALID, f"Signature input alias: images(feed name: {feed}) not found in request and no default "
                          "value provided. Inputs expected to be in the request {pixels}, or default input alias set: "),
        (extra, INVALID, "input size does not match signature: 2!=1 len({extra,images}) != len({images}). "
                         "Sent extra: {extra}. Missing but required: {}."),
        (bad_filter, INVALID, "output tensor alias not found in signature: nope Outputs expected to be in the set "
                              "{classes,probabilities}."),
        (duplicate_filter, INVALID, "duplicate output tensor alias: classes"),
    ]
    for request, code, message in cases:
        assert failure(stub.Predict, request) == (code, message), request
    refused = np.zeros((1, 783), np.float32)  # a shape the graph refuses (TensorFlow's text); both fronts agree
    assert failure(stub.Predict, predict_request(refused)) == core_error(served_model.predict, "", {"images": refused})
    assert failure(stub.Predict, predict_request(refused))[1].startswith("Input to reshape is a tensor with 783 values")


@pytest.mark.parametrize("mutate", [
    lambda p: setattr(p, "tensor_content", p.tensor_content[:-1]),  # content size does not match the shape
    lambda p: setattr(p, "dtype", 0),  # DT_INVALID
    lambda p: setattr(p, "dtype", 999),  # no such DataType
    lambda p: setattr(p, "dtype", 20),  # DT_RESOURCE
    lambda p: p.tensor_shape.dim.add(size=-3),  # a negative dimension
], ids=["content-size", "dt-invalid", "dt-999", "dt-resource", "negative-dim"])
def test_bad_tensor_protos_are_tensor_parsing_errors(stub, mutate):
    request = predict_request(np.zeros((2, 28, 28), np.float32))
    request.inputs["images"].CopyFrom(from_ndarray(np.zeros((2, 28, 28), np.float32), content=True))
    mutate(request.inputs["images"])
    assert failure(stub.Predict, request) == (INVALID, "tensor parsing error: images")


def test_a_request_that_does_not_parse_is_internal_and_the_server_goes_on(channel, stub):
    raw = channel.unary_unary("/tensorflow.serving.PredictionService/Predict",
                              request_serializer=lambda data: data,
                              response_deserializer=predict_pb2.PredictResponse.FromString)
    code, details = failure(raw, b"\x0a\x05\xff")  # model_spec claims 5 bytes and has 1
    assert code == grpc.StatusCode.INTERNAL and not details  # GenericDeserialize: InitializationErrorString() ""
    assert stub.Predict(predict_request(np.zeros((1, 28, 28), np.float32)), timeout=60).outputs["classes"].int64_val


def test_a_bug_is_internal_and_the_server_goes_on(stub):
    assert failure(stub.Predict, predict_request(np.zeros((1, 28, 28), np.float32), name="explode")) == (
        grpc.StatusCode.INTERNAL, "RuntimeError: boom")
    assert stub.Predict(predict_request(np.zeros((1, 28, 28), np.float32)), timeout=60).outputs["classes"].int64_val


def test_long_messages_are_truncated_as_to_grpc_status_does(stub):
    name = "x" * 2000
    code, details = failure(stub.Predict, predict_request(np.zeros((1, 28, 28), np.float32), name=name))
    assert code == NOT_FOUND
    assert details == f"Servable not found for request: Latest({name})"[:1024] + "...TRUNCATED"


def test_requests_beyond_grpcs_default_4mib_are_accepted(stub, served_model, digits):
    images = np.repeat(digits[0], 24, axis=0)[:1500]  # 4.7 MB of float32
    request = predict_request(images)
    request.output_filter.append("classes")
    assert request.ByteSize() > 4 * 1024 * 1024
    response = stub.Predict(request, timeout=120)
    assert list(response.outputs["classes"].int64_val) == served_model.predict(
        "", {"images": images}, ["classes"])["classes"].tolist()


def test_metrics_see_every_prediction_call(server, stub):
    stub.Predict(predict_request(np.zeros((1, 28, 28), np.float32)), timeout=60)
    failure(stub.Predict, predict_request(np.zeros((1, 28, 28), np.float32), name="nope"))
    assert ("digits", "Predict", "GRPC", "OK") in server.metrics.calls
    assert ("nope", "Predict", "GRPC", "NOT_FOUND") in server.metrics.calls


# ---- Classify / Regress / MultiInference -------------------------------------------------------------------

def test_classify_matches_the_core(stub, served_model, digits):
    examples = digits[2][:B]
    classes, scores = served_model.classify("classify", examples)
    response = stub.Classify(classify_request(examples), timeout=60)
    assert (response.model_spec.name, response.model_spec.signature_name) == ("digits", "classify")
    assert response.model_spec.version.value == 1
    rows = response.result.classifications
    assert [[c.label.encode() for c in row.classes] for row in rows] == classes.tolist()
    assert np.array([[c.score for c in row.classes] for row in rows], np.float32).tobytes() == scores.tobytes()


def test_context_bytes_come_first_so_example_features_override_them(stub, served_model, digits):
    images, _, examples = digits
    request = classify_request([])
    context = tf.train.Example.FromString(examples[0])
    request.input.example_list_with_context.context.CopyFrom(context)
    request.input.example_list_with_context.examples.extend(
        [tf.train.Example.FromString(examples[1]), tf.train.Example()])  # the second takes the context's image
    rows = stub.Classify(request, timeout=60).result.classifications
    _, want = served_model.classify("classify", [examples[1], examples[0]])
    assert np.array([[c.score for c in row.classes] for row in rows], np.float32).tobytes() == want.tobytes()


def test_classify_and_regress_errors(stub, served_model, digits):
    examples = digits[2][:2]
    no_input = classify_request([])
    empty_list = classify_request([])
    empty_list.input.example_list.SetInParent()
    assert failure(stub.Classify, classification_pb2.ClassificationRequest()) == (INVALID, "Missing ModelSpec")
    assert failure(stub.Classify, no_input) == (INVALID, "Input is empty.")
    assert failure(stub.Classify, empty_list) == (INVALID, "Input is empty.")
    assert failure(stub.Classify, classify_request(examples, "nope")) == (
        INVALID, "No signature was found with the name: nope")
    assert failure(stub.Classify, classify_request(examples, "serving_default")) == core_error(
        served_model.classify, "serving_default", examples)
    regress = regression_pb2.RegressionRequest()
    assert failure(stub.Regress, regress) == (INVALID, "Missing ModelSpec")
    regress.model_spec.name, regress.model_spec.signature_name = "digits", "classify"
    examples_input(regress.input, examples)
    assert failure(stub.Regress, regress) == core_error(served_model.regress, "classify", examples)
    regress.model_spec.name = "nope"
    assert failure(stub.Regress, regress) == (NOT_FOUND, "Servable not found for request: Latest(nope)")


def multi(examples, *tasks):
    request = inference_pb2.MultiInferenceRequest()
    for name, signature, method in tasks:
        task = request.tasks.add(method_name=method)
        task.model_spec.name, task.model_spec.signature_name = name, signature
    examples_input(request.input, examples)
    return request


CLASSIFY, REGRESS = "tensorflow/serving/classify", "tensorflow/serving/regress"


def test_multi_inference_matches_classify(stub, served_model, digits):
    examples = digits[2][:B]
    request = multi(examples, ("digits", "classify", CLASSIFY))
    request.tasks[0].model_spec.version_label = "stable"
    (result,) = stub.MultiInference(request, timeout=60).results
    assert (result.model_spec.name, result.model_spec.signature_name, result.model_spec.version.value) == (
        "digits", "classify", 1)
    assert result.classification_result == stub.Classify(classify_request(examples), timeout=60).result


def test_multi_inference_errors(stub, served_model, digits):
    examples = digits[2][:2]
    ok = ("digits", "classify", CLASSIFY)
    cases = [
        (multi(examples), INVALID, "ModelSpec has no name specified."),
        (multi(examples, ("nope", "classify", CLASSIFY)), NOT_FOUND, "Servable not found for request: Latest(nope)"),
        (multi(examples, ok, ("other", "x", CLASSIFY)), INVALID,
         "All ModelSpecs in a MultiInferenceRequest must access the same model name."),
        (multi(examples, ok, ("", "x", CLASSIFY)), INVALID, "Found ModelSpec with an empty model name."),
        (multi(examples, ok, ok), INVALID, "Duplicate evaluation of signature: classify"),
        (multi(examples, ("digits", "nope", CLASSIFY)), INVALID, "Requested signature not found in model graph: nope"),
        (multi(examples, ("digits", "classify", "tensorflow/serving/predict")), grpc.StatusCode.UNIMPLEMENTED,
         "Unsupported signature method_name: tensorflow/serving/predict"),
        (multi([], ok), INVALID, "Input is empty."),
    ]
    for request, code, message in cases:
        assert failure(stub.MultiInference, request) == (code, message), request
    # PreProcessRegression()/PreProcessClassification(), task by task; "" is serving_default
    assert failure(stub.MultiInference, multi(examples, ("digits", "classify", REGRESS))) == core_error(
        served_model.regress, "classify", examples)
    assert failure(stub.MultiInference, multi(examples, ("digits", "", CLASSIFY), ok)) == core_error(
        served_model.classify, "serving_default", examples)
    # the first task's ModelSpec picks the servable; the others' versions are not looked at (multi_inference_helper.cc)
    request = multi(examples, ok)
    request.tasks[0].model_spec.version.value = 7
    assert failure(stub.MultiInference, request) == (NOT_FOUND, "Servable not found for request: Specific(digits, 7)")


# ---- GetModelMetadata / GetModelStatus ----------------------------------------------------------------------

def test_metadata(stub, served_model):
    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    request.model_spec.name = "digits"
    request.model_spec.version_label = "stable"
    response = stub.GetModelMetadata(request, timeout=60)
    assert (response.model_spec.name, response.model_spec.version.value) == ("digits", 1)
    assert not response.model_spec.signature_name and list(response.metadata) == ["signature_def"]
    packed = response.metadata["signature_def"]
    assert packed.type_url == "type.googleapis.com/tensorflow.serving.SignatureDefMap"
    signature_defs = get_model_metadata_pb2.SignatureDefMap()
    assert packed.Unpack(signature_defs) and signature_defs == served_model.metadata()
    assert signature_defs.signature_def["classify"].method_name == CLASSIFY


def test_metadata_errors(stub):
    def request(name="digits", fields=("signature_def",)):
        r = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=list(fields))
        r.model_spec.name = name
        return r
    assert failure(stub.GetModelMetadata, get_model_metadata_pb2.GetModelMetadataRequest()) == (
        INVALID, "Missing ModelSpec")
    # the fields are checked before the model is looked up
    assert failure(stub.GetModelMetadata, request("nope", ())) == (
        INVALID, "GetModelMetadataRequest must specify at least one metadata_field")
    assert failure(stub.GetModelMetadata, request("nope", ("signature_def", "foo"))) == (
        INVALID, "Metadata field foo is not supported")
    assert failure(stub.GetModelMetadata, request("nope")) == (NOT_FOUND, "Servable not found for request: Latest(nope)")


def status_request(name, version=None, label=None):
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = name
    if version is not None:
        request.model_spec.version.value = version
    if label is not None:
        request.model_spec.version_label = label
    return request


def test_model_status(model_stub):
    for request in (status_request("digits"), status_request("digits", 1), status_request("digits", label="nope")):
        (status,) = model_stub.GetModelStatus(request, timeout=60).model_version_status
        assert (status.version, status.state) == (1, get_model_status_pb2.ModelVersionStatus.AVAILABLE)
        assert (status.status.error_code, status.status.error_message) == (0, "")
    assert failure(model_stub.GetModelStatus, get_model_status_pb2.GetModelStatusRequest()) == (
        INVALID, "Missing ModelSpec")
    assert failure(model_stub.GetModelStatus, status_request("nope")) == (
        NOT_FOUND, "Could not find any versions of model nope")
    assert failure(model_stub.GetModelStatus, status_request("digits", 7)) == (
        NOT_FOUND, "Could not find version 7 of model digits")


# ---- REST / gRPC parity ---------------------------------------------------------------------------------------

def test_rest_and_grpc_give_bit_identical_answers(registry, stub, digits):
    images, labels, examples = digits[0][:B], digits[1][:B], digits[2][:B]
    rest = RestServer(registry, 0, host="127.0.0.1")
    rest.start()
    try:
        def post(path, body):
            conn = http.client.HTTPConnection("127.0.0.1", rest.port, timeout=60)
            try:
                conn.request("POST", path, body=json.dumps(body))
                response = conn.getresponse()
                assert response.status == 200
                return json.loads(response.read())
            finally:
                conn.close()
        doc = post("/v1/models/digits:predict", {"instances": images.tolist()})
        by_rest = np.array([p["probabilities"] for p in doc["predictions"]], np.float64).astype(np.float32)
        grpc_outputs = stub.Predict(predict_request(images), timeout=60).outputs
        assert by_rest.tobytes() == to_ndarray(grpc_outputs["probabilities"]).tobytes()
        assert [p["classes"] for p in doc["predictions"]] == list(grpc_outputs["classes"].int64_val)

        doc = post("/v1/models/digits:classify", {"signature_name": "classify", "examples": [
            {"image": images[i].reshape(-1).astype(int).tolist(), "label": int(labels[i])} for i in range(B)]})
        rows = stub.Classify(classify_request(examples), timeout=60).result.classifications
        assert [[c for c, _ in row] for row in doc["results"]] == [[c.label for c in row.classes] for row in rows]
        assert (np.array([[s for _, s in row] for row in doc["results"]], np.float64).astype(np.float32).tobytes()
                == np.array([[c.score for c in row.classes] for row in rows], np.float32).tobytes())
    finally:
        rest.stop()


# ---- HandleReloadConfigRequest -------------------------------------------------------------------------------

def reload_request(*models, labels=None):
    request = model_management_pb2.ReloadConfigRequest(metric_names=["/tensorflow/serving/model_count"])
    request.config.model_config_list.SetInParent()
    for name, base in models:
        config = request.config.model_config_list.config.add(name=name, base_path=base, model_platform="tensorflow")
        config.version_labels.update((labels or {}).get(name, {}))
    return request


def test_reload_adds_a_model_and_a_bad_reload_changes_nothing(tmp_path_factory, digits_export):
    registry, base = make_registry(tmp_path_factory, digits_export, "grpc_reload")
    server = GrpcServer(registry, -1, host="127.0.0.1")
    server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            models = model_service_pb2_grpc.ModelServiceStub(channel)
            predictions = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            with pytest.raises(grpc.RpcError):
                models.GetModelStatus(status_request("digits2"), timeout=60)
            response = models.HandleReloadConfigRequest(
                reload_request(("digits", base), ("digits2", base), labels={"digits": {"stable": 1}}), timeout=120)
            assert response.HasField("status") and response.status.error_code == 0
            assert [(m.name, m.int64_value_increase) for m in response.metric] == [("/tensorflow/serving/model_count", 0)]
            (status,) = models.GetModelStatus(status_request("digits2"), timeout=60).model_version_status
            assert (status.version, status.state) == (1, get_model_status_pb2.ModelVersionStatus.AVAILABLE)

            def still_serving():
                assert predictions.Predict(predict_request(np.zeros((1, 28, 28), np.float32), name="digits2"),
                                           timeout=60).model_spec.version.value == 1
            still_serving()
            assert failure(models.HandleReloadConfigRequest, reload_request(("digits", base), ("bad", "models/bad"))) == (
                INVALID, "Expected model bad to have an absolute path or URI; got base_path()=models/bad")
            assert failure(models.HandleReloadConfigRequest, reload_request(("digits", base), ("digits", base))) == (
                INVALID, "Illegal to list model digits multiple times in config list")
            custom = model_management_pb2.ReloadConfigRequest()
            custom.config.custom_model_config.type_url = "x"
            for request in (custom, model_management_pb2.ReloadConfigRequest()):
                assert failure(models.HandleReloadConfigRequest, request) == (
                    INVALID, "ServerModelConfig type not supported by HandleReloadConfigRequest. "
                             "Only ModelConfigList is currently supported")
            still_serving()
            assert registry.model_names() == ["digits", "digits2"]
    finally:
        server.stop()
        registry.stop()


def test_reload_config_callback_replaces_the_registry_reload(registry):
    seen = []

    def reload_config(config):
        seen.append(config)
        if config.model_config_list.config[0].name == "refused":
            raise ServingError("not now", "FAILED_PRECONDITION")

    server = GrpcServer(registry, -1, host="127.0.0.1", reload_config=reload_config)
    server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            models = model_service_pb2_grpc.ModelServiceStub(channel)
            assert models.HandleReloadConfigRequest(reload_request(("m", "/m")), timeout=60).status.error_code == 0
            assert failure(models.HandleReloadConfigRequest, reload_request(("refused", "/m"))) == (
                grpc.StatusCode.FAILED_PRECONDITION, "not now")
            assert [c.model_config_list.config[0].name for c in seen] == ["m", "refused"]
            assert isinstance(seen[0], model_server_config_pb2.ModelServerConfig)
    finally:
        server.stop()
    assert registry.model_names() == ["digits"]  # the callback, not the registry, got the configs


# ---- listeners and options ------------------------------------------------------------------------------------

def test_unix_socket_only(registry, tmp_path):
    path = str(tmp_path / "grpc.sock")
    server = GrpcServer(registry, 0, socket_path=path)
    server.start()
    try:
        assert server.port == 0 and os.path.exists(path)
        with grpc.insecure_channel(f"unix:{path}") as channel:
            response = model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus(status_request("digits"),
                                                                                      timeout=60)
            assert response.model_version_status[0].version == 1
    finally:
        server.stop()


def test_constructor_checks(registry, monkeypatch):
    with pytest.raises(ValueError, match="grpc_port or server_options.grpc_socket_path"):
        GrpcServer(registry, 0)
    monkeypatch.setitem(sys.modules, "grpc_health", None)  # as on a machine without grpcio-health-checking
    monkeypatch.setitem(sys.modules, "grpc_health.v1", None)
    monkeypatch.setitem(sys.modules, "grpc_health.v1.health", None)
    with pytest.raises(ValueError, match="grpc_health"):
        GrpcServer(registry, -1, enable_health_check=True)


def test_channel_arguments_override_the_message_size_limit(registry):
    server = GrpcServer(registry, -1, host="127.0.0.1", channel_arguments=[("grpc.max_receive_message_length", 1000)])
    server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            code, _ = failure(stub.Predict, predict_request(np.zeros((1, 28, 28), np.float32)))
            assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
            model_stub = model_service_pb2_grpc.ModelServiceStub(channel)
            assert model_stub.GetModelStatus(status_request("digits"), timeout=60).model_version_status
    finally:
        server.stop()
