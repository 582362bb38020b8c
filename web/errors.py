"""The one error the app's routes raise: the page shows ``message``; callers of the API read ``detail``."""
from __future__ import annotations

from typing import Mapping, Optional


class UserError(Exception):
    """A failure the page shows as it is: the HTTP status, a kind the page's code can test, plain words for
    whoever draws (``message``), and the precise cause for whoever runs or calls the app (``detail``);
    ``headers`` go with the response (Retry-After on a 429, WWW-Authenticate on a 401)."""

    def __init__(self, status: int, kind: str, message: str, detail: str = "",
                 headers: Optional[Mapping[str, str]] = None):
        super().__init__(message)
        self.status, self.kind, self.message, self.detail = status, kind, message, detail or message
        self.headers = dict(headers or {})
