"""TF Serving 2.16's gRPC transport: a grpc.server carrying PredictionService and ModelService, whose
bodies are ``serving.grpc_api.services.Services``.

Sources, tensorflow/serving 2.16.1:
- ``model_servers/server.cc``: listeners, SetMaxMessageSize(kint32max), channel arguments, health service.
- ``model_servers/grpc_status_util.cc`` ToGRPCStatus(): a message over 1024 bytes is cut and ends "...TRUNCATED".
- grpc's GenericDeserialize(): a request that does not parse is INTERNAL with an empty message.
"""
from __future__ import annotations

import contextlib
import logging
from concurrent import futures

import grpc
from tensorflow_serving.apis import inference_pb2

from serving.errors import ServingError
from serving.grpc_api.services import MAX_REQUEST_TENSOR_BYTES, METHODS, Services

log = logging.getLogger(__name__)

MAX_MESSAGE_SIZE = 2**31 - 1  # ServerBuilder::SetMaxMessageSize(tensorflow::kint32max)
_MESSAGE_LIMIT = 1024  # ToGRPCStatus's kErrorMessageLimit


def _parser(request_class):
    def parse(data: bytes):
        try:
            return request_class.FromString(data), data
        except Exception:  # noqa: BLE001 - answered as GenericDeserialize answers it
            return None, data
    return parse


def _model_name(request) -> str:
    if isinstance(request, inference_pb2.MultiInferenceRequest):
        return request.tasks[0].model_spec.name if request.tasks else ""
    return request.model_spec.name


def _truncate(message: str) -> str:
    data = message.encode("utf-8", "replace")
    if len(data) <= _MESSAGE_LIMIT:
        return message
    return data[:_MESSAGE_LIMIT].decode("utf-8", "ignore") + "...TRUNCATED"


class GrpcServer:
    """grpc.server over both services with ``max_threads`` workers (ResourceQuota::SetMaxThreads) and 2 GiB
    messages unless ``channel_arguments`` say otherwise. port 0: no TCP listener (then a socket_path is
    required, as in server.cc); port -1: an ephemeral port, for tests."""

    def __init__(self, registry, port: int, host: str = "0.0.0.0", *, socket_path: str = "",
                 max_threads: int = 8, channel_arguments=(), metrics=None, reload_config=None,
                 enable_health_check: bool = False, max_request_tensor_bytes: int = MAX_REQUEST_TENSOR_BYTES):
        if port == 0 and not socket_path:
            raise ValueError("At least one of server_options.grpc_port or server_options.grpc_socket_path "
                             "must be set.")
        if enable_health_check:
            try:
                import grpc_health.v1.health  # noqa: F401
            except ImportError:
                raise ValueError("--enable_grpc_healthcheck_service needs the grpcio-health-checking package "
                                 "(grpc_health), which is not installed") from None
        self.services = Services(registry, reload_config, max_request_tensor_bytes)
        self.metrics, self.enable_health_check = metrics, enable_health_check
        self.host, self.socket_path, self.max_threads = host, socket_path, max_threads
        self.channel_arguments = list(channel_arguments)
        self._requested_port, self._port, self._server = port, 0, None

    @property
    def port(self) -> int:
        return self._port

    def _handler(self, name: str, api):
        method = getattr(self.services, name)

        def handle(parsed, context):
            request, data = parsed
            if request is None:
                context.abort(grpc.StatusCode.INTERNAL, "")
            try:
                with (self.metrics.request(_model_name(request), api, "GRPC")
                      if self.metrics is not None and api else contextlib.nullcontext()):
                    try:
                        return method(request, data)
                    except ServingError:
                        raise
                    except Exception as e:  # noqa: BLE001 - a bug is answered as INTERNAL; the server goes on
                        log.exception("gRPC %s failed", api or name)
                        raise ServingError(f"{type(e).__name__}: {e}", "INTERNAL") from None
            except ServingError as e:
                error = e
            context.abort(grpc.StatusCode[error.code], _truncate(error.message))
        return handle

    def start(self) -> None:
        if self._server is not None:
            return
        options = {"grpc.max_receive_message_length": MAX_MESSAGE_SIZE,
                   "grpc.max_send_message_length": MAX_MESSAGE_SIZE}
        options.update(dict(self.channel_arguments))  # ServerBuilder applies these after the size limits
        server = grpc.server(futures.ThreadPoolExecutor(self.max_threads, thread_name_prefix="grpc-front"),
                             options=list(options.items()))
        server.add_generic_rpc_handlers(tuple(grpc.method_handlers_generic_handler(f"tensorflow.serving.{service}", {
            method: grpc.unary_unary_rpc_method_handler(
                self._handler(name, api), request_deserializer=_parser(request_class),
                response_serializer=lambda response: response.SerializeToString())
            for method, (name, request_class, api) in methods.items()}) for service, methods in METHODS.items()))
        if self.enable_health_check:
            self._add_health(server)
        if self._requested_port:
            self._port = server.add_insecure_port(f"{self.host}:{max(self._requested_port, 0)}")
        if self.socket_path:
            server.add_insecure_port(f"unix:{self.socket_path}")
        server.start()
        self._server = server

    @staticmethod
    def _add_health(server) -> None:
        """EnableDefaultHealthCheckService plus server.cc's "ModelService"/"PredictionService" as SERVING."""
        from grpc_health.v1 import health, health_pb2, health_pb2_grpc
        servicer = health.HealthServicer()
        for service in ("", "ModelService", "PredictionService"):
            servicer.set(service, health_pb2.HealthCheckResponse.SERVING)
        health_pb2_grpc.add_HealthServicer_to_server(servicer, server)

    def stop(self, grace: float | None = None) -> None:
        if self._server is not None:
            self._server.stop(grace).wait()
            self._server = None
