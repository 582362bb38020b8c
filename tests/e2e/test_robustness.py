"""Faults found by injection, against the real ``python -m serving`` process: a broken version must not hold
back the next good one for its load retries (5 x 60 s by default), and a tiny gRPC request must not make the
server allocate gigabytes. The model is a tiny SavedModel made here."""
import os

os.environ["TF_USE_LEGACY_KERAS"] = "1"

import threading  # noqa: E402
import time  # noqa: E402

import grpc  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402
from tensorflow.core.framework import types_pb2  # noqa: E402
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc  # noqa: E402

from tests.e2e.test_model_server import push  # noqa: E402
from tests.server_process import ServerProcess, wait_for  # noqa: E402

POLL = 1  # --file_system_poll_wait_seconds
SOON = 20  # seconds: a few poll periods plus a tiny model's load, far below one 60 s retry interval


@pytest.fixture(scope="module")
def tiny_export(tmp_path_factory):
    """serving_default: images float32 [None, 28, 28] -> total, each image's sum."""
    class Tiny(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 28, 28], tf.float32, name="images")])
        def serve(self, images):
            return {"total": tf.reduce_sum(images, axis=[1, 2])}

    module = Tiny()
    path = str(tmp_path_factory.mktemp("tiny") / "model")
    tf.saved_model.save(module, path, signatures={"serving_default": module.serve.get_concrete_function()})
    return path


def push_broken(base, version):
    staging = base / f".staging-{version}"
    staging.mkdir()
    (staging / "saved_model.pb").write_bytes(b"this is not a SavedModel")
    os.rename(staging, base / str(version))


def failed_once(server, version):
    return any(f"Loading servable: {{name: mnist version: {version}}} failed" in line for line in server.log_lines)


def test_a_broken_version_does_not_hold_back_the_next_good_one(tmp_path, tiny_export):
    base = tmp_path / "mnist"
    base.mkdir()
    push_broken(base, 1)
    # the default --max_num_load_retries=5 and --load_retry_interval_micros=60000000
    server = ServerProcess(["--model_name=mnist", f"--model_base_path={base}",
                            f"--file_system_poll_wait_seconds={POLL}"], startup_timeout=120)
    pushed = {}

    def push_good_version_2_once_1_has_failed():
        wait_for(lambda: failed_once(server, 1), timeout=100, what="version 1's first load to fail")
        push(tiny_export, base, 2)
        pushed["at"] = time.monotonic()

    pusher = threading.Thread(target=push_good_version_2_once_1_has_failed, daemon=True)
    pusher.start()
    with server:  # ready once a version is available: start-up waited for version 2, not for 1's retries
        ready = time.monotonic()
        pusher.join(10)
        assert "at" in pushed and ready - pushed["at"] < SOON
        states = server.version_states("mnist")
        assert states[2] == ("AVAILABLE", "")
        assert states[1][0] == "END" and states[1][1], "version 1's status says why it did not load"

        # the same while serving: broken 3 shows its error while it waits to retry; good 4 is not held back
        push_broken(base, 3)
        states = wait_for(lambda: (s := server.version_states("mnist")).get(3, ("",))[0] == "LOADING" and s[3][1]
                          and s, timeout=SOON, what="version 3 to show its load error while waiting to retry")
        assert states[2] == ("AVAILABLE", "")
        push(tiny_export, base, 4)
        started = time.monotonic()
        wait_for(lambda: server.version_states("mnist").get(4) == ("AVAILABLE", ""), timeout=SOON,
                 what="version 4 to be served")
        assert time.monotonic() - started < SOON
        # version 2 is unloaded after 4 is available (UNLOADING, then END): wait for it, not for a read at once
        states = wait_for(lambda: (s := server.version_states("mnist")).get(2, ("",))[0] == "END"
                          and s.get(3, ("",))[0] == "END" and s, timeout=SOON, what="versions 2 and 3 to end")
        assert states[3][0] == "END" and states[3][1] and states[2][0] == "END"
        status, answer = server.rest("POST", "/v1/models/mnist:predict", {"instances": [[[1.0] * 28] * 28]})
        assert (status, answer) == (200, {"predictions": [784.0]})
    assert "Retrying of Loading servable: {name: mnist version: 3} was cancelled." in server.log()


def memory_kb(pid) -> dict:
    """{pid: (VmRSS, VmHWM)} of the server and every process under it (serving processes, if any)."""
    pids, found = [pid], {}
    while pids:
        pid = pids.pop()
        fields = {}
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                name, _, value = line.partition(":")
                fields[name] = value
        found[pid] = (int(fields["VmRSS"].split()[0]), int(fields["VmHWM"].split()[0]))
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                pids.extend(int(child) for child in f.read().split())
    return found


def test_a_45_byte_request_cannot_make_the_server_allocate_gigabytes(tmp_path, tiny_export):
    base = tmp_path / "mnist"
    base.mkdir()
    push(tiny_export, base, 1)
    limit = 1_500_000_000  # below the request's 1.88 GB: also shows the flag reaches the gRPC front
    with ServerProcess(["--model_name=mnist", f"--model_base_path={base}", f"--max_request_tensor_bytes={limit}"],
                       startup_timeout=120) as server:
        request = predict_pb2.PredictRequest()
        request.model_spec.name = "mnist"
        images = request.inputs["images"]
        images.dtype = types_pb2.DT_FLOAT
        for size in (600000, 28, 28):
            images.tensor_shape.dim.add(size=size)
        images.float_val.append(1.0)
        assert request.ByteSize() == 45
        before = memory_kb(server.process.pid)
        with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            started = time.monotonic()
            with pytest.raises(grpc.RpcError) as info:
                stub.Predict(request, timeout=30)
            assert time.monotonic() - started < 5
            assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert info.value.details() == (
                "The request's input tensors (the largest: images, DT_FLOAT [600000,28,28]) would take 1881600000 "
                f"bytes, more than the {limit} bytes one request may allocate: send a smaller request, or raise "
                "--max_request_tensor_bytes.")
            after = memory_kb(server.process.pid)
            for pid, (rss, peak) in before.items():  # decoding would have taken 1.8 GB in one of them
                assert after[pid][1] - peak < 100 * 1024 and after[pid][0] - rss < 100 * 1024, (before, after)

            deep = predict_pb2.PredictRequest()
            deep.model_spec.name = "mnist"
            deep.inputs["images"].dtype = types_pb2.DT_FLOAT
            for _ in range(40):
                deep.inputs["images"].tensor_shape.dim.add(size=1)
            deep.inputs["images"].float_val.append(1.0)
            with pytest.raises(grpc.RpcError) as info:
                stub.Predict(deep, timeout=30)
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "40 dimensions; this server holds at most 32" in info.value.details()

            request.inputs["images"].tensor_shape.dim[0].size = 2  # the same request, 2 images: served
            response = stub.Predict(request, timeout=30)
            assert list(response.outputs["total"].float_val) == [784.0, 784.0]
