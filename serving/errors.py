"""Errors the serving front-ends turn into TF Serving's status codes and messages."""
from __future__ import annotations


class JsonCodecError(ValueError):
    """A request/response the REST API rejects; `message` is TF Serving's text, `code` its status."""
    code = "INVALID_ARGUMENT"

    def __init__(self, message: str, code: str | None = None):
        try:
            message.encode("utf-8")
        except UnicodeEncodeError:  # raw request bytes echoed back; keep the text encodable
            message = message.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
        super().__init__(message)
        self.message = message
        if code:
            self.code = code

    def status(self) -> str:
        """absl::Status::ToString(), which TF Serving nests inside 'Failed to process element' errors."""
        return f"{self.code}: {self.message}"
