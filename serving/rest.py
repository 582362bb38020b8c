"""TF Serving 2.16's REST API (tensorflow_model_server --rest_api_port) as a thin front over the
registry and the prediction core.

Sources, tensorflow/serving 2.16.1:
- ``model_servers/http_server.cc``: only paths fully matching ``(?i)/v1/.*`` reach the handler (the
  path includes ``?query``, as EvHTTPRequest::uri_path() does); anything else gets libevent's
  ``evhttp_send_error(404)`` HTML page; OPTIONS is the CORS preflight; the status code comes from
  ToHTTPStatusCode (``serving.errors.HTTP_STATUS``).
- ``model_servers/http_rest_api_util.cc``: the two route regexes, ParseModelInfo (curl-unescaped
  model name and label, SimpleAtoi versions), FillModelSpecWithNameVersionAndLabel, ToJsonString
  (protobuf JSON of GetModelStatusResponse / the metadata concatenation).
- ``model_servers/http_rest_api_handler.cc``: ProcessRequest and the Process*Request order of work;
  an unmatched method/path keeps the initial "Malformed request: <METHOD> <path>" InvalidArgument.
- ``util/net_http/server/internal/evhttp_request.cc``: ``Content-Encoding`` containing "gzip" means
  the body is gunzipped; a body that fails to gunzip reads as empty.
"""
from __future__ import annotations

import gzip
import json
import re
import threading
import urllib.parse
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Optional

from serving.errors import HTTP_STATUS, ServingError
from serving.json_codec import parse_classify_regress_request, parse_predict_request
from serving.json_responses import (format_classify_response, format_error_response,
                                    format_predict_response, format_regress_response)

PATH_REGEX = re.compile(r"/v1/.*", re.I | re.S)
PREDICTION_REGEX = re.compile(
    r"/v1/models/([^/:]+)(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?:(classify|regress|predict)", re.I)
STATUS_REGEX = re.compile(
    r"/v1/models(?:/([^/:]+))?(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?(?:/(metadata))?", re.I)
_INT64_MAX = 2**63 - 1
# libevent 2.1 evhttp_send_error() with reason NULL.
NOT_FOUND_PAGE = ("<HTML><HEAD>\n<TITLE>404 Not Found</TITLE>\n</HEAD><BODY>\n"
                  "<H1>Not Found</H1>\n</BODY></HTML>\n")


def _invalid(message: str) -> ServingError:
    return ServingError(message, "INVALID_ARGUMENT")


def _unescape(text: str) -> str:
    """curl_easy_unescape(): %XX only ('+' stays), bytes taken as they are."""
    return urllib.parse.unquote_to_bytes(text).decode("utf-8", "surrogateescape")


def _version(text: Optional[str]) -> Optional[int]:
    if not text:
        return None
    value = int(text)  # the regex allows digits only; SimpleAtoi fails on int64 overflow
    if value > _INT64_MAX:
        raise _invalid(f"Failed to convert version: {text} to numeric.")
    return value


def _protobuf_json(message, preserve_names: bool) -> str:
    """MessageToJsonString(add_whitespace, always_print_primitive_fields): one-space indents."""
    from google.protobuf import json_format  # lazy: keeps importing this module light
    obj = json_format.MessageToDict(message, including_default_value_fields=True,
                                    preserving_proto_field_name=preserve_names)
    return json.dumps(obj, indent=1, ensure_ascii=False) + "\n"


class RestApi:
    """HttpRestApiHandler::ProcessRequest(): (http status, content type, body) for one request."""

    def __init__(self, registry, timeout_ms: int = 30000):
        self.registry = registry
        self.timeout_ms = timeout_ms  # TF Serving's RunOptions.timeout_in_ms; not enforced yet

    def handle(self, method: str, path: str, body: bytes) -> tuple:
        try:
            return 200, self._dispatch(method, path, body)
        except ServingError as e:
            return e.http_status, format_error_response(e.message)
        except Exception as e:  # noqa: BLE001 - a bug here is still answered, as INTERNAL
            return HTTP_STATUS["INTERNAL"], format_error_response(f"{type(e).__name__}: {e}")

    def _dispatch(self, method: str, path: str, body: bytes) -> str:
        malformed = _invalid(f"Malformed request: {method} {path}")
        if method == "POST":
            m = PREDICTION_REGEX.fullmatch(path)
            name, version, label, kind, sub = (m.groups() + (None,)) if m else (None,) * 5
        elif method == "GET":
            m = STATUS_REGEX.fullmatch(path)
            name, version, label, sub = m.groups() if m else (None,) * 4
            kind = None
        else:
            m = None
        if not m:
            raise malformed
        name = _unescape(name) if name else ""
        version = _version(version)
        label = _unescape(label) if label else None
        if method == "POST":
            handler = {"classify": self.classify, "regress": self.regress, "predict": self.predict}.get(kind)
            if handler is None:  # (?i) lets "PREDICT" match, but the method comparison is exact
                raise malformed
            return handler(name, version, label, body)
        if not name:
            raise _invalid("Missing model name in request.")
        if sub == "metadata":
            return self.metadata(name, version, label)
        return self.status(name, version, label)

    # ---- the APIs ---------------------------------------------------------------------------------

    def predict(self, name, version, label, body) -> str:
        servable = []

        def input_specs(signature_name):  # GetInfoMap(): the servable, then its signature's inputs
            if not servable:
                servable.append(self.registry.get(name, version, label)[1])
            return servable[0].input_specs(signature_name)

        request = parse_predict_request(body, input_specs)
        model = servable[0] if servable else self.registry.get(name, version, label)[1]
        outputs = model.predict(request.signature_name, request.inputs)
        return format_predict_response(outputs, request.format)

    def classify(self, name, version, label, body) -> str:
        signature_name, examples, _ = parse_classify_regress_request(body)
        classes, scores = self.registry.get(name, version, label)[1].classify(signature_name, examples)
        return format_classify_response(classes, scores)

    def regress(self, name, version, label, body) -> str:
        signature_name, examples, _ = parse_classify_regress_request(body)
        return format_regress_response(self.registry.get(name, version, label)[1].regress(signature_name, examples))

    def status(self, name, version, label) -> str:
        from tensorflow_serving.apis import get_model_status_pb2
        response = get_model_status_pb2.GetModelStatusResponse()
        for s in self.registry.status(name, version, label):
            entry = response.model_version_status.add()
            entry.version = s.version
            entry.state = get_model_status_pb2.ModelVersionStatus.State.Value(s.state)
            codes = entry.status.DESCRIPTOR.fields_by_name["error_code"].enum_type.values_by_name
            entry.status.error_code = codes[s.error_code].number
            entry.status.error_message = s.error_message
        return _protobuf_json(response, preserve_names=False)

    def metadata(self, name, version, label) -> str:
        from tensorflow_serving.apis import model_pb2
        resolved, model = self.registry.get(name, version, label)
        spec = model_pb2.ModelSpec(name=name)
        spec.version.value = resolved
        return ("{\n\"model_spec\":" + _protobuf_json(spec, True).rstrip("\n") + ",\n\"metadata\": {\"signature_def\": "
                + _protobuf_json(model.metadata(), True).rstrip("\n") + "}\n}\n")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = ""
    sys_version = ""

    def log_message(self, format, *args):  # noqa: A002 - quiet, as TF Serving logs at VLOG(1) only
        pass

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            body = b"".join(chunks)
        else:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if "gzip" in self.headers.get("Content-Encoding", ""):
            try:
                body = gzip.decompress(body)
            except (OSError, EOFError, zlib.error):
                body = b""  # ReadRequestGzipBytes() returns nothing: the body reads as empty
        return body

    def _reply(self, status: int, body: str, content_type: Optional[str], close: bool = False) -> None:
        data = body.encode("utf-8", "surrogateescape")
        self.send_response(status)
        if content_type:
            self.send_header("Content-Type", content_type)
        if self.server.enable_cors:
            for key, value in (("Access-Control-Allow-Origin", "*"), ("Access-Control-Allow-Methods", "POST, GET"),
                               ("Access-Control-Allow-Headers", "Content-Type")):
                self.send_header(key, value)
        self.send_header("Content-Length", str(len(data)))
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _handle(self) -> None:
        try:
            body = self._read_body()
        except (ValueError, OSError):
            self._reply(400, "", None, close=True)
            return
        path = self.path
        if not PATH_REGEX.fullmatch(path):
            self._reply(404, NOT_FOUND_PAGE, "text/html; charset=ISO-8859-1", close=True)
            return
        if self.command == "OPTIONS":  # CORS preflight: no handler, empty body
            ok = re.search(r"https?://", self.headers.get("Origin", ""))
            self._reply(200 if ok else HTTP_STATUS["FAILED_PRECONDITION"], "", None)
            return
        status, text = self.server.api.handle(self.command, path, body)
        self._reply(status, text, "application/json")

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = do_OPTIONS = do_TRACE = _handle


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class RestServer:
    """An HTTP/1.1 keep-alive server for the REST API, served from a background thread."""

    def __init__(self, registry, port: int, host: str = "0.0.0.0", timeout_ms: int = 30000,
                 enable_cors: bool = False):
        self.api = RestApi(registry, timeout_ms)
        self.host, self._port, self.enable_cors = host, port, enable_cors
        self._httpd: Optional[_Server] = None
        self._thread: Optional[threading.Thread] = None

    @property
    def port(self) -> int:
        return self._httpd.server_address[1] if self._httpd else self._port

    def start(self) -> None:
        if self._httpd is not None:
            return
        httpd = _Server((self.host, self._port), _Handler)
        httpd.api, httpd.enable_cors = self.api, self.enable_cors
        self._httpd = httpd
        self._thread = threading.Thread(target=httpd.serve_forever, name="rest-server", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._httpd is None:
            return
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join()
        self._httpd = self._thread = None
