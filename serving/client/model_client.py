"""A client of the model server's Predict and status APIs (ours or TF Serving's); ``digits predict``
(serving/client/predict_cli.py) and the web app use it.

REST uses only the standard library, so importing this module and calling a REST server is fast;
gRPC imports grpcio and builds TF Serving's messages (serving/client/grpc_messages.py, without
TensorFlow) only when a gRPC client makes its first call, so the web image needs neither.
Tensors are written and read as raw little-endian bytes (``tensor_content``) with numpy.
"""
from __future__ import annotations

import http.client
import json
import socket
import urllib.parse
from typing import List, NamedTuple, Optional, Tuple

import numpy as np

__all__ = ["ClientError", "ModelClient", "VersionStatus", "shortest_float32", "split_target", "DEFAULT_REST_PORT",
           "DEFAULT_GRPC_PORT"]

DEFAULT_REST_PORT, DEFAULT_GRPC_PORT = 8501, 8500
INPUT_KEY, OUTPUT_KEY = "images", "probabilities"
START_HINT = "start it with `make serve`, or pass --server HOST:PORT"


class ClientError(Exception):
    """A prediction that did not happen; the message is one line saying why and what to do.

    Callers that answer users of their own (the web app) tell the cases apart by ``unreachable`` (no
    answer at all: refused, unknown host, timeout), ``status`` (the server's HTTP status, or gRPC code
    name) and ``detail`` (the server's own error text).
    """

    def __init__(self, message: str, status=None, detail: str = "", unreachable: bool = False):
        super().__init__(message)
        self.status, self.detail, self.unreachable = status, detail, unreachable


class VersionStatus(NamedTuple):
    """One entry of TF Serving's GetModelStatus: version, state (e.g. AVAILABLE) and error message."""
    version: int
    state: str
    error_message: str = ""


def split_target(target: str, default_port: int) -> Tuple[str, int]:
    """"host:port", "host", "[::1]:8501" or "http://host:port" as (host, port)."""
    text = target.strip()
    if "://" in text:
        text = urllib.parse.urlsplit(text).netloc
    host, sep, port = text.rpartition(":")
    if not sep or "]" in port or (host.count(":") and not host.startswith("[")):  # no port, or bare IPv6
        host, port = text, ""
    host = host.strip("[]")
    if not host:
        raise ValueError(f"no host in server address {target!r}: expected HOST:PORT, e.g. localhost:8501")
    if not port:
        return host, default_port
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"bad port in server address {target!r}: expected HOST:PORT, e.g. localhost:8501")
    return host, int(port)


class ModelClient:
    """Calls one model's Predict over REST (default) or gRPC; ``predict`` returns probabilities.

    ``version`` pins a version, ``label`` a version label (TF Serving's model_version_policy
    labels); with neither, the server picks its latest. Requests carry at most ``max_batch``
    images, so a large .npy batch never meets a server's message-size limit.
    """

    max_batch = 256

    def __init__(self, target: str, model_name: str = "mnist", version: Optional[int] = None,
                 label: Optional[str] = None, signature_name: str = "serving_default", grpc: bool = False,
                 timeout: float = 10.0):
        if version is not None and label:
            raise ValueError("pass a model version or a version label, not both")
        self.host, self.port = split_target(target, DEFAULT_GRPC_PORT if grpc else DEFAULT_REST_PORT)
        self.model_name, self.version, self.label = model_name, version, label
        self.signature_name, self.grpc, self.timeout = signature_name, grpc, timeout
        self._channel = self._calls = None

    @property
    def address(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}" if self.grpc else f"http://{host}:{self.port}"

    def predict(self, images: np.ndarray) -> np.ndarray:
        """float32 [N, 10] probabilities for images [N, 28, 28] (pixels 0..255 or 0..1)."""
        images = np.asarray(images, dtype=np.float32)
        if images.ndim != 3:
            raise ValueError(f"expected images [N, 28, 28], got shape {list(images.shape)}")
        chunks = [self._predict_one(images[i:i + self.max_batch]) for i in range(0, len(images), self.max_batch)]
        return np.concatenate(chunks) if chunks else np.zeros((0, 10), np.float32)

    def _predict_one(self, images: np.ndarray) -> np.ndarray:
        probabilities = self._grpc_predict(images) if self.grpc else self._rest_predict(images)
        if probabilities.ndim != 2 or len(probabilities) != len(images):
            raise ClientError(f"the model server answered probabilities of shape {list(probabilities.shape)} "
                              f"for {len(images)} images")
        return probabilities

    def close(self) -> None:
        if self._channel is not None:
            self._channel.close()
            self._channel = self._calls = None

    def __enter__(self) -> "ModelClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---- REST: POST /v1/models/<name>[/versions/<v>|/labels/<l>]:predict, TF Serving's row format ----

    def rest_path(self, method: str = ":predict") -> str:
        path = "/v1/models/" + urllib.parse.quote(self.model_name, safe="")
        if self.version is not None:
            path += f"/versions/{int(self.version)}"
        elif self.label:
            path += "/labels/" + urllib.parse.quote(self.label, safe="")
        return path + method

    def _rest_predict(self, images: np.ndarray) -> np.ndarray:
        body = json.dumps({"signature_name": self.signature_name, "instances": images.tolist()},
                          separators=(",", ":")).encode()
        doc, text = self._rest_json("POST", self.rest_path(), body)
        predictions = doc.get("predictions") if isinstance(doc, dict) else None
        if not isinstance(predictions, list):
            raise ClientError(f"the model server's answer has no \"predictions\" list: {_one_line(text)[:200]}")
        try:  # several outputs: one object per image; a single output: its values directly
            rows = [p[OUTPUT_KEY] if isinstance(p, dict) else p for p in predictions]
            return np.asarray(rows, dtype=np.float32).reshape(len(rows), -1)
        except (KeyError, TypeError, ValueError):
            raise ClientError(f"the model server's predictions have no \"{OUTPUT_KEY}\" output: is "
                              f"--signature-name {self.signature_name} the model's image signature?") from None

    def _rest_json(self, method: str, path: str, body: Optional[bytes] = None):
        """(decoded JSON, text) of a 200 answer; TF Serving's {"error": ...} of any other as a ClientError."""
        status, reason, text = self._request(method, path, body)
        try:
            doc = json.loads(text)
        except ValueError:
            doc = None
        if status != 200:
            if isinstance(doc, dict) and isinstance(doc.get("error"), str):
                detail = _one_line(doc["error"])
                raise ClientError(f"the model server answered {status}: {detail}", status, detail)
            raise ClientError(f"the server at {self.address} answered {status} {reason} without TF Serving's "
                              f"JSON error: is that the model server's REST port?", status)
        return doc, text

    def _request(self, method: str, path: str, body: Optional[bytes] = None) -> Tuple[int, str, str]:
        connection = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        try:
            headers = {"Content-Type": "application/json"} if body is not None else {}
            connection.request(method, path, body=body, headers=headers)
            response = connection.getresponse()
            return response.status, response.reason, response.read().decode("utf-8", "replace")
        except socket.timeout:  # before socket.error: it is one
            raise self._timed_out() from None
        except ConnectionRefusedError:
            raise self._unreachable("connection refused") from None
        except socket.gaierror as e:
            raise self._unreachable(f"unknown host: {e.strerror or e}") from None
        except (http.client.HTTPException, ConnectionResetError, BrokenPipeError) as e:
            raise ClientError(f"the server at {self.address} did not answer in HTTP/1.1 ({type(e).__name__}): "
                              f"if it is the gRPC port, add --grpc") from None
        except OSError as e:
            raise self._unreachable((e.strerror or str(e)).lower()) from None
        finally:
            connection.close()

    # ---- model status: GET /v1/models/<name>[/versions/<v>|/labels/<l>], or ModelService/GetModelStatus ----

    def status(self) -> List[VersionStatus]:
        """The model's versions as the server reports them (newest first), so a caller can say which
        version answers; a model with no version at all is TF Serving's NOT_FOUND error."""
        if self.grpc:
            return self._grpc_status()
        doc, text = self._rest_json("GET", self.rest_path(""))
        try:
            return sorted((VersionStatus(int(v["version"]), str(v["state"]),
                                         _one_line(v.get("status", {}).get("error_message", "")))
                           for v in doc["model_version_status"]), reverse=True)
        except (KeyError, TypeError, ValueError, AttributeError):
            raise ClientError(f"the model server's status answer has no \"model_version_status\" list: "
                              f"{_one_line(text)[:200]}") from None

    def available_version(self) -> Optional[int]:
        """The highest AVAILABLE version: the one that answers an unpinned request. None if none is."""
        return next((s.version for s in self.status() if s.state == "AVAILABLE"), None)

    def _grpc_status(self) -> List[VersionStatus]:
        import grpc

        messages, calls = self._grpc_calls()
        request = messages.GetModelStatusRequest()
        request.model_spec.name = self.model_name
        if self.version is not None:
            request.model_spec.version.value = int(self.version)
        elif self.label:
            request.model_spec.version_label = self.label
        try:
            response = calls["status"](request, timeout=self.timeout)
        except grpc.RpcError as e:
            raise self._grpc_error(e) from None
        return sorted((VersionStatus(s.version, messages.state_name(s.state), _one_line(s.status.error_message))
                       for s in response.model_version_status), reverse=True)

    # ---- gRPC: tensorflow.serving.PredictionService/Predict ----------------------------------------

    def _grpc_predict(self, images: np.ndarray) -> np.ndarray:
        import grpc

        messages, calls = self._grpc_calls()
        request = messages.PredictRequest()
        request.model_spec.name = self.model_name
        if self.version is not None:
            request.model_spec.version.value = int(self.version)
        elif self.label:
            request.model_spec.version_label = self.label
        request.model_spec.signature_name = self.signature_name
        tensor = request.inputs[INPUT_KEY]
        tensor.dtype = 1  # DT_FLOAT
        for size in images.shape:
            tensor.tensor_shape.dim.add().size = size
        tensor.tensor_content = np.ascontiguousarray(images, dtype="<f4").tobytes()
        try:
            response = calls["predict"](request, timeout=self.timeout)
        except grpc.RpcError as e:
            raise self._grpc_error(e) from None
        if OUTPUT_KEY not in response.outputs:
            raise ClientError(f"the model's signature {self.signature_name} has no \"{OUTPUT_KEY}\" output "
                              f"(it has {', '.join(sorted(response.outputs)) or 'none'})")
        return tensor_to_array(response.outputs[OUTPUT_KEY])

    def _grpc_calls(self):
        """The messages, and the Predict and GetModelStatus calls on this client's channel (opened once)."""
        import grpc

        from serving.client import grpc_messages

        messages = grpc_messages.load()
        if self._calls is None:
            self._channel = grpc.insecure_channel(
                f"{self.address}", options=[("grpc.max_send_message_length", -1),
                                            ("grpc.max_receive_message_length", -1)])
            self._calls = {
                "predict": grpc_messages.unary_call(self._channel, grpc_messages.PREDICT_METHOD,
                                                    messages.PredictRequest, messages.PredictResponse),
                "status": grpc_messages.unary_call(self._channel, grpc_messages.GET_MODEL_STATUS_METHOD,
                                                   messages.GetModelStatusRequest, messages.GetModelStatusResponse)}
        return messages, self._calls

    def _grpc_error(self, error) -> ClientError:
        import grpc

        code, details = error.code(), _one_line(error.details() or "")
        if code == grpc.StatusCode.DEADLINE_EXCEEDED:
            return self._timed_out()
        if code == grpc.StatusCode.UNAVAILABLE:
            return self._unreachable("connection refused" if "connection refused" in details.lower() else details)
        return ClientError(f"the model server answered {code.name}: {details}", code.name, details)

    # ---- messages ------------------------------------------------------------------------------------

    def _unreachable(self, reason: str) -> ClientError:
        return ClientError(f"cannot reach the model server at {self.address} ({reason}): {START_HINT}",
                           unreachable=True)

    def _timed_out(self) -> ClientError:
        return ClientError(f"the model server at {self.address} did not answer within {self.timeout:g} s: "
                           f"pass a larger --timeout, or check the server", unreachable=True)


def tensor_to_array(tensor) -> np.ndarray:
    """A float32 TensorProto as numpy, from tensor_content or float_val (one value repeated fills all)."""
    shape = [d.size for d in tensor.tensor_shape.dim]
    count = int(np.prod(shape)) if shape else 1
    if tensor.tensor_content:
        values = np.frombuffer(tensor.tensor_content, dtype="<f4")
    else:
        values = np.asarray(tensor.float_val, dtype=np.float32)
        if values.size == 1 and count != 1:
            values = np.full(count, values[0], np.float32)
    if values.size != count:
        raise ClientError(f"the model server sent a tensor of shape {shape} with {values.size} values")
    return values.astype(np.float32).reshape(shape)


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


# ---- digits predict ----------------------------------------------------------------------------------

def shortest_float32(value) -> float:
    """A float32 as the shortest decimal that reads back as the same float32 (small JSON, exact)."""
    return float(str(np.float32(value)))
