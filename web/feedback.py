"""``POST /api/feedback``: a person's label for a digit the model read, kept for the next training run.

The body is JSON ``{"image": 28 rows of 28 whole numbers 0..255, "label": 0..9, "answer": the model's digit
or null, "model_version": its version or null}``. The page sends the predict answer's ``input``: the 28×28
the model saw (web/app.py rounds it to whole gray levels first, so it is stored exactly, as uint8). The digit
goes into the open span through components.data.spans.SpanStore, which writes a temporary file, fsyncs it and
renames it. Anonymous labels are a poisoning route, so feedback can be turned off (403) or need a bearer
token (401), and each client address may send ``feedback_per_minute`` (a token bucket; 429 with
Retry-After). Stores run on a small thread pool of their own: a slow disk never holds up predictions.
``GET /api/feedback/status`` tells the page whether to show its buttons (not when a token is needed: the
page cannot know it; the API is then for app developers).
"""
from __future__ import annotations

import hmac
import json
import math
import threading
import time
from typing import Callable, Optional

import anyio
import numpy as np
from fastapi import FastAPI, Request

from web.config import WebConfig
from web.errors import UserError

MAX_BODY = 64 * 1024     # 784 numbers need under 4 KB, even pretty-printed far less than this
STORE_THREADS = 4        # stores in flight at once; more wait (asynchronously) for a free one
MAX_CLIENTS = 10_000     # buckets kept; full ones are forgotten first when there are more
THANKS = "Thanks — saved for the next training run."


class RateLimiter:
    """A token bucket per client: ``per_minute`` requests in a burst, refilled evenly over a minute."""

    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic):
        self.per_minute, self.clock = per_minute, clock
        self._buckets: dict = {}  # key -> (tokens, time of that count)
        self._lock = threading.Lock()

    def take(self, key: str) -> float:
        """0 when ``key`` may go ahead (one token taken), else the seconds until it may."""
        if self.per_minute <= 0:
            return 0.0
        rate = self.per_minute / 60.0
        with self._lock:
            now = self.clock()
            tokens, then = self._buckets.get(key, (float(self.per_minute), now))
            tokens = min(float(self.per_minute), tokens + (now - then) * rate)
            if tokens < 1.0:
                self._buckets[key] = (tokens, now)
                return (1.0 - tokens) / rate
            self._buckets[key] = (tokens - 1.0, now)
            if len(self._buckets) > MAX_CLIENTS:
                self._forget_full(now, rate)
            return 0.0

    def _forget_full(self, now: float, rate: float) -> None:
        """Buckets refilled to the brim say nothing a fresh one would not: drop them."""
        for key, (tokens, then) in list(self._buckets.items()):
            if tokens + (now - then) * rate >= self.per_minute:
                del self._buckets[key]


def _bad(kind: str, message: str, detail: str) -> UserError:
    return UserError(400, kind, message, detail)


def _whole(value, low: int, high: Optional[int]) -> bool:
    """A JSON number that is a whole number in low..high (12.0 counts; true/false do not)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    if isinstance(value, float) and not value.is_integer():
        return False
    return low <= value and (high is None or value <= high)


def _image_problem(image) -> str:
    """What is wrong with ``image`` as 28 rows of 28 whole numbers 0..255, or "" when nothing is."""
    if not isinstance(image, list):
        return "nothing" if image is None else f"a JSON {type(image).__name__}"
    if len(image) != 28 or not all(isinstance(row, list) for row in image):
        return f"{len(image)} rows" if len(image) != 28 else "rows that are not lists"
    lengths = sorted({len(row) for row in image})
    if lengths != [28]:
        return f"rows of {' or '.join(map(str, lengths))} numbers"
    for row in image:
        for value in row:
            if not _whole(value, 0, 255):
                return f"the value {json.dumps(value)}"
    return ""


def parse(body: bytes) -> tuple:
    """(image uint8 [28, 28], label, answer or None, model_version or None) from a request body."""
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError) as e:
        raise _bad("bad_json", "The feedback could not be read. Please try again.",
                   f"the body must be a JSON object {{image, label, answer, model_version}}: {e}") from None
    if not isinstance(doc, dict):
        raise _bad("bad_json", "The feedback could not be read. Please try again.",
                   f"the body must be a JSON object {{image, label, answer, model_version}}, "
                   f"got a JSON {type(doc).__name__}")
    label = doc.get("label")
    if not _whole(label, 0, 9):
        raise _bad("bad_label", "The label must be one digit, 0 to 9.",
                   f"label must be a whole number 0..9, got {json.dumps(label)}")
    image = doc.get("image")
    problem = _image_problem(image)
    if problem:
        raise _bad("bad_image", "The feedback's image is not the 28 by 28 digit the model read. Please try again.",
                   f"image must be 28 rows of 28 whole numbers 0..255 (the predict answer's input), got {problem}")
    fields = {}
    for name, high in (("answer", 9), ("model_version", None)):
        value = doc.get(name)
        if value is not None and not _whole(value, 0, high):
            want = "a whole number 0..9" if high else "a whole number 0 or more"
            raise _bad(f"bad_{name}", "The feedback could not be read. Please try again.",
                       f"{name} must be {want} or null, got {json.dumps(value)}")
        fields[name] = None if value is None else int(value)
    return np.asarray(image, np.uint8), int(label), fields["answer"], fields["model_version"]


class Feedback:
    """The feedback routes' state: the store (made on first use), the token, the limits."""

    def __init__(self, config: WebConfig, store=None):
        self.config, self._store = config, store
        self.secret = config.token().encode() if config.feedback else b""
        self.limiter = RateLimiter(config.feedback_per_minute)
        self._threads = None  # anyio.CapacityLimiter: made inside the event loop, on first use
        self._store_lock = threading.Lock()

    def status(self) -> dict:
        return {"enabled": self.config.feedback, "token_required": bool(self.secret),
                "per_minute": self.config.feedback_per_minute}

    def store(self):
        with self._store_lock:
            if self._store is None:
                from components.data.spans import SpanStore  # only when feedback is used

                self._store = SpanStore(self.config.data_root)
            return self._store

    def _check_access(self, request: Request) -> None:
        if not self.config.feedback:
            raise UserError(403, "feedback_off", "Feedback is turned off on this site.",
                            "Feedback is off (DIGITS_UI_FEEDBACK=false or --feedback false).")
        wait = self.limiter.take(request.client.host if request.client else "unknown")
        if wait:
            seconds = max(1, math.ceil(wait))
            raise UserError(429, "too_many", f"That is a lot of feedback at once: please wait {seconds} s and "
                                             f"try again.",
                            f"More than {self.config.feedback_per_minute} feedback requests a minute from this "
                            f"address; retry after {seconds} s.", headers={"Retry-After": str(seconds)})
        if self.secret:
            scheme, _, given = request.headers.get("authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), self.secret):
                raise UserError(401, "unauthorized", "Feedback needs a token on this site.",
                                "Send the feedback token as `Authorization: Bearer <token>` "
                                "(the app's DIGITS_UI_FEEDBACK_TOKEN).", headers={"WWW-Authenticate": "Bearer"})

    async def _body(self, request: Request) -> bytes:
        too_big = UserError(413, "too_large", "The feedback is too big to be a digit.",
                            f"A feedback body is at most {MAX_BODY} bytes (28x28 numbers as JSON need far less).")
        length = request.headers.get("content-length", "")
        if length.isdigit() and int(length) > MAX_BODY:
            raise too_big
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_BODY:
                raise too_big
        return bytes(body)

    def _append(self, image, label, answer, version) -> str:
        try:
            return self.store().append(image, label, answer=answer, model_version=version, source="feedback")
        except ValueError as e:
            raise _bad("bad_image", "The feedback's image is not a digit the model read. Please try again.",
                       str(e)) from None
        except OSError as e:
            raise UserError(503, "not_saved", "Your answer could not be saved right now. Please try again later.",
                            f"The app cannot write to the data root {self.config.data_root}: {e.strerror or e}. "
                            f"Check that it is writable (in Kubernetes: the digits-data volume at /data).") from None

    async def post(self, request: Request) -> dict:
        self._check_access(request)
        image, label, answer, version = parse(await self._body(request))
        if self._threads is None:
            self._threads = anyio.CapacityLimiter(STORE_THREADS)
        # Its own threads, not the default pool predictions use: stores waiting on a slow disk take none of those.
        record = await anyio.to_thread.run_sync(self._append, image, label, answer, version, limiter=self._threads)
        return {"id": record, "label": label, "answer": answer, "model_version": version, "message": THANKS}


def add_feedback_routes(app: FastAPI, config: WebConfig, store=None) -> Feedback:
    """``POST /api/feedback`` (201 when stored) and ``GET /api/feedback/status`` on ``app``."""
    feedback = Feedback(config, store)

    @app.get("/api/feedback/status")
    def feedback_status():
        return feedback.status()

    @app.post("/api/feedback", status_code=201)
    async def post_feedback(request: Request):
        return await feedback.post(request)

    return feedback
