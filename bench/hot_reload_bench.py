"""The first request after a hot reload, with and without model warmup (part of bench/serving_bench.py).

A running model server sees a new version appear under its base path (pushed as the Pusher pushes: a
copy under a hidden name, then one rename), loads it and reports it AVAILABLE; the very next request
to that version, through each serving signature in turn (REST, one digit), is timed, then a second
one (the steady state). Two servers run one after the other on the same export (which carries
assets.extra/tf_serving_warmup_requests): --enable_model_warmup=false and =true, each over the same
number of reloads; medians are printed with the ratio off/on.
"""
from __future__ import annotations

import http.client
import os
import shutil
import statistics
import time

from components.infra import serving_requests
from components.training.warmup_requests import REQUESTS_FILE_NAME, write_warmup_requests
from tests.server_process import ServerProcess

MODEL = "mnist"


def ensure_warmup_file(export_dir: str, images) -> bool:
    """Writes the warmup file into ``export_dir`` (a copy) when the export has none; True if written."""
    if os.path.exists(os.path.join(export_dir, "assets.extra", REQUESTS_FILE_NAME)):
        return False
    write_warmup_requests(export_dir, images)
    return True


def _push(export_dir: str, base: str, version: int) -> None:
    staging = os.path.join(base, f".staging-{version}")
    shutil.copytree(export_dir, staging)
    os.rename(staging, os.path.join(base, str(version)))


def _post_ms(port: int, path: str, body: str) -> float:
    started = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        conn.request("POST", path, body, {"Content-Type": "application/json"})
        response = conn.getresponse()
        text = response.read()
    finally:
        conn.close()
    if response.status != 200:
        raise SystemExit(f"hot-reload bench: {path} answered {response.status}: {text[:300]!r}")
    return 1000 * (time.perf_counter() - started)


def _wait_available(server: ServerProcess, version: int, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        state = server.version_states(MODEL).get(version, ("", ""))
        if state[0] == "AVAILABLE":
            return
        if state[0] == "END" or time.monotonic() > deadline:
            raise SystemExit(f"hot-reload bench: version {version} did not become AVAILABLE: {state}\n{server.log()}")
        time.sleep(0.005)


def first_requests(export_dir: str, work: str, images, warmup: bool, reloads: int, server_args) -> dict:
    """{signature: {"first_ms": [...], "second_ms": [...]}, "available_s": [...]} over ``reloads`` hot reloads
    of one server (available_s: from the rename to AVAILABLE, the poll interval included)."""
    base = os.path.join(work, f"hot-reload-{'on' if warmup else 'off'}")
    os.makedirs(base)
    _push(export_dir, base, 1)
    flags = [f"--model_name={MODEL}", f"--model_base_path={base}", "--file_system_poll_wait_seconds=1",
             f"--enable_model_warmup={'true' if warmup else 'false'}", *server_args]
    signatures = serving_requests.model_signatures(export_dir)
    figures: dict = {"available_s": []}
    with ServerProcess(flags) as server:
        for version in range(2, reloads + 2):
            _push(export_dir, base, version)
            pushed = time.perf_counter()
            _wait_available(server, version)
            figures["available_s"].append(time.perf_counter() - pushed)
            requests = serving_requests.build_requests(images[:1], MODEL, signatures, version=version)
            for request in sorted(requests, key=lambda r: r.signature != serving_requests.DEFAULT_SIGNATURE):
                first = _post_ms(server.rest_port, request.rest_path, request.rest_body)
                second = _post_ms(server.rest_port, request.rest_path, request.rest_body)
                entry = figures.setdefault(request.signature, {"first_ms": [], "second_ms": []})
                entry["first_ms"].append(first)
                entry["second_ms"].append(second)
    return figures


def measure(source: str, work: str, images, reloads: int, server_args) -> dict:
    """Both servers, one after the other; prints the medians and returns everything for the JSON."""
    export = os.path.join(work, "hot-reload-export")
    shutil.copytree(source, export)
    if ensure_warmup_file(export, images):
        print("  (the export has no warmup file: one written from the first 32 test digits)", flush=True)
    runs = {}
    for warmup in (False, True):
        print(f"  model server --enable_model_warmup={'true' if warmup else 'false'}: {reloads} hot reloads ...",
              flush=True)
        runs["on" if warmup else "off"] = first_requests(export, work, images, warmup, reloads, server_args)
    summary = {}
    print(f"\nFirst request to a version just AVAILABLE after a hot reload (REST, 1 digit, median of {reloads}):")
    signatures = [s for s in runs["off"] if s != "available_s"]
    for signature in sorted(signatures, key=lambda s: s != serving_requests.DEFAULT_SIGNATURE):
        off, on = (statistics.median(runs[k][signature]["first_ms"]) for k in ("off", "on"))
        steady = statistics.median(runs["on"][signature]["second_ms"] + runs["off"][signature]["second_ms"])
        summary[signature] = {"first_ms_warmup_off": off, "first_ms_warmup_on": on, "ratio_off_on": off / on,
                              "second_ms": steady}
        print(f"  {signature:17} warmup off {off:8.1f} ms   warmup on {on:7.1f} ms   off/on {off / on:6.1f}x   "
              f"(second request {steady:.1f} ms)")
    off, on = (statistics.median(runs[k]["available_s"]) for k in ("off", "on"))
    summary["available_s"] = {"warmup_off": off, "warmup_on": on}
    print(f"  rename to AVAILABLE (poll every 1 s included): warmup off {off:.2f} s, warmup on {on:.2f} s")
    return {"reloads": reloads, "median": summary, "runs": runs}
