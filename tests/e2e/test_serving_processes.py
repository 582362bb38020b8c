"""--num_serving_processes=2 as users run it: ``python -m serving`` with two serving processes behind one set of
ports. Whatever process a connection reaches, the answers must be those of one server: predictions, status,
labels, reloads and metrics; a hot reload under traffic loses nothing; SIGTERM leaves no process behind. The
models are tiny SavedModels made here (version v answers v x the sum of each image). Processes that die:
test_serving_process_lifecycle.py."""
import os

os.environ["TF_USE_LEGACY_KERAS"] = "1"

import re  # noqa: E402
import shutil  # noqa: E402

import grpc  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402
from tensorflow_serving.apis import (get_model_status_pb2, model_management_pb2, model_service_pb2_grpc,  # noqa: E402
                                     predict_pb2, prediction_service_pb2_grpc)

from tests.e2e.test_model_server import push  # noqa: E402
from tests.server_process import BackgroundTraffic, ServerProcess, wait_for  # noqa: E402

IMAGES = np.arange(2 * 28 * 28, dtype=np.float32).reshape(2, 28, 28) / (28 * 28)
SUMS = IMAGES.sum(axis=(1, 2))
FRESH = [("grpc.use_local_subchannel_pool", 1)]  # a new channel opens its own connection


@pytest.fixture(scope="module")
def versions(tmp_path_factory):
    """{version: export dir}; version v answers {"total": v * sum(image)}."""
    class Tiny(tf.Module):
        def __init__(self, factor):
            super().__init__()
            self.factor = tf.Variable(factor, dtype=tf.float32)

        @tf.function(input_signature=[tf.TensorSpec([None, 28, 28], tf.float32, name="images")])
        def serve(self, images):
            return {"total": self.factor * tf.reduce_sum(images, axis=[1, 2])}

    exports = {}
    for version in (1, 2, 3):
        module = Tiny(float(version))
        path = str(tmp_path_factory.mktemp(f"tiny{version}") / "model")
        tf.saved_model.save(module, path, signatures={"serving_default": module.serve.get_concrete_function()})
        exports[version] = path
    return exports


def serving_pids(server):
    line = next(line for line in server.log_lines if "Serving with 2 processes" in line)
    return [int(p) for p in re.search(r"\(pids ([\d, ]+)\)", line).group(1).split(", ")]


def alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def parent_of(pid):
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])


def grpc_predict(target, version=None, label=None, model="m"):
    """(version, totals) over a new connection."""
    with grpc.insecure_channel(target, options=FRESH) as channel:
        request = predict_pb2.PredictRequest()
        request.model_spec.name = model
        if version is not None:
            request.model_spec.version.value = version
        if label is not None:
            request.model_spec.version_label = label
        request.inputs["images"].CopyFrom(tf.make_tensor_proto(IMAGES))
        response = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, timeout=30)
        return response.model_spec.version.value, tf.make_ndarray(response.outputs["total"])


def rest_predict(server, path="/v1/models/m:predict"):
    status, answer = server.rest("POST", path, {"instances": IMAGES.tolist()})
    assert status == 200, answer
    return np.asarray(answer["predictions"], np.float32)


def start(flags, base, **kwargs):
    return ServerProcess(["--model_name=m", f"--model_base_path={base}", "--num_serving_processes=2", *flags], **kwargs)


def test_two_processes_share_the_ports_metrics_and_stop_together(tmp_path, versions):
    base = tmp_path / "m"
    base.mkdir()
    push(versions[1], base, 1)
    socket_path = tmp_path / "grpc.sock"
    monitoring = tmp_path / "monitoring.config"
    monitoring.write_text('prometheus_config { enable: true path: "/metrics" }\n')
    server = start([f"--grpc_socket_path={socket_path}", f"--monitoring_config_file={monitoring}"], base)
    with server:
        pids = serving_pids(server)
        assert len(set(pids)) == 2 and all(parent_of(pid) == server.process.pid for pid in pids)
        sent = 0
        for _ in range(30):  # every request on a new connection: the kernel spreads them
            assert np.allclose(rest_predict(server), SUMS)
            sent += 1
        for target in [f"127.0.0.1:{server.grpc_port}"] * 15 + [f"unix:{socket_path}"] * 5:
            version, totals = grpc_predict(target)
            assert version == 1 and np.allclose(totals, SUMS)
            sent += 1
        pages = [server.rest("GET", "/metrics") for _ in range(6)]  # whichever process renders it
        assert all(status == 200 for status, _ in pages)
        assert {page for _, page in pages} == {pages[0][1]}
        assert f':tensorflow:serving:request_count{{model_name="m",status="OK"}} {sent}\n' in pages[0][1]
        assert ':tensorflow:cc:saved_model:load_attempt_count{model_path="' + str(base / "1") + \
               '",status="success"} 1\n' in pages[0][1]
        assert server.stop() == 0
    answered = {int(pid): int(n) for pid, n in
                re.findall(r"Serving process \d \(pid (\d+)\) stopped after answering (\d+) requests", server.log())}
    assert set(answered) == set(pids)
    assert all(n > 0 for n in answered.values()) and sum(answered.values()) == sent, answered
    wait_for(lambda: not any(alive(pid) for pid in pids), timeout=10, what="the serving processes to be gone")


class Traffic(BackgroundTraffic):
    """REST and gRPC requests for the latest version, each on a new connection, and requests for the highest
    version the status API reports AVAILABLE, sent right after it says so; every failure is kept."""

    def __init__(self, server):
        self.server, self.failures, self.latest, self.explicit = server, [], [], []
        self.unloaded_meanwhile = 0
        super().__init__(self._rest, self._grpc, self._explicit)

    def _run(self, what, fn):
        while not self.stopping.is_set():
            try:
                fn()
            except Exception as e:  # noqa: BLE001 - any error is a lost request
                self.failures.append((what, type(e).__name__, str(e)))

    def _rest(self):
        self._run("REST", lambda: rest_predict(self.server))

    def _grpc(self):
        self._run("gRPC", lambda: self.latest.append(grpc_predict(f"127.0.0.1:{self.server.grpc_port}")[0]))

    def _explicit(self):
        """A NOT_FOUND counts as lost unless the status no longer says AVAILABLE (the version was unloaded
        in between, as the policy unloads version v once v + 1 is available)."""
        def check():
            available = [v for v, (state, _) in self.server.version_states("m").items() if state == "AVAILABLE"]
            version = max(available)
            try:
                assert grpc_predict(f"127.0.0.1:{self.server.grpc_port}", version=version)[0] == version
                status, answer = self.server.rest("POST", f"/v1/models/m/versions/{version}:predict",
                                                  {"instances": IMAGES.tolist()})
                if status == 404:
                    raise LookupError(answer)
                assert status == 200 and np.allclose(answer["predictions"], version * SUMS), answer
            except (grpc.RpcError, LookupError) as e:
                not_found = isinstance(e, LookupError) or e.code() == grpc.StatusCode.NOT_FOUND
                if not (not_found and self.server.version_states("m")[version][0] != "AVAILABLE"):
                    raise
                self.unloaded_meanwhile += 1
                return
            self.explicit.append(version)
        self._run("explicit", check)


def test_hot_reload_under_traffic_loses_nothing_in_any_process(tmp_path, versions):
    base = tmp_path / "m"
    base.mkdir()
    push(versions[1], base, 1)
    with start(["--file_system_poll_wait_seconds=1", "--max_num_load_retries=0"], base) as server:
        with Traffic(server) as traffic:
            wait_for(lambda: traffic.latest and traffic.explicit, what="first answers")
            push(versions[2], base, 2)
            wait_for(lambda: server.version_states("m") == {2: ("AVAILABLE", ""), 1: ("END", "")},
                     what="version 2 to replace version 1")
            push(versions[3], base, 3)
            wait_for(lambda: server.version_states("m").get(3, ("",))[0] == "AVAILABLE", what="version 3")
            shutil.rmtree(base / "2")
            wait_for(lambda: server.version_states("m") == {3: ("AVAILABLE", ""), 2: ("END", ""), 1: ("END", "")},
                     what="version 2 to be unloaded")
            seen = len(traffic.latest), len(traffic.explicit)
            wait_for(lambda: len(traffic.latest) > seen[0] + 5 and len(traffic.explicit) > seen[1] + 2,
                     what="traffic on version 3")
        assert traffic.failures == []
        assert set(traffic.latest) == {1, 2, 3} == set(traffic.explicit)
        assert traffic.latest[-5:] == [3] * 5
        assert np.allclose(rest_predict(server), 3 * SUMS)


def reload_request(base, stable, duplicate=False):
    request = model_management_pb2.ReloadConfigRequest()
    for _ in range(2 if duplicate else 1):
        config = request.config.model_config_list.config.add(name="m", base_path=str(base),
                                                             model_platform="tensorflow")
        config.model_version_policy.all.SetInParent()
        config.version_labels["stable"] = stable
    return request


def test_status_labels_and_reloads_are_one_truth_across_processes(tmp_path, versions):
    base = tmp_path / "m"
    base.mkdir()
    push(versions[1], base, 1)
    push(versions[2], base, 2)
    config = tmp_path / "models.config"
    config.write_text(f'model_config_list {{ config {{ name: "m" base_path: "{base}" model_platform: "tensorflow" '
                      'model_version_policy { all {} } version_labels { key: "stable" value: 1 } } }\n')
    flags = [f"--model_config_file={config}", "--allow_version_labels_for_unavailable_models"]
    with ServerProcess(["--num_serving_processes=2", *flags]) as server:
        target = f"127.0.0.1:{server.grpc_port}"
        assert all(server.version_states("m") == {2: ("AVAILABLE", ""), 1: ("AVAILABLE", "")} for _ in range(10))
        assert {grpc_predict(target, label="stable")[0] for _ in range(10)} == {1}
        assert all(np.allclose(rest_predict(server, "/v1/models/m/labels/stable:predict"), SUMS) for _ in range(10))

        with grpc.insecure_channel(target) as channel:
            model_service = model_service_pb2_grpc.ModelServiceStub(channel)
            model_service.HandleReloadConfigRequest(reload_request(base, stable=2), timeout=60)
            with pytest.raises(grpc.RpcError) as info:
                model_service.HandleReloadConfigRequest(reload_request(base, 2, duplicate=True), timeout=60)
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert info.value.details() == "Illegal to list model m multiple times in config list"
        # the reload has returned: every process routes the label to its new version already
        assert {grpc_predict(target, label="stable")[0] for _ in range(10)} == {2}
        assert all(np.allclose(rest_predict(server, "/v1/models/m/labels/stable:predict"), 2 * SUMS)
                   for _ in range(10))
        for _ in range(10):
            with grpc.insecure_channel(target, options=FRESH) as channel:
                request = get_model_status_pb2.GetModelStatusRequest()
                request.model_spec.name = "m"
                response = model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus(request, timeout=30)
                assert [(s.version, s.state) for s in response.model_version_status] == [(2, 30), (1, 30)]
