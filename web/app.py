"""The app behind the page: ``GET /``, ``/static/*``, ``POST /api/predict``, ``GET /api/model``, ``/healthz``,
and ``POST /api/feedback`` with ``GET /api/feedback/status`` (web/feedback.py).

Each prediction reads the highest AVAILABLE version from TF Serving's status API and then asks that
version by number, so the version the page shows is the one that answered. Images are prepared by
serving.client.mnist_image, the code ``digits predict`` uses, so the page and the CLI see the same 28×28 input
(here rounded to whole gray levels, the form feedback stores).
Every failure is a JSON ``{"error": <kind>, "message": <plain words for people>, "detail": <the precise
text for developers>}`` with a status code; the page shows ``message``; none shows a traceback.
"""
from __future__ import annotations

import logging
import os
from typing import Optional

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool

from serving.client.model_client import ClientError, ModelClient, shortest_float32
from serving.client.mnist_image import BlankImageError, ImageError, load_bytes
from web.config import WebConfig
from web.errors import UserError
from web.feedback import add_feedback_routes

STATIC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")
MAX_UPLOAD = 10 * 1024 * 1024  # a digit needs far less; mnist_image shrinks anything past 1024 px anyway
log = logging.getLogger("digits.web")


class ModelServer:
    """The model server as the page needs it, with its errors turned into UserErrors."""

    def __init__(self, config: WebConfig):
        self.config = config

    def _client(self, version: Optional[int] = None) -> ModelClient:
        return ModelClient(self.config.server, self.config.model_name, version=version,
                           timeout=self.config.timeout)

    def _error(self, error: ClientError) -> UserError:
        if error.unreachable:
            return UserError(503, "server_down",
                             "The model that reads the digits is not answering. This page keeps trying and "
                             "carries on once it is back.",
                             f"The model server at {self.config.server} is not answering. "
                             f"Start it with `make serve` (or check --server).")
        if error.status == 404:
            return self._no_model()
        return UserError(502, "rejected", "The model could not read this one. Please try again.",
                         f"The model server rejected the request: {error.detail or error}")

    def _no_model(self) -> UserError:
        return UserError(503, "no_model",
                         "There is no trained model to read the digits yet. This page starts reading as soon as "
                         "one is ready.",
                         f"The model server has no model '{self.config.model_name}' yet: push one with `make run`.")

    def version(self) -> int:
        """The version an unpinned request would reach: the highest AVAILABLE one."""
        try:
            version = self._client().available_version()
        except ClientError as e:
            raise self._error(e) from None
        if version is None:
            raise self._no_model()
        return version

    def predict(self, image: np.ndarray) -> dict:
        for attempt in range(2):  # a version retired between the two calls: ask for the new one once
            version = self.version()
            try:
                probabilities = self._client(version).predict(image[None])[0]
            except ClientError as e:
                if e.status == 404 and attempt == 0:
                    continue
                raise self._error(e) from None
            return {"digit": int(probabilities.argmax()),
                    "probabilities": [shortest_float32(p) for p in probabilities],
                    "model": {"name": self.config.model_name, "version": version},
                    "input": [[shortest_float32(v) for v in row] for row in image]}
        raise AssertionError("unreachable")


def _prepare(body: bytes, name: str) -> np.ndarray:
    """MNIST form, rounded to whole gray levels (MNIST's own uint8 form): the numbers the model sees are
    exactly what feedback stores for training (``/api/feedback`` keeps uint8), not a rounding of them."""
    try:
        return np.round(load_bytes(body, name))
    except BlankImageError:
        raise UserError(422, "empty", f"Nothing to read in {name}: draw a digit (or upload an image of one).") \
            from None
    except ImageError as e:
        plain = (f"{name} is empty: choose a picture of one digit." if not body else
                 f"{name} is not a picture this page can open: choose a photo or drawing of one digit "
                 f"(PNG, JPEG, GIF, BMP or WebP).")
        raise UserError(400, "bad_image", plain, str(e)) from None


def create_app(config: WebConfig, store=None) -> FastAPI:
    """The app for one model server and model; nothing happens until it serves. ``store``: where feedback
    goes (a components.data.spans.SpanStore; by default one on ``config.data_root``, made at the first feedback)."""
    app = FastAPI(title="digits", docs_url=None, redoc_url=None, openapi_url=None)
    server = ModelServer(config)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.exception_handler(UserError)
    async def user_error(request: Request, error: UserError):
        return JSONResponse({"error": error.kind, "message": error.message, "detail": error.detail},
                            status_code=error.status, headers=error.headers)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, error: Exception):
        log.exception("unexpected error in %s %s", request.method, request.url.path)
        return JSONResponse({"error": "internal", "message": "Something went wrong on our side. Please try again.",
                             "detail": f"The app failed ({type(error).__name__}); its log has the details."},
                            status_code=500)

    @app.get("/", include_in_schema=False)
    def page():
        return FileResponse(os.path.join(STATIC, "index.html"), headers={"Cache-Control": "no-cache"})

    @app.get("/healthz")
    def healthz():
        """The app itself answers: says nothing about the model server, so probes do not restart it."""
        return {"status": "ok"}

    @app.get("/api/model")
    async def model():
        version = await run_in_threadpool(server.version)
        return {"name": config.model_name, "version": version, "server": config.server}

    @app.post("/api/predict")
    async def predict(request: Request, name: str = "the drawing"):
        """The raw bytes of an image file (an upload, or the page's drawing as a .npy of its pixels) in the
        body; no multipart."""
        length = request.headers.get("content-length", "")
        if length.isdigit() and int(length) > MAX_UPLOAD:
            raise UserError(413, "too_large", f"{name} is too big (over {MAX_UPLOAD // 2**20} MB): choose a smaller "
                                              f"picture.")
        body = await request.body()
        if len(body) > MAX_UPLOAD:
            raise UserError(413, "too_large", f"{name} is too big (over {MAX_UPLOAD // 2**20} MB): choose a smaller "
                                              f"picture.")
        name = name.strip()[:120] or "the drawing"
        image = await run_in_threadpool(_prepare, body, name)
        return await run_in_threadpool(server.predict, image)

    add_feedback_routes(app, config, store)
    return app
