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
- ``http_server.cc`` also: every ``/v1/`` request (OPTIONS too) is counted, the OK ones timed
  (``serving.model_servers.metrics``); the Prometheus page is a handler matched before ``/v1/``, by path without the
  query (ProcessPrometheusRequest); handlers queue for ``--rest_api_num_threads`` threads (RequestExecutor).
- ``http_rest_api_handler.cc``: ``--rest_api_timeout_in_ms`` > 0 is the session run's RunOptions.timeout_in_ms:
  DirectSession::WaitForNotification() fails an overdue run with DEADLINE_EXCEEDED (HTTP 504).
"""
from __future__ import annotations

import concurrent.futures
import contextlib
import json
import re
import threading
import types
import urllib.parse
from typing import Optional

from serving.errors import HTTP_STATUS, ServingError
from serving.rest_api.json_codec import parse_predict_request
from serving.rest_api.json_examples import parse_classify_regress_request
from serving.rest_api.json_responses import (format_classify_response, format_error_response,
                                    format_predict_response, format_regress_response)
from serving.model_servers.metrics import ENTRYPOINT_REST

PATH_REGEX = re.compile(r"/v1/.*", re.I | re.S)
PREDICTION_REGEX = re.compile(
    r"/v1/models/([^/:]+)(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?:(classify|regress|predict)", re.I)
STATUS_REGEX = re.compile(
    r"/v1/models(?:/([^/:]+))?(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?(?:/(metadata))?", re.I)
_INT64_MAX = 2**63 - 1
# libevent 2.1 evhttp_send_error() with reason NULL.
NOT_FOUND_PAGE = ("<HTML><HEAD>\n<TITLE>404 Not Found</TITLE>\n</HEAD><BODY>\n"
                  "<H1>Not Found</H1>\n</BODY></HTML>\n")
TIMEOUT_MESSAGE = "Timed out waiting for notification"  # DirectSession::WaitForNotification()
_UNRECORDED = types.SimpleNamespace(status=None)  # what a disabled metrics.request() yields


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


def _answer_error(record, call, error: BaseException) -> tuple:
    """What handle() answers for a failure, recorded with its status code (INTERNAL if not a ServingError)."""
    if isinstance(error, ServingError):
        call.status, answer = error.code, (error.http_status, format_error_response(error.message))
    else:
        call.status = "INTERNAL"
        answer = HTTP_STATUS["INTERNAL"], format_error_response(f"{type(error).__name__}: {error}")
    record.__exit__(None, None, None)
    return answer


class _PredictFormat:
    __slots__ = ("request_format",)

    def __init__(self, request_format: str):
        self.request_format = request_format

    def __call__(self, outputs) -> str:
        return format_predict_response(outputs, self.request_format)


def _format_classify(result) -> str:
    return format_classify_response(*result)


class Job:
    """A request waiting for its servable call ``fn(*args)``: finish() or fail() gives the answer, once,
    and ends the request's metrics record."""

    __slots__ = ("fn", "args", "_format", "_record", "_call")

    def __init__(self, fn, args: tuple, format_result, record, call):
        self.fn, self.args, self._format, self._record, self._call = fn, args, format_result, record, call

    def finish(self, result) -> tuple:
        try:
            text = self._format(result)
        except Exception as error:  # noqa: BLE001 - e.g. an output the JSON writer refuses
            return _answer_error(self._record, self._call, error)
        self._record.__exit__(None, None, None)
        return 200, text

    def fail(self, error: BaseException) -> tuple:
        return _answer_error(self._record, self._call, error)


class RestApi:
    """HttpRestApiHandler::ProcessRequest(): (http status, content type, body) for one request."""

    def __init__(self, registry, timeout_ms: int = 30000, metrics=None, num_threads: int = 8):
        self.registry = registry
        self.timeout_ms = timeout_ms  # RunOptions.timeout_in_ms of the servable call; <= 0: none
        self.metrics = metrics
        self.num_threads = num_threads
        self._runner: Optional[concurrent.futures.ThreadPoolExecutor] = None
        self._runner_lock = threading.Lock()

    def handle(self, method: str, path: str, body: bytes) -> tuple:
        """(http status, JSON text) for one request, the servable call included (under the timeout)."""
        outcome = self.begin(method, path, body)
        if not isinstance(outcome, Job):
            return outcome
        try:
            result = self._run(outcome.fn, *outcome.args)
        except Exception as error:  # noqa: BLE001 - answered by the job, as the API answers it
            return outcome.fail(error)
        return outcome.finish(result)

    def begin(self, method: str, path: str, body: bytes):
        """Everything up to the servable call: (http status, JSON text) when the request is answered
        without one (errors, status, metadata), else the Job to run. The metrics record starts here
        and ends with the answer."""
        match = self._route(method, path)
        model_name = _unescape(match.group(1)) if match and match.group(1) else ""  # ParseModelInfo()
        api = match.group(4) if match and method == "POST" else ""  # the URL verb; GET leaves it empty
        record = self._record(model_name, api)
        call = record.__enter__()
        try:
            outcome = self._dispatch(method, path, match, body)
        except Exception as error:  # noqa: BLE001 - answered below, as INTERNAL if not a ServingError
            return _answer_error(record, call, error)
        if isinstance(outcome, str):
            record.__exit__(None, None, None)
            return 200, outcome
        return Job(*outcome, record, call)

    def preflight(self, origin: str) -> int:
        """The CORS preflight (OPTIONS): no handler runs, but the request is counted like any other."""
        with self._record("", "") as call:
            if re.search(r"https?://", origin):
                return 200
            call.status = "FAILED_PRECONDITION"  # "Origin header is missing in CORS preflight"
            return HTTP_STATUS["FAILED_PRECONDITION"]

    def close(self) -> None:
        with self._runner_lock:
            if self._runner is not None:
                self._runner.shutdown(wait=False, cancel_futures=True)
            self._runner = None

    def _record(self, model_name: str, api: str):
        if self.metrics is None:
            return contextlib.nullcontext(_UNRECORDED)
        return self.metrics.request(model_name, api, ENTRYPOINT_REST)

    @staticmethod
    def _route(method: str, path: str):
        if method == "POST":
            return PREDICTION_REGEX.fullmatch(path)
        if method == "GET":
            return STATUS_REGEX.fullmatch(path)
        return None

    def _dispatch(self, method: str, path: str, match, body: bytes):
        malformed = _invalid(f"Malformed request: {method} {path}")
        if not match:
            raise malformed
        name, version, label, last = match.groups()  # last: the verb (POST) or "metadata" (GET)
        name = _unescape(name) if name else ""
        version = _version(version)
        label = _unescape(label) if label else None
        if method == "POST":
            handler = {"classify": self.classify, "regress": self.regress, "predict": self.predict}.get(last)
            if handler is None:  # (?i) lets "PREDICT" match, but the method comparison is exact
                raise malformed
            return handler(name, version, label, body)
        if not name:
            raise _invalid("Missing model name in request.")
        if last == "metadata":
            return self.metadata(name, version, label)
        return self.status(name, version, label)

    def _run(self, fn, *args):
        """The servable call under RunOptions.timeout_in_ms: the request waits for it at most timeout_ms,
        then fails as DirectSession does. Python cannot cancel the call, so an overdue one finishes in
        the background on this pool of num_threads, which keeps the number of computations bounded."""
        if self.timeout_ms <= 0:
            return fn(*args)
        with self._runner_lock:
            if self._runner is None:
                self._runner = concurrent.futures.ThreadPoolExecutor(self.num_threads, "rest-session-run")
            future = self._runner.submit(fn, *args)
        try:
            return future.result(timeout=self.timeout_ms / 1000)
        except concurrent.futures.TimeoutError:
            future.cancel()  # one still queued behind overdue runs never starts
            raise ServingError(TIMEOUT_MESSAGE, "DEADLINE_EXCEEDED") from None

    # ---- the APIs ---------------------------------------------------------------------------------

    def predict(self, name, version, label, body) -> tuple:
        servable = []

        def input_specs(signature_name):  # GetInfoMap(): the servable, then its signature's inputs
            if not servable:
                servable.append(self.registry.get(name, version, label)[1])
            return servable[0].input_specs(signature_name)

        request = parse_predict_request(body, input_specs)
        model = servable[0] if servable else self.registry.get(name, version, label)[1]
        prepare = getattr(type(model), "prepare_predict", None)  # a LoadedModel: check here, run there
        if prepare is not None and "_run" not in getattr(model, "__dict__", ()):
            return prepare(model, request.signature_name, request.inputs), (), _PredictFormat(request.format)
        return model.predict, (request.signature_name, request.inputs), _PredictFormat(request.format)

    def classify(self, name, version, label, body) -> tuple:
        signature_name, examples, _ = parse_classify_regress_request(body)
        model = self.registry.get(name, version, label)[1]
        return model.classify, (signature_name, examples), _format_classify

    def regress(self, name, version, label, body) -> tuple:
        signature_name, examples, _ = parse_classify_regress_request(body)
        model = self.registry.get(name, version, label)[1]
        return model.regress, (signature_name, examples), format_regress_response

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
