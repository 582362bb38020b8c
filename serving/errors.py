"""Errors the serving front-ends turn into TF Serving's status codes and messages.

Every failure a client can cause or see is a ``ServingError`` carrying a gRPC status code name and
TF Serving's message text; REST and gRPC map it in one place (``HTTP_STATUS`` here, the gRPC
front passes ``code`` through), so the two fronts can never disagree.
"""
from __future__ import annotations

# model_servers/http_server.cc ToHTTPStatusCode(): gRPC status code -> HTTP status.
HTTP_STATUS = {
    "OK": 200,
    "CANCELLED": 499,
    "UNKNOWN": 500,
    "INVALID_ARGUMENT": 400,
    "DEADLINE_EXCEEDED": 504,
    "NOT_FOUND": 404,
    "ALREADY_EXISTS": 409,
    "PERMISSION_DENIED": 403,
    "RESOURCE_EXHAUSTED": 429,
    "FAILED_PRECONDITION": 400,
    "ABORTED": 409,
    "OUT_OF_RANGE": 400,
    "UNIMPLEMENTED": 501,
    "INTERNAL": 500,
    "UNAVAILABLE": 503,
    "DATA_LOSS": 500,
    "UNAUTHENTICATED": 401,
}


class ServingError(Exception):
    """A request TF Serving would fail: ``code`` is the gRPC status code name, ``message`` its text."""

    code = "UNKNOWN"

    def __init__(self, message: str, code: str | None = None):
        super().__init__(message)
        self.message = message
        if code:
            self.code = code
        if self.code not in HTTP_STATUS:
            raise ValueError(f"unknown status code {self.code!r}")

    @property
    def http_status(self) -> int:
        return HTTP_STATUS[self.code]

    def status(self) -> str:
        """absl::Status::ToString(), which TF Serving nests inside some messages."""
        return f"{self.code}: {self.message}"


class JsonCodecError(ServingError):
    """A REST body TF Serving's JSON codec rejects (json_tensor.cc)."""

    code = "INVALID_ARGUMENT"

    def __init__(self, message: str, code: str | None = None):
        try:
            message.encode("utf-8")
        except UnicodeEncodeError:  # raw request bytes echoed back; keep the text encodable
            message = message.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
        super().__init__(message, code)


def request_too_large(needed: int, limit: int, what: str) -> ServingError:
    """RESOURCE_EXHAUSTED for a request whose tensors would take more than --max_request_tensor_bytes
    (a bound of this server, not of TF Serving); ``what`` names the tensors, say "Input tensor images"."""
    return ServingError(f"{what} would take {needed} bytes, more than the {limit} bytes one request may "
                        "allocate: send a smaller request, or raise --max_request_tensor_bytes.",
                        "RESOURCE_EXHAUSTED")
