"""The InfraValidator's canaries: real test digits through every serving signature, over gRPC and REST,
each answer checked against the candidate's own outputs computed in this process.

A server that answers, but answers something else than the model computes (a wrong input
conversion, a lost output, a signature fed the wrong tensor), fails validation as surely as one
that refuses the model: :class:`AnswersDiffer` names the signature and the API.
"""
from __future__ import annotations

import http.client
import os
from typing import Dict, List, Mapping

import numpy as np

from components.data import features
from components.infra import serving_requests
from tfx.components.infra_validator import error_types

TOLERANCE = 1e-5  # absolute and relative, on float outputs (scores in 0..1)
_TIMEOUT_SECONDS = 60.0


class AnswersDiffer(error_types.ValidationFailed):
    """The served answers are not the model's own: a verdict on the model and server, not worth a retry."""


def test_images(examples_uri: str, split: str, count: int) -> np.ndarray:
    """The first ``count`` images (uint8 [N, 784]) of ``split`` in an Examples artifact's directory."""
    import tensorflow as tf

    files = sorted(tf.io.gfile.glob(os.path.join(examples_uri, f"Split-{split}", "*")))  # also gs:// in a cluster
    if not files:
        raise ValueError(f"the Examples artifact at {examples_uri} has no split {split!r} for canary requests")
    compression = "GZIP" if files[0].endswith(".gz") else ""
    images = []
    for record in tf.data.TFRecordDataset(files, compression_type=compression).take(count):
        example = tf.train.Example.FromString(record.numpy())
        images.append(example.features.feature[features.IMAGE_KEY].int64_list.value)
    if not images:
        raise ValueError(f"split {split!r} of {examples_uri} holds no examples for canary requests")
    return np.asarray(images, dtype=np.uint8)


def build(model_path: str, model_name: str, images: np.ndarray):
    """(the model's signatures, one CanaryRequest per signature carrying all ``images``)."""
    signatures = serving_requests.model_signatures(model_path)
    return signatures, serving_requests.build_requests(images, model_name, signatures)


def expected_outputs(model_path: str, requests, signatures) -> List[Dict[str, np.ndarray]]:
    """What the candidate computes for each request here, with tf.saved_model.load."""
    import tensorflow as tf

    loaded = tf.saved_model.load(model_path)
    results = []
    for request in requests:
        function = loaded.signatures[request.signature]
        if request.method == serving_requests.CLASSIFY:
            (alias,) = signatures[request.signature].inputs
            examples = [e.SerializeToString() for e in request.grpc_request.input.example_list.examples]
            inputs = {alias: tf.constant(examples, dtype=tf.string)}
        else:
            inputs = {alias: tf.constant(tf.make_ndarray(proto)) for alias, proto in request.grpc_request.inputs.items()}
        results.append({alias: tensor.numpy() for alias, tensor in function(**inputs).items()})
    return results


def _grpc_answer(channel, request):
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    call = stub.Classify if request.method == serving_requests.CLASSIFY else stub.Predict
    return serving_requests.grpc_outputs(call(request.grpc_request, timeout=_TIMEOUT_SECONDS))


def _rest_answer(endpoint: str, request) -> Dict[str, np.ndarray]:
    host, port = endpoint.rsplit(":", 1)
    connection = http.client.HTTPConnection(host, int(port), timeout=_TIMEOUT_SECONDS)
    try:
        connection.request("POST", request.rest_path, body=request.rest_body.encode(),
                           headers={"Content-Type": "application/json"})
        response = connection.getresponse()
        body = response.read().decode("utf-8")
    finally:
        connection.close()
    if response.status != 200:
        raise error_types.ValidationFailed(f"REST {request.rest_path} answered HTTP {response.status}: {body[:500]}")
    return serving_requests.rest_outputs(request.method, body)


def _plain(array: np.ndarray) -> np.ndarray:
    array = np.asarray(array)
    if array.dtype.kind in "OSU":
        return np.vectorize(lambda v: v.decode() if isinstance(v, bytes) else str(v), otypes=[object])(array)
    return array


def difference(expected: Mapping[str, np.ndarray], got: Mapping[str, np.ndarray]) -> str:
    """'' when ``got`` holds every expected output, equal (floats within TOLERANCE); else what differs."""
    if set(got) == {"outputs"} and len(expected) == 1:  # REST names no output when a signature has one
        got = {next(iter(expected)): got["outputs"]}
    for alias, want in sorted(expected.items()):
        if alias not in got:
            return f"output {alias!r} is missing (answered: {sorted(got)})"
        want, have = _plain(want), _plain(got[alias])
        if want.shape != have.shape:
            return f"output {alias!r} has shape {list(have.shape)}, the model's is {list(want.shape)}"
        if want.dtype.kind == "f":
            if not np.allclose(have.astype(np.float64), want, rtol=TOLERANCE, atol=TOLERANCE):
                worst = float(np.max(np.abs(have.astype(np.float64) - want)))
                return f"output {alias!r} differs by up to {worst:.3g} (tolerance {TOLERANCE})"
        elif not np.array_equal(want, have.astype(want.dtype)):
            return f"output {alias!r} differs in {int(np.sum(want != have.astype(want.dtype)))} value(s)"
    return ""


def check(model_path: str, requests, signatures, grpc_endpoint: str, rest_endpoint: str) -> int:
    """Sends every canary over gRPC and REST; raises AnswersDiffer (or ValidationFailed when a call fails);
    returns the number of calls made."""
    import grpc

    expected = expected_outputs(model_path, requests, signatures)
    calls = 0
    with grpc.insecure_channel(grpc_endpoint) as channel:
        for request, want in zip(requests, expected):
            for api, answer in (("gRPC", lambda: _grpc_answer(channel, request)),
                                ("REST", lambda: _rest_answer(rest_endpoint, request))):
                try:
                    got = answer()
                except grpc.RpcError as e:
                    raise error_types.ValidationFailed(
                        f"gRPC {request.method} on signature {request.signature} failed: {e.code().name}: "
                        f"{e.details()}") from None
                calls += 1
                problem = difference(want, got)
                if problem:
                    raise AnswersDiffer(f"answers differ from the model's own outputs on signature "
                                        f"{request.signature} ({api} {request.method}): {problem}")
    return calls
