"""serving.grpc_api: what one Predict request may make the server allocate, and tensors TensorFlow takes but
numpy cannot hold. A real GrpcServer on 127.0.0.1 over a stub servable that decodes every input it is
given; memory is read from /proc/self/status, since the server runs in this process."""
import os
import time

os.environ["TF_USE_LEGACY_KERAS"] = "1"

import grpc  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from tensorflow.core.framework import types_pb2  # noqa: E402
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc  # noqa: E402

from serving.grpc_api.front import GrpcServer  # noqa: E402
from serving.grpc_api.services import MAX_REQUEST_TENSOR_BYTES  # noqa: E402
from serving.grpc_api.tensor_proto import NUMPY_MAX_DIMS  # noqa: E402
from tests.component.conftest import StubRegistry  # noqa: E402

MB = 1 << 20


class DecodingModel:
    """Decodes every input (as the core does) and answers with their shapes."""

    def predict(self, signature_name, inputs, output_filter):
        return {alias: np.array(inputs[alias].shape, np.int64) for alias in inputs}


def memory_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/self/status")


@pytest.fixture
def start():
    servers = []

    def start(**kwargs):
        server = GrpcServer(StubRegistry(DecodingModel()), -1, host="127.0.0.1", max_threads=2, **kwargs)
        server.start()
        servers.append(server)
        channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
        servers.append(channel)
        return prediction_service_pb2_grpc.PredictionServiceStub(channel)

    yield start
    for server in reversed(servers):
        server.close() if isinstance(server, grpc.Channel) else server.stop()


def request(**inputs):
    """A PredictRequest for the stub; each input is (dtype enum, shape, {typed field: values})."""
    r = predict_pb2.PredictRequest()
    r.model_spec.name = "stub"
    for alias, (dtype, shape, fields) in inputs.items():
        tensor = r.inputs[alias]
        tensor.dtype = dtype
        tensor.tensor_shape.SetInParent()
        for size in shape:
            tensor.tensor_shape.dim.add(size=size)
        for field, values in fields.items():
            getattr(tensor, field).extend(values)
    return r


def failure(call, r):
    with pytest.raises(grpc.RpcError) as info:
        call(r, timeout=30)
    return info.value.code(), info.value.details()


def test_a_45_byte_request_for_1_9_gb_is_refused_before_allocating(start):
    stub = start()
    huge = request(images=(types_pb2.DT_FLOAT, (600000, 28, 28), {"float_val": [1.0]}))
    assert huge.ByteSize() < 50  # 45 with the model name "mnist"
    rss, peak = memory_kb("VmRSS"), memory_kb("VmHWM")
    started = time.monotonic()
    code, message = failure(stub.Predict, huge)
    elapsed = time.monotonic() - started
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert message == ("The request's input tensors (the largest: images, DT_FLOAT [600000,28,28]) would take "
                       f"1881600000 bytes, more than the {MAX_REQUEST_TENSOR_BYTES} bytes one request may "
                       "allocate: send a smaller request, or raise --max_request_tensor_bytes.")
    assert MAX_REQUEST_TENSOR_BYTES == 1 << 30
    assert elapsed < 5
    # decoding it would have taken 1.8 GB: neither the resident set nor its peak may have moved by 100 MB
    assert memory_kb("VmHWM") - peak < 100 * 1024 and memory_kb("VmRSS") - rss < 100 * 1024
    ok = stub.Predict(request(images=(types_pb2.DT_FLOAT, (2, 28, 28), {"float_val": [1.0]})), timeout=30)
    assert list(ok.outputs["images"].int64_val) == [2, 28, 28]  # the server goes on


def test_the_limit_counts_every_input_and_strings_by_what_they_fill(start):
    stub = start(max_request_tensor_bytes=4096)
    fits = request(a=(types_pb2.DT_FLOAT, (512,), {"float_val": [1.0]}), b=(types_pb2.DT_INT64, (256,), {}))
    assert list(stub.Predict(fits, timeout=30).outputs["a"].int64_val) == [512]  # 2048 + 2048 bytes
    over = request(a=(types_pb2.DT_FLOAT, (512,), {"float_val": [1.0]}), b=(types_pb2.DT_INT64, (257,), {}))
    code, message = failure(stub.Predict, over)
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert message.startswith("The request's input tensors (the largest: b, DT_INT64 [257]) would take 4104 bytes, "
                              "more than the 4096 bytes")
    strings = request(s=(types_pb2.DT_STRING, (10,), {"string_val": [b"x" * 400]}))  # 10 x (24 + 400)
    assert failure(stub.Predict, strings)[0] == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_more_dimensions_than_numpy_holds_are_invalid_argument_saying_the_limit(start):
    stub = start()
    deep = request(images=(types_pb2.DT_FLOAT, (1,) * 40, {"float_val": [1.0]}))
    assert failure(stub.Predict, deep) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        f"tensor parsing error: images: its shape has 40 dimensions; this server holds at most {NUMPY_MAX_DIMS} "
        f"(numpy's limit, TensorFlow's is 254): send the tensor with at most {NUMPY_MAX_DIMS} dimensions")
    too_deep_for_tf = request(images=(types_pb2.DT_FLOAT, (1,) * 255, {"float_val": [1.0]}))
    assert failure(stub.Predict, too_deep_for_tf) == (grpc.StatusCode.INVALID_ARGUMENT, "tensor parsing error: images")
    ok = request(images=(types_pb2.DT_FLOAT, (1,) * NUMPY_MAX_DIMS, {"float_val": [1.0]}))
    assert list(stub.Predict(ok, timeout=30).outputs["images"].int64_val) == [1] * NUMPY_MAX_DIMS
