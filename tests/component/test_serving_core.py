"""serving.servables.loaded_model against a real SavedModel built by the pipeline's own code (conftest.py), plus a
tiny hand-made one for what the digits model lacks (a regress signature, scores-only classify,
signature defaults). Expected texts are TF Serving
2.16.1's (predict_util.cc, classifier.cc, regressor.cc, saved_model/util.cc)."""
import os
from concurrent.futures import ThreadPoolExecutor

os.environ["TF_USE_LEGACY_KERAS"] = "1"

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402
from tensorflow.core.protobuf import saved_model_pb2  # noqa: E402

from serving.servables.loaded_model import LoadedModel, resolve_signature_name  # noqa: E402
from serving.errors import ServingError  # noqa: E402


def _error(call, *args, **kwargs) -> ServingError:
    with pytest.raises(ServingError) as info:
        call(*args, **kwargs)
    return info.value


# ---- Predict ---------------------------------------------------------------------------------

def test_predict_matches_the_signatures_called_directly(model, direct, digits):
    images, labels, examples = digits
    n = len(labels)
    got = model.predict("serving_default", {"images": images})
    want = direct.signatures["serving_default"](images=tf.constant(images))
    assert list(got) == ["classes", "probabilities"]
    assert got["probabilities"].dtype == np.float32 and got["probabilities"].shape == (n, 10)
    assert got["classes"].dtype == np.int64 and got["classes"].shape == (n,)
    for alias in got:
        assert np.array_equal(got[alias], want[alias].numpy())
    assert (got["classes"] == labels).mean() > 0.8  # a trained model, not an untrained one

    by_examples = model.predict("serving_examples", {"examples": np.array(examples, dtype=object)})
    want = direct.signatures["serving_examples"](examples=tf.constant(examples))
    for alias in ("classes", "probabilities"):
        assert np.array_equal(by_examples[alias], want[alias].numpy())
    assert np.abs(by_examples["probabilities"] - got["probabilities"]).max() <= 1e-5


def test_empty_signature_name_means_serving_default(model, digits):
    images = digits[0][:4]
    assert resolve_signature_name("") == "serving_default"
    assert np.array_equal(model.predict("", {"images": images})["probabilities"],
                          model.predict("serving_default", {"images": images})["probabilities"])


def test_predict_accepts_a_classify_method_signature(model, direct, digits):
    examples = digits[2][:5]
    got = model.predict("classify", {"inputs": np.array(examples, dtype=object)})
    assert got["classes"].dtype == object and got["classes"][0].tolist() == [str(d).encode() for d in range(10)]
    assert np.array_equal(got["scores"], direct.signatures["classify"](inputs=tf.constant(examples))["scores"].numpy())


def test_output_filter(model, digits):
    images = digits[0][:3]
    only = model.predict("serving_default", {"images": images}, output_filter=["probabilities"])
    assert list(only) == ["probabilities"]
    both = model.predict("serving_default", {"images": images}, output_filter=("probabilities", "classes"))
    assert list(both) == ["probabilities", "classes"]
    assert np.array_equal(only["probabilities"], both["probabilities"])

    error = _error(model.predict, "serving_default", {"images": images}, output_filter=["logits"])
    assert (error.code, error.message) == (
        "INVALID_ARGUMENT",
        "output tensor alias not found in signature: logits Outputs expected to be in the set {classes,probabilities}.")
    error = _error(model.predict, "serving_default", {"images": images}, output_filter=["classes", "classes"])
    assert (error.code, error.message) == ("INVALID_ARGUMENT", "duplicate output tensor alias: classes")


def test_unknown_signature_in_every_api(model, digits):
    error = _error(model.predict, "nope", {"images": digits[0][:1]})
    assert (error.code, error.message) == ("FAILED_PRECONDITION", 'Serving signature key "nope" not found.')
    for call in (model.classify, model.regress):
        error = _error(call, "nope", digits[2][:1])
        assert (error.code, error.message) == ("INVALID_ARGUMENT", "No signature was found with the name: nope")
    error = _error(model.input_specs, "nope")
    assert (error.code, error.message) == (
        "INVALID_ARGUMENT", 'Serving signature name: "nope" not found in signature def')


@pytest.fixture(scope="module")
def strict_model(digits_export):
    """As served with --enable_signature_method_name_check."""
    return LoadedModel.load(digits_export, method_name_check=True)


def test_predict_on_the_init_op_signature_is_a_method_name_error(strict_model):
    error = _error(strict_model.predict, "__saved_model_init_op", {})
    assert error.code == "INTERNAL"
    assert error.message == ("Expected prediction signature method_name to be one of {tensorflow/serving/predict, "
                             "tensorflow/serving/classify, tensorflow/serving/regress}. Was: ")


def test_missing_extra_and_misnamed_inputs(model, digits):
    images = digits[0][:2]
    error = _error(model.predict, "serving_default", {})
    assert (error.code, error.message) == ("INVALID_ARGUMENT", "input size does not match signature: 0!=1 len({}) "
                                           "!= len({images}). Sent extra: {}. Missing but required: {images}.")
    error = _error(model.predict, "serving_default", {"images": images, "zextra": images})
    assert (error.code, error.message) == (
        "INVALID_ARGUMENT", "input size does not match signature: 2!=1 len({images,zextra}) != len({images}). "
        "Sent extra: {zextra}. Missing but required: {}.")
    error = _error(model.predict, "serving_default", {"image": images})
    assert (error.code, error.message) == (
        "INVALID_ARGUMENT", "Signature input alias: images(feed name: serving_default_images:0) not found in request "
        "and no default value provided. Inputs expected to be in the request {image}, or default input alias set: ")


def test_wrong_dtypes_are_invalid_argument(model, digits):
    images, _, examples = digits
    cases = [
        ({"images": images[:2].astype(np.int64)}, "Expects arg[0] to be float but int64 is provided"),
        ({"images": images[:2].astype(np.float64)}, "Expects arg[0] to be float but double is provided"),
        ({"images": np.array([[b"x"]], dtype=object)}, "Expects arg[0] to be float but string is provided"),
    ]
    for inputs, message in cases:
        error = _error(model.predict, "serving_default", inputs)
        assert (error.code, error.message) == ("INVALID_ARGUMENT", message)
    error = _error(model.predict, "serving_examples", {"examples": images[:2, 0, 0]})
    assert (error.code, error.message) == ("INVALID_ARGUMENT", "Expects arg[0] to be string but float is provided")
    # A runtime failure inside the graph: the runtime's message, without the eager wrapper's trace.
    error = _error(model.predict, "serving_examples", {"examples": np.array([b"not an example"], dtype=object)})
    assert error.code == "INVALID_ARGUMENT"
    assert error.message.startswith("Could not parse example input, value: 'not an example'"), error.message
    assert "Graph execution error" not in error.message and "[Op:" not in error.message


def test_shapes_are_the_graphs_to_judge(model, digits):
    """TF Serving compares no request shape with the SignatureDef's ([?,28,28] here): the graph runs what
    it can (the digits graph flattens with a Reshape to [-1,784]) and refuses the rest with TensorFlow's
    own OpError, INVALID_ARGUMENT."""
    images = digits[0][:2]
    want = model.predict("serving_default", {"images": images})
    for odd in (images.reshape(2, 784), images.reshape(2, 28, 28, 1)):
        got = model.predict("serving_default", {"images": odd})
        np.testing.assert_array_equal(got["probabilities"], want["probabilities"])
    assert model.predict("serving_default", {"images": images[0]})["probabilities"].shape == (1, 10)
    for refused, values in ((np.zeros((2, 28, 27), np.float32), 1512), (np.zeros(3, np.float32), 3)):
        error = _error(model.predict, "serving_default", {"images": refused})
        assert error.code == "INVALID_ARGUMENT"
        assert error.message.startswith(f"Input to reshape is a tensor with {values} values, but the requested "
                                        "shape requires a multiple of 784"), error.message
        assert "{{node Reshape}}" in error.message and "Graph execution error" not in error.message


def test_output_filter_is_checked_after_inputs(model, digits):
    error = _error(model.predict, "serving_default", {"image": digits[0][:1]}, output_filter=["nope"])
    assert error.message.startswith("Signature input alias: images")
    error = _error(model.predict, "serving_default", {"images": digits[0][:1].astype(np.int64)}, output_filter=["x"])
    assert error.message.startswith("output tensor alias not found in signature: x")


# ---- Classify / Regress ----------------------------------------------------------------------

def test_classify(model, direct, digits):
    _, labels, examples = digits
    n = len(labels)
    classes, scores = model.classify("classify", examples)
    want = direct.signatures["classify"](inputs=tf.constant(examples))
    assert classes.shape == (n, 10) and classes.dtype == object
    assert classes.tolist() == [[str(d).encode() for d in range(10)]] * n
    assert scores.dtype == np.float32 and np.array_equal(scores, want["scores"].numpy())
    assert (scores.argmax(axis=1) == labels).mean() > 0.8

    error = _error(model.classify, "classify", [])
    assert (error.code, error.message) == ("INVALID_ARGUMENT", "Input is empty.")


def test_classify_and_regress_check_method_names(strict_model, digits):
    examples = digits[2][:2]
    for name in ("", "serving_default", "serving_examples"):
        error = _error(strict_model.classify, name, examples)
        assert (error.code, error.message) == ("INVALID_ARGUMENT", "Expected classification signature method_name to "
                                               "be tensorflow/serving/classify. Was: tensorflow/serving/predict")
    error = _error(strict_model.regress, "classify", examples)
    assert (error.code, error.message) == ("INVALID_ARGUMENT", "Expected regression signature method_name to be "
                                           "tensorflow/serving/regress. Was: tensorflow/serving/classify")


def test_without_the_method_name_check_only_the_signature_shape_counts(model, digits):
    """TF Serving's default (--enable_signature_method_name_check=false): no method-name errors; the
    classify/regress checks on inputs and outputs still apply."""
    examples = digits[2][:2]
    error = _error(model.classify, "serving_default", examples)
    assert error.code == "INVALID_ARGUMENT"
    assert error.message.startswith("No classification inputs found in SignatureDef: ")
    assert _error(model.regress, "classify", examples).message == "Expected one output Tensor."
    scores = model.predict("classify", {"inputs": np.asarray(examples, dtype=object)})["scores"]
    assert scores.shape == (2, 10)


@pytest.fixture(scope="session")
def toy(tmp_path_factory):
    """A hand-made SavedModel with a regress signature, a scores-only classify signature, a
    misnamed classify input and a predict signature whose input "b" has a default."""
    class Toy(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="inputs")])
        def regress(self, inputs):
            return {"outputs": _x(inputs) * 2.0}  # [batch, 1]

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="inputs")])
        def scores_only(self, inputs):
            x = _x(inputs)
            return {"scores": tf.concat([x, 1.0 - x], axis=1)}

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
        def misnamed(self, examples):
            return {"scores": _x(examples)}

        @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="a"),
                                      tf.TensorSpec([None], tf.float32, name="b")])
        def add(self, a, b):
            return {"sum": a + b}

    module = Toy()
    path = str(tmp_path_factory.mktemp("toy") / "model")
    tf.saved_model.save(module, path, signatures={name: getattr(module, name).get_concrete_function()
                                                  for name in ("regress", "scores_only", "misnamed", "add")})
    saved_model = saved_model_pb2.SavedModel()
    with open(os.path.join(path, "saved_model.pb"), "rb") as f:
        saved_model.ParseFromString(f.read())
    signature_defs = saved_model.meta_graphs[0].signature_def
    signature_defs["regress"].method_name = "tensorflow/serving/regress"
    signature_defs["scores_only"].method_name = "tensorflow/serving/classify"
    signature_defs["misnamed"].method_name = "tensorflow/serving/classify"
    signature_defs["add"].defaults["b"].CopyFrom(tf.make_tensor_proto(np.array([10.0], np.float32)))
    with open(os.path.join(path, "saved_model.pb"), "wb") as f:
        f.write(saved_model.SerializeToString())
    return LoadedModel.load(path, method_name_check=True)


def _x(serialized):
    return tf.io.parse_example(serialized, {"x": tf.io.FixedLenFeature([1], tf.float32)})["x"]


def _examples(*values):
    return [tf.train.Example(features=tf.train.Features(feature={
        "x": tf.train.Feature(float_list=tf.train.FloatList(value=[v]))})).SerializeToString() for v in values]


def test_regress(toy):
    values = toy.regress("regress", _examples(0.25, 1.5, -3.0))
    assert values.dtype == np.float32 and values.tolist() == [0.5, 3.0, -6.0]
    assert _error(toy.regress, "regress", []).message == "Input is empty."
    error = _error(toy.regress, "scores_only", _examples(1.0))
    assert error.message == ("Expected regression signature method_name to be tensorflow/serving/regress. "
                             "Was: tensorflow/serving/classify")


def test_classify_with_scores_only_and_misnamed_input(toy):
    classes, scores = toy.classify("scores_only", _examples(0.25, 0.75))
    assert classes is None and scores.tolist() == [[0.25, 0.75], [0.75, 0.25]]
    error = _error(toy.classify, "misnamed", _examples(1.0))
    assert error.code == "INVALID_ARGUMENT"
    assert error.message.startswith('No classification inputs found in SignatureDef: inputs {\n  key: "examples"')


def test_signature_defaults_fill_missing_inputs(toy):
    a = np.array([1.0, 2.0], np.float32)
    assert toy.predict("add", {"a": a})["sum"].tolist() == [11.0, 12.0]
    assert toy.predict("add", {"a": a, "b": a})["sum"].tolist() == [2.0, 4.0]
    error = _error(toy.predict, "add", {"c": a})
    assert (error.code, error.message) == ("INVALID_ARGUMENT", "Signature input alias: a(feed name: add_a:0) not found "
                                           "in request and no default value provided. Inputs expected to be in the "
                                           "request {c}, or default input alias set: b")


# ---- GetModelMetadata and the REST codec's view ------------------------------------------------

def test_metadata_is_the_saved_models_signature_def_map(model, digits_export):
    saved_model = saved_model_pb2.SavedModel()
    with open(os.path.join(digits_export, "saved_model.pb"), "rb") as f:
        saved_model.ParseFromString(f.read())
    metadata = model.metadata()
    assert type(metadata).DESCRIPTOR.full_name == "tensorflow.serving.SignatureDefMap"
    assert set(metadata.signature_def) == {"serving_default", "serving_examples", "classify", "__saved_model_init_op"}
    for name, signature_def in saved_model.meta_graphs[0].signature_def.items():
        assert metadata.signature_def[name] == signature_def
    default = metadata.signature_def["serving_default"]
    assert default.method_name == "tensorflow/serving/predict"
    assert default.inputs["images"].dtype == tf.float32.as_datatype_enum
    assert [d.size for d in default.inputs["images"].tensor_shape.dim] == [-1, 28, 28]
    assert metadata.signature_def["classify"].method_name == "tensorflow/serving/classify"
    metadata.signature_def["serving_default"].method_name = "changed"
    assert model.metadata().signature_def["serving_default"].method_name == "tensorflow/serving/predict"


def test_input_specs_drive_the_rest_codec(model, digits):
    import json

    from serving.rest_api.json_codec import parse_predict_request
    assert model.input_specs("") == {"images": (tf.float32, (None, 28, 28))}
    images = digits[0][:3] / 255.0
    request = parse_predict_request(json.dumps({"instances": images.tolist()}), model.input_specs)
    got = model.predict(request.signature_name, request.inputs)
    assert np.array_equal(got["classes"], model.predict("", {"images": images.astype(np.float32)})["classes"])


# ---- concurrency -------------------------------------------------------------------------------

def test_concurrent_calls_give_the_sequential_answers(model, digits):
    images, _, examples = digits
    jobs = [(i % 3, slice(i % 7, i % 7 + 1 + i % 11)) for i in range(48)]

    def run(job):
        kind, rows = job
        if kind == 0:
            return model.predict("serving_default", {"images": images[rows]})
        if kind == 1:
            return model.predict("serving_examples", {"examples": np.array(examples[rows], dtype=object)},
                                 output_filter=["probabilities"])
        return dict(zip(("classes", "scores"), model.classify("classify", examples[rows])))

    sequential = [run(job) for job in jobs]
    with ThreadPoolExecutor(max_workers=8) as pool:
        concurrent = list(pool.map(run, jobs))
    for want, got in zip(sequential, concurrent):
        assert list(want) == list(got)
        for alias in want:
            assert want[alias].shape == got[alias].shape and np.array_equal(want[alias], got[alias])
