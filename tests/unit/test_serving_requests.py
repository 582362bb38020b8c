"""components.infra.serving_requests without a model: requests for each kind of signature, their REST twins,
and clear errors for what it cannot feed."""
import base64
import json
import os

os.environ["TF_USE_LEGACY_KERAS"] = "1"

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402
from tensorflow.core.example import example_pb2  # noqa: E402

from components.infra import serving_requests as sr  # noqa: E402

SIGNATURES = {
    "serving_default": sr.SignatureInputs(sr.PREDICT_METHOD_NAME, {"images": ("DT_FLOAT", (-1, 28, 28))}),
    "serving_examples": sr.SignatureInputs(sr.PREDICT_METHOD_NAME, {"examples": ("DT_STRING", (-1,))}),
    "classify": sr.SignatureInputs(sr.CLASSIFY_METHOD_NAME, {"inputs": ("DT_STRING", (-1,))}),
}


@pytest.fixture
def images():
    return np.random.default_rng(0).integers(0, 256, size=(3, 784)).astype(np.uint8)


def test_one_request_per_signature_in_both_apis(images):
    requests = {r.signature: r for r in sr.build_requests(images, "mnist", SIGNATURES)}
    assert sorted(requests) == sorted(SIGNATURES)

    default = requests["serving_default"]
    assert (default.method, default.rest_path) == ("predict", "/v1/models/mnist:predict")
    spec = default.grpc_request.model_spec
    assert (spec.name, spec.signature_name, spec.HasField("version")) == ("mnist", "serving_default", False)
    pixels = tf.make_ndarray(default.grpc_request.inputs["images"])
    assert pixels.dtype == np.float32 and pixels.shape == (3, 28, 28)
    np.testing.assert_array_equal(pixels.reshape(3, 784), images)
    body = json.loads(default.rest_body)
    assert body["signature_name"] == "serving_default"
    np.testing.assert_array_equal(np.array(body["instances"]).reshape(3, 784), images)

    examples = requests["serving_examples"]
    serialized = tf.make_ndarray(examples.grpc_request.inputs["examples"]).tolist()
    assert serialized == sr.serialized_examples(images)
    body = json.loads(examples.rest_body)
    assert [base64.b64decode(i["b64"]) for i in body["instances"]] == serialized
    parsed = example_pb2.Example.FromString(serialized[1])
    assert list(parsed.features.feature) == ["image"]  # what clients send: no label
    assert list(parsed.features.feature["image"].int64_list.value) == images[1].tolist()

    classify = requests["classify"]
    assert (classify.method, classify.rest_path) == ("classify", "/v1/models/mnist:classify")
    assert [e.SerializeToString() for e in classify.grpc_request.input.example_list.examples] == serialized
    body = json.loads(classify.rest_body)
    assert body["signature_name"] == "classify" and [e["image"] for e in body["examples"]] == images.tolist()


def test_version_and_28x28_images(images):
    (request,) = sr.build_requests(images.reshape(3, 28, 28), "digits", {"serving_default": SIGNATURES[
        "serving_default"]}, version=7)
    assert request.rest_path == "/v1/models/digits/versions/7:predict"
    assert request.grpc_request.model_spec.version.value == 7


@pytest.mark.parametrize("signature, message", [
    (sr.SignatureInputs("tensorflow/serving/regress", {"inputs": ("DT_STRING", (-1,))}), "regress"),
    (sr.SignatureInputs(sr.PREDICT_METHOD_NAME, {"x": ("DT_FLOAT", (-1, 784))}), "takes {'x'"),
    (sr.SignatureInputs(sr.PREDICT_METHOD_NAME, {"a": ("DT_STRING", (-1,)), "b": ("DT_STRING", (-1,))}), "takes"),
])
def test_a_signature_it_cannot_feed_is_named(images, signature, message):
    with pytest.raises(ValueError, match="'odd'.*" + message):
        sr.build_requests(images, "mnist", {"odd": signature})


@pytest.mark.parametrize("bad", [np.zeros((0, 784)), np.zeros((2, 10)), np.full((1, 784), 0.5),
                                 np.full((1, 784), 256)])
def test_images_not_in_mnist_form_are_refused(bad):
    with pytest.raises(ValueError, match="images must"):
        sr.build_requests(bad, "mnist", SIGNATURES)


def test_rest_outputs_read_both_answer_forms():
    predict = sr.rest_outputs("predict", json.dumps({"predictions": [{"classes": 3, "probabilities": [0.5, 0.5]}]}))
    assert predict["classes"].tolist() == [3] and predict["probabilities"].tolist() == [[0.5, 0.5]]
    classify = sr.rest_outputs("classify", json.dumps({"results": [[["0", 0.25], ["1", 0.75]]]}))
    assert classify["classes"].tolist() == [["0", "1"]] and classify["scores"].tolist() == [[0.25, 0.75]]
