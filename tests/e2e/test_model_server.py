"""The model server as its users run it: ``python -m serving`` with tensorflow_model_server's flags, over
a directory laid out as the Pusher writes it, with real exports as versions. Hot reload is checked
under continuous REST and gRPC traffic: no request may fail while versions come and go."""
import os

os.environ["TF_USE_LEGACY_KERAS"] = "1"

import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402

import grpc  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc  # noqa: E402

from tests.server_process import REPO, BackgroundTraffic, ServerProcess, wait_for  # noqa: E402

IMAGES = 4  # digits per request


@pytest.fixture(scope="module")
def images(package_splits):
    return package_splits["test"].images[:IMAGES].reshape(IMAGES, 28, 28).astype(np.float32)


@pytest.fixture(scope="module")
def expected(digits_exports, images):
    """Each export's probabilities, computed without the server."""
    return [tf.saved_model.load(d).signatures["serving_default"](images=tf.constant(images))["probabilities"].numpy()
            for d in digits_exports]


def push(export_dir, base, version):
    """As the Pusher publishes: a full copy under a hidden staging name, then one rename."""
    staging = os.path.join(base, f".staging-{version}")
    shutil.copytree(export_dir, staging)
    os.rename(staging, os.path.join(base, str(version)))


class Traffic(BackgroundTraffic):
    """Threads sending predict requests over REST and gRPC until stopped; every outcome is kept."""

    def __init__(self, server, images, model="mnist"):
        self.server, self.images, self.model = server, images, model
        self.failures, self.grpc_versions, self.rest_ok = [], [], 0
        super().__init__(self._rest, self._grpc)

    def _rest(self):
        body = {"instances": self.images.tolist()}
        while not self.stopping.is_set():
            try:
                status, answer = self.server.rest("POST", f"/v1/models/{self.model}:predict", body)
                if status != 200 or len(answer["predictions"]) != len(self.images):
                    self.failures.append(("REST", status, answer))
                else:
                    self.rest_ok += 1
            except Exception as e:  # noqa: BLE001 - a dropped connection is a failure too
                self.failures.append(("REST", type(e).__name__, str(e)))

    def _grpc(self):
        with grpc.insecure_channel(f"127.0.0.1:{self.server.grpc_port}") as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            request = predict_pb2.PredictRequest()
            request.model_spec.name = self.model
            request.inputs["images"].CopyFrom(tf.make_tensor_proto(self.images))
            while not self.stopping.is_set():
                try:
                    response = stub.Predict(request, timeout=30)
                    self.grpc_versions.append(response.model_spec.version.value)
                except grpc.RpcError as e:
                    self.failures.append(("GRPC", e.code().name, e.details()))


def rest_probabilities(answer):
    """Row format with two outputs: one {"classes": ..., "probabilities": [...]} object per image."""
    return np.asarray([row["probabilities"] for row in answer["predictions"]], np.float32)


def grpc_predict(server, images, version=None, label=None):
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        request = predict_pb2.PredictRequest()
        request.model_spec.name = "mnist"
        if version is not None:
            request.model_spec.version.value = version
        if label is not None:
            request.model_spec.version_label = label
        request.inputs["images"].CopyFrom(tf.make_tensor_proto(images))
        response = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, timeout=30)
        return response.model_spec.version.value, tf.make_ndarray(response.outputs["probabilities"])


def test_hot_reload_under_traffic(tmp_path, digits_exports, images, expected):
    base = tmp_path / "serving" / "mnist"
    base.mkdir(parents=True)
    push(digits_exports[0], base, 1)
    monitoring = tmp_path / "monitoring.config"
    monitoring.write_text('prometheus_config { enable: true path: "/monitoring/prometheus/metrics" }\n')
    flags = ["--model_name=mnist", f"--model_base_path={base}", "--file_system_poll_wait_seconds=1",
             "--max_num_load_retries=0", f"--monitoring_config_file={monitoring}"]
    with ServerProcess(flags) as server:
        assert server.version_states("mnist") == {1: ("AVAILABLE", "")}
        assert np.array_equal(grpc_predict(server, images)[1], expected[0])

        with Traffic(server, images) as traffic:
            wait_for(lambda: traffic.rest_ok and traffic.grpc_versions, what="first responses")
            push(digits_exports[1], base, 2)
            wait_for(lambda: server.version_states("mnist") == {2: ("AVAILABLE", ""), 1: ("END", "")},
                     what="version 2 to replace version 1")
            seen_v2 = len(traffic.grpc_versions)
            wait_for(lambda: len(traffic.grpc_versions) > seen_v2 + 5, what="traffic on version 2")

            broken = base / ".staging-3"
            broken.mkdir()
            (broken / "saved_model.pb").write_bytes(b"this is not a SavedModel")
            os.rename(broken, base / "3")
            states = wait_for(lambda: (s := server.version_states("mnist")).get(3, ("",))[0] == "END" and s,
                              what="broken version 3 to fail")
            assert states[3][1], "a failed load shows its error in the status API"
            assert states[2] == ("AVAILABLE", "")
            answered = len(traffic.grpc_versions)
            wait_for(lambda: len(traffic.grpc_versions) > answered + 5, what="traffic after the failed load")

        assert traffic.failures == []
        assert set(traffic.grpc_versions) == {1, 2}
        assert traffic.grpc_versions.index(2) > 0 and 1 not in traffic.grpc_versions[-5:]
        version, probabilities = grpc_predict(server, images)
        assert version == 2 and np.array_equal(probabilities, expected[1])
        status, answer = server.rest("POST", "/v1/models/mnist:predict", {"instances": images.tolist()})
        assert status == 200 and np.array_equal(rest_probabilities(answer), expected[1])

        status, metrics = server.rest("GET", "/monitoring/prometheus/metrics")
        assert status == 200
        assert ':tensorflow:serving:request_count{model_name="mnist",status="OK"}' in metrics
        assert "load_attempt_count" in metrics
    assert "Loading servable: {name: mnist version: 3} failed" in server.log()


def test_config_file_policy_labels_and_removal(tmp_path, digits_exports, images, expected):
    base = tmp_path / "models" / "mnist"
    base.mkdir(parents=True)
    push(digits_exports[0], base, 1)
    push(digits_exports[1], base, 2)
    config = tmp_path / "models.config"

    def write_config(stable):
        text = (f'model_config_list {{ config {{ name: "mnist" base_path: "{base}" model_platform: "tensorflow" '
                f'model_version_policy {{ all {{}} }} version_labels {{ key: "stable" value: {stable} }} }} }}\n')
        (tmp_path / "models.config.tmp").write_text(text)
        os.replace(tmp_path / "models.config.tmp", config)

    write_config(stable=1)
    # As in TF Serving, labels in the first config name versions that have not loaded yet: the flag allows it.
    flags = [f"--model_config_file={config}", "--model_config_file_poll_wait_seconds=1",
             "--file_system_poll_wait_seconds=1", "--allow_version_labels_for_unavailable_models"]
    with ServerProcess(flags) as server:
        assert server.version_states("mnist") == {2: ("AVAILABLE", ""), 1: ("AVAILABLE", "")}
        assert grpc_predict(server, images, label="stable")[0] == 1
        status, answer = server.rest("POST", "/v1/models/mnist/labels/stable:predict", {"instances": images.tolist()})
        assert status == 200 and np.array_equal(rest_probabilities(answer), expected[0])

        with Traffic(server, images) as traffic:
            write_config(stable=2)
            wait_for(lambda: grpc_predict(server, images, label="stable")[0] == 2, what="label moved by config")
            shutil.rmtree(base / "1")
            wait_for(lambda: server.version_states("mnist").get(1, ("",))[0] == "END", what="version 1 unloaded")
            wait_for(lambda: len(traffic.grpc_versions) > 5, what="traffic")
        assert traffic.failures == []
        assert set(traffic.grpc_versions) == {2}

        status, answer = server.rest("POST", "/v1/models/mnist/versions/1:predict", {"instances": images.tolist()})
        assert (status, answer) == (404, {"error": "Servable not found for request: Specific(mnist, 1)"})
        assert np.array_equal(grpc_predict(server, images, version=2)[1], expected[1])


def _run_server(*flags, timeout=120):
    env = dict(os.environ, TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.run([sys.executable, "-m", "serving", *flags], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=timeout)


@pytest.mark.parametrize("flags, message", [
    (["--port=abc", "--model_base_path=/m"], "Couldn't interpret value 'abc' for flag --port (expects int32)."),
    (["--model_name=mnist"], "Both --model_base_path and --model_config_file are empty!"),
    (["--model_config_file=/nonexistent/models.config"], "Cannot read --model_config_file '/nonexistent/models.config'"),
    (["--model_base_path=relative/path"], "Expected model default to have an absolute path or URI"),
    (["--model_base_path=/m", "--rest_api_port=99999"], "--rest_api_port=99999 is not a TCP port"),
])
def test_bad_flags_exit_non_zero_with_one_clear_line(flags, message):
    result = _run_server(*flags)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_a_model_whose_only_version_cannot_load_stops_the_server(tmp_path):
    version = tmp_path / "broken" / "1"
    version.mkdir(parents=True)
    (version / "saved_model.pb").write_bytes(b"garbage")
    result = _run_server("--model_name=broken", f"--model_base_path={tmp_path / 'broken'}", "--port=0",
                         "--grpc_socket_path=" + str(tmp_path / "grpc.sock"), "--max_num_load_retries=0")
    assert result.returncode == 1
    assert "1 model(s) did not become available: {{{name: broken version: 1} due to error: " in result.stderr
    assert "Traceback" not in result.stderr


def test_version_and_help():
    result = _run_server("--version")
    assert result.returncode == 0 and result.stdout.startswith("TensorFlow ModelServer: 2.16.1")
    result = _run_server("--help")
    assert result.returncode == 0
    assert "--rest_api_port" in result.stdout and "--model_config_file_poll_wait_seconds" in result.stdout
