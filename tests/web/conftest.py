"""Fixtures for the draw-a-digit page: a real model server on loopback serving a real export as version 1
of "mnist", the app as a real process (``python -m web``) pointed at it, and headless Debian chromium
driven by Playwright. A missing browser fails the tests with how to get it; nothing skips."""
from __future__ import annotations

import http.client
import json
import os
import pathlib
import subprocess
import sys

import pytest

from tests.server_process import REPO, ServerProcess, free_port, stop_process, wait_for

CHROMIUM = os.environ.get("DIGITS_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = pathlib.Path(REPO) / "tests" / "artifacts" / "web"


def http_json(port: int, method: str, path: str, body=None, timeout: float = 30.0, headers=None) -> tuple:
    """(status, decoded JSON) of one request to 127.0.0.1:port; ``body`` bytes are sent as they are."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        if body is not None and not isinstance(body, bytes):
            body = json.dumps(body).encode()
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


class AppProcess:
    """``python -m web`` on a free port, ready when /healthz answers; its log goes to a file, and feedback
    to ``data_root`` (by default a fresh directory beside the log: never the repository's data/)."""

    def __init__(self, server_port: int, log_dir: pathlib.Path, model_name: str = "mnist",
                 data_root: pathlib.Path = None, extra: tuple = ()):
        self.port = free_port()
        self.log_path = log_dir / f"web-{self.port}.log"
        self.data_root = data_root or log_dir / f"data-{self.port}"
        self.args = [sys.executable, "-m", "web", "--host", "127.0.0.1", "--port", str(self.port),
                     "--server", f"http://127.0.0.1:{server_port}", "--model-name", model_name, "--timeout", "3",
                     "--data-root", str(self.data_root), *extra]
        self.process = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _healthy(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"the app exited with {self.process.returncode}:\n{self.log_path.read_text()}")
        try:
            return http_json(self.port, "GET", "/healthz", timeout=2)[0] == 200
        except OSError:
            return False

    def __enter__(self) -> "AppProcess":
        with open(self.log_path, "w") as log:
            self.process = subprocess.Popen(self.args, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
        wait_for(self._healthy, timeout=60, what="the web app's /healthz")
        return self

    def __exit__(self, *exc) -> None:
        stop_process(self.process, 20)


@pytest.fixture(scope="session")
def models_base(tmp_path_factory, digits_exports) -> pathlib.Path:
    """<tmp>/models/mnist/1: the first real export, laid out as the Pusher writes it."""
    base = tmp_path_factory.mktemp("web_models") / "mnist"
    base.mkdir()
    os.symlink(digits_exports[0], base / "1")
    return base


@pytest.fixture(scope="session")
def model_server(models_base):
    with ServerProcess(["--model_name=mnist", f"--model_base_path={models_base}"]) as server:
        yield server


@pytest.fixture(scope="session")
def app(model_server, tmp_path_factory):
    with AppProcess(model_server.rest_port, tmp_path_factory.mktemp("web_logs")) as process:
        yield process


@pytest.fixture(scope="session")
def browser():
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"no browser at {CHROMIUM}: run `make test`, which installs Debian's chromium with apt-get "
                    f"(or point DIGITS_CHROMIUM at a Chromium binary)", pytrace=False)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        yield browser
        browser.close()


@pytest.fixture
def page(browser):
    # Reduced motion: the bars take their length at once (the page honours the setting), so it can be measured.
    context = browser.new_context(viewport={"width": 1100, "height": 760}, reduced_motion="reduce")
    page = context.new_page()
    page.set_default_timeout(30_000)
    yield page
    context.close()


@pytest.fixture(scope="session")
def screenshots() -> pathlib.Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS
