"""TF Serving's Predict and GetModelStatus messages and calls for the gRPC client, without TensorFlow.

tensorflow-serving-api's generated modules import ``tensorflow.core.framework.*_pb2``, and importing
any ``tensorflow.*`` module runs ``tensorflow/__init__.py`` (seconds). The messages need only their
descriptors: each installed ``*_pb2.py`` holds its file's serialized FileDescriptorProto as one bytes
literal, which is read here (parsed, never executed) with its imports' descriptors into a private
DescriptorPool, and the message classes are built from that pool. Nothing is put in ``sys.modules``
or protobuf's default pool, so importing TensorFlow later in the same process is unaffected.
If an installed module has no such literal (a future protoc), the generated modules are used instead.
"""
from __future__ import annotations

import ast
import functools
import os
import sys
from typing import Callable, List, NamedTuple, Set, Tuple

__all__ = ["GrpcMessages", "load", "unary_call", "PREDICT_METHOD", "GET_MODEL_STATUS_METHOD"]

PREDICT_METHOD = "/tensorflow.serving.PredictionService/Predict"
GET_MODEL_STATUS_METHOD = "/tensorflow.serving.ModelService/GetModelStatus"
_MODULES = ("tensorflow_serving.apis.predict_pb2", "tensorflow_serving.apis.get_model_status_pb2")


class GrpcMessages(NamedTuple):
    """The message classes the client sends and reads, and a ModelVersionStatus.State number's name."""
    PredictRequest: type
    PredictResponse: type
    GetModelStatusRequest: type
    GetModelStatusResponse: type
    state_name: Callable[[int], str]


class DescriptorNotFound(LookupError):
    """An installed generated module does not hold its file's serialized descriptor in a form read here."""


@functools.lru_cache(maxsize=None)
def load() -> GrpcMessages:
    """The messages from a private pool (fast); from tensorflow-serving-api's modules if that fails."""
    try:
        return _from_private_pool()
    except DescriptorNotFound:
        return _from_generated_modules()


def unary_call(channel, method: str, request_class: type, response_class: type):
    """A callable for one unary gRPC method, as the generated stubs make (the path is the wire name)."""
    return channel.unary_unary(method, request_serializer=request_class.SerializeToString,
                               response_deserializer=response_class.FromString)


def _from_private_pool() -> GrpcMessages:
    from google.protobuf import descriptor_pool

    pool = descriptor_pool.DescriptorPool()
    added: Set[str] = set()
    for module in _MODULES:
        _add_module(pool, module, added)
    find = pool.FindMessageTypeByName
    states = find("tensorflow.serving.ModelVersionStatus").enum_types_by_name["State"]
    return GrpcMessages(_message_class(find("tensorflow.serving.PredictRequest")),
                        _message_class(find("tensorflow.serving.PredictResponse")),
                        _message_class(find("tensorflow.serving.GetModelStatusRequest")),
                        _message_class(find("tensorflow.serving.GetModelStatusResponse")),
                        lambda number: states.values_by_number[number].name)


def _add_module(pool, module: str, added: Set[str]) -> None:
    """Adds a generated module's file descriptor to the pool, after those of the modules it imports.

    Dependencies are followed through the modules' imports, not the .proto names: TensorFlow ships
    e.g. tsl/protobuf/error_codes.proto as tensorflow.tsl.protobuf.error_codes_pb2.
    """
    if module in added:
        return
    added.add(module)
    serialized, imported = read_generated_module(module)
    for dependency in imported:
        _add_module(pool, dependency, added)
    pool.AddSerializedFile(serialized)


def read_generated_module(module: str) -> Tuple[bytes, List[str]]:
    """The serialized FileDescriptorProto in an installed ``*_pb2`` module, and the ``*_pb2`` modules it
    imports; read from its source, without running it (running it would import its package)."""
    relative = module.replace(".", os.sep) + ".py"
    path = next((os.path.join(entry or ".", relative) for entry in sys.path
                 if os.path.isfile(os.path.join(entry or ".", relative))), None)
    if path is None:
        raise DescriptorNotFound(f"no generated module {module} on sys.path")
    with open(path, encoding="utf-8") as source:
        tree = ast.parse(source.read(), path)
    serialized, imported = None, []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and not node.level:  # from a.b import c_pb2 / from a.b_pb2 import *
            imported += [node.module] if node.module.endswith("_pb2") else \
                [f"{node.module}.{a.name}" for a in node.names if a.name.endswith("_pb2")]
        elif isinstance(node, ast.Import):
            imported += [a.name for a in node.names if a.name.endswith("_pb2")]
        elif isinstance(node, ast.Call) and serialized is None:  # AddSerializedFile(b"..."), or FileDescriptor(serialized_pb=b"...")
            if isinstance(node.func, ast.Attribute) and node.func.attr == "AddSerializedFile" and node.args:
                value = node.args[0]
            else:
                value = next((k.value for k in node.keywords if k.arg == "serialized_pb"), None)
            if isinstance(value, ast.Constant) and isinstance(value.value, bytes):
                serialized = value.value
    if serialized is None:
        raise DescriptorNotFound(f"{path} holds no serialized descriptor literal")
    return serialized, list(dict.fromkeys(imported))


def _message_class(descriptor) -> type:
    from google.protobuf import message_factory

    get_class = getattr(message_factory, "GetMessageClass", None)  # protobuf >= 4.21; GetPrototype before
    if get_class is not None:
        return get_class(descriptor)
    return message_factory.MessageFactory(descriptor.file.pool).GetPrototype(descriptor)


def _from_generated_modules() -> GrpcMessages:
    from tensorflow_serving.apis import get_model_status_pb2, predict_pb2

    states = get_model_status_pb2.ModelVersionStatus.State
    return GrpcMessages(predict_pb2.PredictRequest, predict_pb2.PredictResponse,
                        get_model_status_pb2.GetModelStatusRequest, get_model_status_pb2.GetModelStatusResponse,
                        states.Name)
