"""serving.servables.session_bundle and LoadedModel.prepare_predict: signatures run as Session::Run of their
tensors, with the answers and errors of predict()."""
import os

os.environ["TF_USE_LEGACY_KERAS"] = "1"

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from serving.errors import ServingError  # noqa: E402
from serving.servables.session_bundle import session_config  # noqa: E402


def _outcome(call, *args, **kwargs):
    try:
        return call(*args, **kwargs)
    except ServingError as e:
        return (e.code, e.message)


def test_inter_op_work_runs_in_the_callers_thread_unless_set():
    import tensorflow as tf
    assert tf.config.threading.get_inter_op_parallelism_threads() == 0  # tests never set it
    config = session_config()
    assert config.inter_op_parallelism_threads == -1 and config.allow_soft_placement


def test_every_runnable_signature_has_a_runner(model):
    runnable = {name for name, meta in model.signatures.items() if meta.runner is not None}
    assert runnable == {"serving_default", "serving_examples", "classify"}  # not the init op


@pytest.mark.parametrize("output_filter", [(), ("probabilities",), ("probabilities", "classes")])
def test_prepare_predict_answers_as_predict(model, digits, output_filter):
    images = digits[0][:5]
    want = model.predict("serving_default", {"images": images}, output_filter)
    got = model.prepare_predict("serving_default", {"images": images}, output_filter)()
    assert list(got) == list(want)
    for alias in want:
        assert got[alias].dtype == want[alias].dtype and got[alias].tobytes() == want[alias].tobytes()


@pytest.mark.parametrize("signature, inputs, output_filter", [
    ("nope", {"images": np.zeros((1, 28, 28), np.float32)}, ()),
    ("serving_default", {"images": np.zeros((1, 28, 28), np.int64)}, ()),
    ("serving_default", {"images": np.zeros((1, 28, 28), np.float32)}, ("classes", "classes")),
    ("serving_default", {"image": np.zeros((1, 28, 28), np.float32)}, ()),
    ("serving_default", {"images": np.zeros((1, 28, 28), np.float32)}, ("nope",)),
    ("__saved_model_init_op", {}, ()),
])
def test_prepare_predict_fails_as_predict_before_running(model, signature, inputs, output_filter):
    want = _outcome(model.predict, signature, inputs, output_filter)
    assert isinstance(want, tuple)
    assert _outcome(model.prepare_predict, signature, inputs, output_filter) == want


def test_a_runtime_failure_fails_the_run(model):
    run = model.prepare_predict("serving_examples", {"examples": np.array([b"not an example"], dtype=object)})
    code, message = _outcome(run)
    assert code == "INVALID_ARGUMENT" and message.startswith("Could not parse example input")
    assert (code, message) == _outcome(model.predict, "serving_examples",
                                       {"examples": np.array([b"not an example"], dtype=object)})
    # a shape is the graph's to judge: one it refuses fails the run, as predict() fails
    refused = {"images": np.zeros((1, 783), np.float32)}
    code, message = _outcome(model.prepare_predict("serving_default", refused))
    assert code == "INVALID_ARGUMENT" and message.startswith("Input to reshape is a tensor with 783 values")
    assert (code, message) == _outcome(model.predict, "serving_default", refused)


def test_string_inputs_in_any_numpy_form(model, digits):
    examples = [e for e in digits[2] if not e.endswith(b"\0")][:3]  # numpy's "S" drops trailing NULs
    want = model.predict("serving_examples", {"examples": np.array(examples, dtype=object)})["probabilities"]
    for form in (np.array(examples, dtype="S"), np.array(examples, dtype=object)[::1]):
        got = model.predict("serving_examples", {"examples": form})["probabilities"]
        assert np.array_equal(got, want)
    code, message = _outcome(model.predict, "serving_examples", {"examples": np.array([1, b"x"], dtype=object)})
    assert code == "INVALID_ARGUMENT" and message.startswith("input tensor alias examples: ")


def test_strided_and_byte_swapped_inputs(model, digits):
    images = digits[0][:4]
    want = model.predict("", {"images": images})["probabilities"]
    wide = np.repeat(images, 2, axis=2)[:, :, ::2]  # a non-contiguous view of the same values
    assert np.array_equal(model.predict("", {"images": wide})["probabilities"], want)
    assert np.array_equal(model.predict("", {"images": images.astype(">f4")})["probabilities"], want)
