"""serving.client.grpc_messages: the gRPC client builds TF Serving's messages without importing
TensorFlow, answers like the generated modules do, and leaves a later ``import tensorflow`` working.
The subprocesses call a real in-process gRPC server (serving.grpc_api.front) over TCP."""
import os
import subprocess
import sys

os.environ["TF_USE_LEGACY_KERAS"] = "1"

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from serving.client import grpc_messages  # noqa: E402
from tests.component.conftest import serve_export  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def registry(tmp_path_factory, digits_export):
    return serve_export(tmp_path_factory, digits_export, name="mnist")[0]


@pytest.fixture(scope="module")
def images_file(tmp_path_factory, digits):
    path = str(tmp_path_factory.mktemp("grpc_messages_images") / "digits.npy")
    np.save(path, digits[0][:4])
    return path


def run_python(script: str) -> str:
    env = dict(os.environ, PYTHONPATH=ROOT, TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="3")
    result = subprocess.run([sys.executable, "-W", "ignore", "-c", script], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def printed_digits(registry, images_file):
    """What `digits predict` prints for the file, computed from the served model in this process."""
    from serving.client.mnist_image import load_images

    probabilities = registry.get("mnist")[1].predict(
        "serving_default", {"images": load_images(images_file).astype(np.float32)})["probabilities"]
    return [f"{images_file}[{i}]: {p.argmax()} (p={float(p.max()):.3f})" for i, p in enumerate(probabilities)]


def test_digits_predict_over_grpc_imports_no_tensorflow(grpc_target, registry, images_file):
    script = (f"import sys\nfrom serving.client.predict_cli import main\nfrom serving.client.model_client import ModelClient\n"
              f"code = main(['--grpc', '--server', {grpc_target!r}, {images_file!r}])\n"
              f"status = ModelClient({grpc_target!r}, grpc=True).status()\n"
              f"print(code, status)\n"
              f"print('tensorflow' in sys.modules, sorted(m for m in sys.modules if m.startswith('tensorflow')))\n")
    lines = run_python(script).splitlines()
    assert lines[:4] == printed_digits(registry, images_file)
    assert lines[4] == "0 [VersionStatus(version=1, state='AVAILABLE', error_message='')]"
    assert lines[5] == "False []"


def test_tensorflow_imported_after_the_client_still_works(grpc_target, registry, images_file):
    script = (f"import numpy as np\nfrom serving.client.model_client import ModelClient\n"
              f"client = ModelClient({grpc_target!r}, grpc=True)\n"
              f"before = client.predict(np.load({images_file!r}))\n"
              f"import tensorflow as tf\n"
              f"print(tf.constant([1.5, 2.0]).numpy().tolist(), tf.make_tensor_proto(np.ones(2, np.float32)).dtype)\n"
              f"from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc\n"
              f"print(predict_pb2.PredictRequest(model_spec={{'name': 'm'}}).model_spec.name)\n"
              f"print(np.array_equal(before, client.predict(np.load({images_file!r}))), client.status()[0].state)\n")
    assert run_python(script).splitlines() == ["[1.5, 2.0] 1", "m", "True AVAILABLE"]


def test_messages_are_wire_equal_to_the_generated_ones():
    from tensorflow_serving.apis import get_model_status_pb2, predict_pb2

    fast = grpc_messages.load()
    assert fast.PredictRequest is not predict_pb2.PredictRequest  # its own pool, not the default one
    request, want = fast.PredictRequest(), predict_pb2.PredictRequest()
    for message in (request, want):
        message.model_spec.name, message.model_spec.version.value = "mnist", 3
        message.inputs["images"].dtype = 1
        message.inputs["images"].tensor_shape.dim.add().size = 2
        message.inputs["images"].tensor_content = np.arange(2, dtype="<f4").tobytes()
    assert predict_pb2.PredictRequest.FromString(request.SerializeToString()) == want
    assert fast.PredictRequest.FromString(want.SerializeToString()) == request
    serialized, imported = grpc_messages.read_generated_module("tensorflow_serving.apis.get_model_status_pb2")
    assert serialized == get_model_status_pb2.DESCRIPTOR.serialized_pb
    assert imported == ["tensorflow_serving.apis.model_pb2", "tensorflow_serving.apis.status_pb2"]
    states = get_model_status_pb2.ModelVersionStatus.State
    assert [fast.state_name(n) for n in states.values()] == list(states.keys())


def test_generated_modules_are_the_fallback(monkeypatch):
    from tensorflow_serving.apis import predict_pb2

    def unreadable(module):
        raise grpc_messages.DescriptorNotFound(f"{module} holds no serialized descriptor literal")

    monkeypatch.setattr(grpc_messages, "read_generated_module", unreadable)
    messages = grpc_messages.load.__wrapped__()
    assert messages.PredictRequest is predict_pb2.PredictRequest and messages.state_name(30) == "AVAILABLE"
    monkeypatch.undo()
    with pytest.raises(grpc_messages.DescriptorNotFound, match="no generated module nope_pb2 on sys.path"):
        grpc_messages.read_generated_module("nope_pb2")
