"""Requests through every serving signature of an exported model, built from real digits.

One builder serves the InfraValidator's canaries (gRPC and REST) and the warmup records written at
export (``components/warmup.py``), so both exercise exactly what clients send:

- a Predict signature taking float pixels (``serving_default``: ``images`` float32 [N, 28, 28]) gets a
  PredictRequest with the raw 0..255 pixels, and REST ``{"signature_name", "instances"}``;
- a Predict signature taking one DT_STRING tensor (``serving_examples``) gets serialized tf.Examples,
  and REST instances as ``{"b64": ...}`` (TF Serving's JSON for binary strings);
- a Classify signature (``classify``) gets a ClassificationRequest, and REST ``:classify`` with
  ``{"signature_name", "examples"}``, the examples as JSON objects TF Serving turns into tf.Examples.

TFX's own request builder (``tfx/components/infra_validator/request_builder.py``) only builds
tf.Example requests, so the pixel signature needs this. The tf.Examples carry ``image`` alone, as
clients send them: the signatures parse no label. The signatures are read from ``saved_model.pb``
itself, so a signature the model gains or loses is covered without a change here, and one this
module cannot feed is an error rather than silently skipped.
"""
from __future__ import annotations

import base64
import json
import os
from dataclasses import dataclass
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from components.data import features

PREDICT_METHOD_NAME = "tensorflow/serving/predict"
CLASSIFY_METHOD_NAME = "tensorflow/serving/classify"
DEFAULT_SIGNATURE = "serving_default"
PREDICT, CLASSIFY = "predict", "classify"  # CanaryRequest.method: the API called (TF Serving's REST verb)
SERVE_TAG = "serve"


@dataclass(frozen=True)
class SignatureInputs:
    """What a request to one signature must carry: its method and its inputs (alias -> (dtype, shape))."""
    method_name: str
    inputs: Mapping[str, Tuple[str, Optional[Tuple[int, ...]]]]  # dtype as "DT_FLOAT"; shape None if unknown


@dataclass(frozen=True)
class CanaryRequest:
    """One request to one signature, in both of TF Serving's APIs.

    ``grpc_request`` is a ``tensorflow_serving.apis`` PredictRequest or ClassificationRequest (send it
    with PredictionService's method named by ``method``); ``rest_body`` is the JSON text to POST at
    ``rest_path``."""
    signature: str
    method: str  # "predict" or "classify"
    grpc_request: object
    rest_path: str
    rest_body: str


def model_signatures(export_dir: str, tags: Sequence[str] = (SERVE_TAG,)) -> Dict[str, SignatureInputs]:
    """The serving signatures of a SavedModel, from its ``saved_model.pb`` (no graph is loaded)."""
    from tensorflow.core.framework import types_pb2
    from tensorflow.core.protobuf import saved_model_pb2

    path = os.path.join(export_dir, "saved_model.pb")
    saved_model = saved_model_pb2.SavedModel()
    with open(path, "rb") as f:
        saved_model.ParseFromString(f.read())
    for meta_graph in saved_model.meta_graphs:
        if set(meta_graph.meta_info_def.tags) == set(tags):
            break
    else:
        raise ValueError(f"{path} has no MetaGraph tagged {list(tags)}; export the model with "
                         "tf.saved_model.save or Keras model.save, which tag it 'serve'")
    signatures = {}
    for name, signature_def in sorted(meta_graph.signature_def.items()):
        if name.startswith("__"):  # __saved_model_init_op: TF's own, not a serving signature
            continue
        inputs = {}
        for alias, info in signature_def.inputs.items():
            shape = None if info.tensor_shape.unknown_rank else tuple(d.size for d in info.tensor_shape.dim)
            inputs[alias] = (types_pb2.DataType.Name(info.dtype), shape)
        signatures[name] = SignatureInputs(signature_def.method_name, inputs)
    return signatures


def as_pixels(images: np.ndarray) -> np.ndarray:
    """Digits in MNIST form (integers 0..255, [N, 784] or [N, 28, 28]) as uint8 [N, 784]."""
    images = np.asarray(images)
    if images.ndim not in (2, 3) or images.shape[0] == 0 or images[0].size != features.NUM_PIXELS:
        raise ValueError(f"images must be a non-empty [N, 784] or [N, 28, 28] array of digits, got shape "
                         f"{images.shape}")
    if images.size and (images.min() < 0 or images.max() > 255 or not np.all(np.equal(np.mod(images, 1), 0))):
        raise ValueError("images must hold integer pixels 0..255 (MNIST form); scale 0..1 floats by 255 "
                         "and round them first")
    return images.reshape(len(images), features.NUM_PIXELS).astype(np.uint8)


def serialized_examples(images: np.ndarray) -> List[bytes]:
    """tf.Examples as clients send them: ``image`` (784 int64 pixels) and nothing else."""
    from tensorflow.core.example import example_pb2

    out = []
    for pixels in as_pixels(images):
        example = example_pb2.Example()
        example.features.feature[features.IMAGE_KEY].int64_list.value.extend(pixels.tolist())
        out.append(example.SerializeToString())
    return out


def rest_path(model_name: str, method: str, version: Optional[int] = None) -> str:
    """TF Serving's REST path: /v1/models/<name>[/versions/<v>]:<method>."""
    return f"/v1/models/{model_name}" + (f"/versions/{version}" if version is not None else "") + f":{method}"


def build_requests(images: np.ndarray, model_name: str, signatures: Mapping[str, SignatureInputs],
                   version: Optional[int] = None) -> List[CanaryRequest]:
    """One CanaryRequest per signature (sorted by name), each carrying all ``images``.

    ``signatures`` is what ``model_signatures(export_dir)`` returns. Raises ValueError for a signature
    that takes inputs other than float pixels [N, 28, 28] or one string tensor of tf.Examples."""
    from tensorflow_serving.apis import classification_pb2, predict_pb2

    pixels = as_pixels(images)
    examples = serialized_examples(pixels)
    requests = []
    for name in sorted(signatures):
        signature = signatures[name]
        kind = _input_kind(name, signature)
        if signature.method_name == CLASSIFY_METHOD_NAME:
            request = classification_pb2.ClassificationRequest()
            _model_spec(request.model_spec, model_name, name, version)
            for serialized in examples:
                request.input.example_list.examples.add().ParseFromString(serialized)
            body = {"signature_name": name,
                    "examples": [{features.IMAGE_KEY: row.tolist()} for row in pixels.astype(np.int64)]}
            requests.append(CanaryRequest(name, CLASSIFY, request, rest_path(model_name, CLASSIFY, version),
                                          json.dumps(body)))
            continue
        (alias,) = signature.inputs
        request = predict_pb2.PredictRequest()
        _model_spec(request.model_spec, model_name, name, version)
        if kind == "pixels":
            floats = pixels.reshape(-1, features.IMAGE_SIZE, features.IMAGE_SIZE).astype(np.float32)
            request.inputs[alias].CopyFrom(_tensor_proto(floats))
            instances = floats.tolist()
        else:
            request.inputs[alias].CopyFrom(_tensor_proto(np.array(examples, dtype=object)))
            instances = [{"b64": base64.b64encode(e).decode("ascii")} for e in examples]
        requests.append(CanaryRequest(name, PREDICT, request, rest_path(model_name, PREDICT, version),
                                      json.dumps({"signature_name": name, "instances": instances})))
    return requests


def _input_kind(name: str, signature: SignatureInputs) -> str:
    """"pixels" or "examples"; ValueError naming what the signature takes otherwise."""
    if signature.method_name not in (PREDICT_METHOD_NAME, CLASSIFY_METHOD_NAME):
        raise ValueError(f"signature {name!r} has method {signature.method_name!r}; canary and warmup requests "
                         f"are built for {PREDICT_METHOD_NAME} and {CLASSIFY_METHOD_NAME} signatures only")
    if len(signature.inputs) == 1:
        dtype, shape = next(iter(signature.inputs.values()))
        if dtype == "DT_STRING" and (shape is None or len(shape) == 1):
            return "examples"
        if (signature.method_name == PREDICT_METHOD_NAME and dtype == "DT_FLOAT"
                and shape is not None and shape[1:] == (features.IMAGE_SIZE, features.IMAGE_SIZE)):
            return "pixels"
    raise ValueError(f"signature {name!r} takes {dict(signature.inputs)}; requests can be built for one float "
                     f"input [N, {features.IMAGE_SIZE}, {features.IMAGE_SIZE}] (raw pixels) or one string "
                     "input [N] (serialized tf.Examples)")


def _model_spec(spec, model_name: str, signature: str, version: Optional[int]) -> None:
    spec.name, spec.signature_name = model_name, signature
    if version is not None:
        spec.version.value = version


def _tensor_proto(array: np.ndarray):
    import tensorflow as tf

    return tf.make_tensor_proto(array)


def grpc_outputs(response) -> Dict[str, np.ndarray]:
    """A PredictResponse's outputs, or a ClassificationResponse as ``classes`` (labels [N, K]) and
    ``scores`` [N, K]: the same keys as the signature's own outputs, for comparing with in-process runs."""
    import tensorflow as tf

    if hasattr(response, "outputs"):
        return {alias: tf.make_ndarray(proto) for alias, proto in response.outputs.items()}
    rows = response.result.classifications
    return {"classes": np.array([[c.label for c in row.classes] for row in rows], dtype=object),
            "scores": np.array([[c.score for c in row.classes] for row in rows], dtype=np.float32)}


def rest_outputs(method: str, body: str) -> Dict[str, np.ndarray]:
    """A REST answer (JSON text) as ``grpc_outputs`` returns the gRPC one."""
    answer = json.loads(body)
    if method == CLASSIFY:
        results = answer["results"]
        return {"classes": np.array([[label for label, _ in row] for row in results], dtype=object),
                "scores": np.array([[score for _, score in row] for row in results], dtype=np.float32)}
    predictions = answer["predictions"]
    if predictions and isinstance(predictions[0], dict):
        return {key: np.array([p[key] for p in predictions]) for key in predictions[0]}
    return {"outputs": np.array(predictions)}
