"""serving.servables.tflite_model (--prefer_tflite_model) on half_plus_two converted by tf.lite.TFLiteConverter,
with and without TF-style SignatureDef metadata (tests/half_plus_two.py). Expected behaviour and texts are
TF Serving 2.16.1's tflite_session.cc / saved_model_bundle_factory.cc."""
import os
import threading

os.environ["TF_USE_LEGACY_KERAS"] = "1"

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402
from tensorflow.core.protobuf import meta_graph_pb2  # noqa: E402

from serving.core.version_source import aspired_versions  # noqa: E402
from serving.errors import ServingError  # noqa: E402
from serving.model_servers.server_config import ModelSpec  # noqa: E402
from serving.servables import tflite_model  # noqa: E402
from tests import half_plus_two as hp2  # noqa: E402

PLAIN_X, PLAIN_Y = "serving_default_x", "StatefulPartitionedCall"  # the converter's tensor names, without ":0"


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("tflite")
    saved = hp2.save_half_plus_two(str(root / "saved_model"))
    plain = hp2.half_plus_two_tflite(saved, signature_defs=False)
    with_sigdef = hp2.half_plus_two_tflite(saved, signature_defs=True)
    return {"root": root, "plain_bytes": plain, "sigdef_bytes": with_sigdef,
            "plain": hp2.write_tflite(str(root / "plain"), plain),
            "sigdef": hp2.write_tflite(str(root / "sigdef"), with_sigdef)}


def _load(base, pools=2):
    return tflite_model.load(os.path.join(base, hp2.VERSION), pools)


def _error(call, *args) -> ServingError:
    with pytest.raises(ServingError) as info:
        call(*args)
    return info.value


def test_a_version_holding_only_model_tflite_is_a_version(models):
    spec = ModelSpec("plain", models["plain"])
    assert aspired_versions(spec) == {123: os.path.join(models["plain"], hp2.VERSION)}
    assert os.listdir(os.path.join(models["plain"], hp2.VERSION)) == ["model.tflite"]
    assert tflite_model.tflite_model_found(os.path.join(models["plain"], hp2.VERSION))
    assert not tflite_model.tflite_model_found(os.path.join(models["root"], "saved_model", hp2.VERSION))


def test_without_signature_defs_serving_default_is_built_from_the_tensor_names(models):
    model = _load(models["plain"])
    signature = model.metadata().signature_def["serving_default"]
    assert signature.method_name == "tensorflow/serving/predict"
    assert list(signature.inputs) == [PLAIN_X] and list(signature.outputs) == [PLAIN_Y]
    x, y = signature.inputs[PLAIN_X], signature.outputs[PLAIN_Y]
    assert (x.name, x.dtype, [d.size for d in x.tensor_shape.dim]) == (f"{PLAIN_X}:0", tf.float32.as_datatype_enum,
                                                                       [1, 1])  # the tensor's current dims
    assert y.name == f"{PLAIN_Y}:0"
    got = model.predict("", {PLAIN_X: np.array([1.0, 2.0, 5.0], np.float32)})
    np.testing.assert_array_equal(got[PLAIN_Y], np.array([2.5, 3.0, 4.5], np.float32))


def test_signature_defs_come_from_the_models_metadata(models):
    assert tflite_model.signature_defs_from_metadata(models["plain_bytes"]) == {}
    stored = tflite_model.signature_defs_from_metadata(models["sigdef_bytes"])
    model = _load(models["sigdef"])
    assert dict(model.metadata().signature_def) == stored
    signature = stored["serving_default"]
    assert (list(signature.inputs), list(signature.outputs)) == (["x"], ["y"])
    assert [d.size for d in signature.inputs["x"].tensor_shape.dim] == [-1, 1]
    got = model.predict("serving_default", {"x": np.array([1.0, 2.0, 5.0], np.float32)}, ["y"])
    np.testing.assert_array_equal(got["y"], np.array([2.5, 3.0, 4.5], np.float32))


def test_signature_tensor_names_are_fixed_or_refused(models, tmp_path):
    def signature(input_name):
        sig = meta_graph_pb2.SignatureDef(method_name="tensorflow/serving/predict")
        sig.inputs["x"].name, sig.inputs["x"].dtype = input_name, tf.float32.as_datatype_enum
        sig.outputs["y"].name, sig.outputs["y"].dtype = f"{PLAIN_Y}:0", tf.float32.as_datatype_enum
        return {"serving_default": sig}

    # FixTfLiteTensorName(): "<name>:0" finds a tensor the (early) converter named "<name>"
    legacy = hp2.write_tflite(str(tmp_path / "legacy"), hp2.with_signature_defs(models["plain_bytes"],
                                                                                  signature(f"{PLAIN_X}:0")))
    assert _load(legacy).metadata().signature_def["serving_default"].inputs["x"].name == f"{PLAIN_X}:0"
    unknown = hp2.write_tflite(str(tmp_path / "unknown"), hp2.with_signature_defs(models["plain_bytes"],
                                                                                    signature("nope:0")))
    error = _error(_load, unknown)
    assert (error.code, error.message) == (
        "INTERNAL", "Unknown tensor 'nope:0'.\n\tSignature input x references an unknown tensor")


def test_inputs_are_resized_to_the_requests_shape(models):
    model = _load(models["sigdef"])
    for x in (np.array([2.0], np.float32), np.array(2.0, np.float32), np.array([[1.0], [2.0]], np.float32),
              np.arange(12, dtype=np.float32).reshape(3, 4), np.array([2.0], np.float32)):
        got = model.predict("", {"x": x})["y"]
        assert got.shape == x.shape
        np.testing.assert_array_equal(got, 0.5 * x + 2)


def test_a_wrong_dtype_is_invalid_argument(models):
    error = _error(_load(models["sigdef"]).predict, "", {"x": np.array([1, 2], np.int32)})
    assert (error.code, error.message) == ("INVALID_ARGUMENT", "Expects arg[0] to be float but int32 is provided")


def test_a_shape_the_model_refuses_fails_and_the_next_request_is_served(tmp_path):
    refuser = hp2.save_reshape_by_two(str(tmp_path / "saved"))
    model_bytes = tf.lite.TFLiteConverter.from_saved_model(os.path.join(refuser, hp2.VERSION)).convert()
    model = _load(hp2.write_tflite(str(tmp_path / "tflite"), model_bytes), pools=1)
    (alias,) = model.signatures["serving_default"].input_aliases
    error = _error(model.predict, "", {alias: np.zeros(3, np.float32)})
    assert error.code == "INTERNAL"
    assert error.message.startswith("Failed to allocate tensors: "), error.message
    assert "RESHAPE" in error.message
    # the failed interpreter is not reused: the next request gets a fresh one, and its own error is short
    (output,) = model.predict("", {alias: np.arange(4, dtype=np.float32)}).values()
    np.testing.assert_array_equal(output, [[0.0, 2.0], [4.0, 6.0]])
    assert _error(model.predict, "", {alias: np.zeros(5, np.float32)}).message.count("RESHAPE") <= \
        error.message.count("RESHAPE")


def test_concurrent_requests_share_the_interpreter_pool(models):
    model = _load(models["sigdef"], pools=2)
    failures = []

    def client(seed):
        rng = np.random.default_rng(seed)
        for _ in range(60):
            x = rng.standard_normal(int(rng.integers(1, 9))).astype(np.float32)
            got = model.predict("", {"x": x})["y"]
            if got.shape != x.shape or not np.array_equal(got, np.float32(0.5) * x + np.float32(2)):
                failures.append((x, got))

    threads = [threading.Thread(target=client, args=(seed,)) for seed in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not failures
    assert model._bundle._pool._count <= 2


def test_a_file_that_is_not_a_tflite_model(tmp_path):
    bad = hp2.write_tflite(str(tmp_path / "bad"), b"not a flatbuffer at all")
    error = _error(_load, bad)
    assert (error.code, error.message) == ("INVALID_ARGUMENT", "Cannot build FlatBufferModel from buffer.")
