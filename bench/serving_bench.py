"""Serving benchmark: the model server under load on loopback, against the model called in-process.

    make bench-serving            # or: .venv/bin/python bench/serving_bench.py [--duration 6]

One invocation measures, one after the other: (a) the serving_default signature called in this
process at batch 1 (the limit a server approaches), 64 and 100; (b) `python -m serving` over REST
(wrk + bench/predict.lua) and gRPC (bench/grpc_load.py, a separate grpc.aio process; or h2load with
--grpc-load h2load) with 1 image per request at 1/4/16/64 connections, without and with
--enable_batching; (c) 100 images per request at 4/16 connections; (d) bench/naive_server.py
(FastAPI + uvicorn) under the same REST load. Each point: 1 s warm-up, then --duration seconds.

Nothing is pinned: on 2 cores, pinning the server to one core would cap it below what it uses, and
pinning only the generator reserves nothing for the server. Instead each point prints the CPU of the
server, of the generator and of everything else (/proc), so a starved server or a busy machine shows.
Prints req/s, images/s, p50/p99 ms, server peak RSS (VmHWM), the serving-speed goals with their ratios,
and writes artifacts/bench/serving.json. Model: the newest version under artifacts/serving/mnist
(copied as version 1 of a temp base dir), else a small one made by tests/conftest.export_digits_model.
"""
import argparse
import http.client
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.join(ROOT, "bench"))
import loadgen  # noqa: E402
from components import mnist_source  # noqa: E402
from loadgen import PATH, cpu_seconds, machine_busy_seconds, peak_rss_mb  # noqa: E402
from tests.server_process import ServerProcess, free_port  # noqa: E402

PY, BENCH = sys.executable, os.path.join(ROOT, "bench")
LOAD = [(1, c) for c in (1, 4, 16, 64)] + [(100, c) for c in (4, 16)]  # (images per request, connections)


def newest_version(base):
    versions = [d for d in os.listdir(base) if d.isdigit() and os.path.exists(os.path.join(base, d, "saved_model.pb"))]
    return os.path.join(base, max(versions, key=int)) if versions else None


def prepare_model(work, splits):
    """A serving base dir holding one version (1): a copy of what `make run` pushed, or a fresh small model."""
    source = newest_version(os.path.join(ROOT, "artifacts", "serving", "mnist")) \
        if os.path.isdir(os.path.join(ROOT, "artifacts", "serving", "mnist")) else None
    if source is None:
        print("no model under artifacts/serving/mnist: training a small one ...", flush=True)
        from tests.conftest import export_digits_model
        source = export_digits_model(os.path.join(work, "train"), splits, seed=1, epochs=2)
    base = os.path.join(work, "mnist")
    shutil.copytree(source, os.path.join(base, "1"))
    return source, base


def in_process(model_dir, images, seconds):
    """Calls/s of the signature in this process, per batch size, outputs fetched as numpy."""
    import tensorflow as tf
    infer = tf.saved_model.load(model_dir).signatures["serving_default"]
    rates = {}
    for batch in (1, 64, 100):
        batches = [images[i:i + batch] for i in range(0, len(images) - batch + 1, batch)][:200]
        for limit in (1.0, seconds):  # warm-up, then the measured loop
            calls, started = 0, time.perf_counter()
            while time.perf_counter() - started < limit:
                infer(images=batches[calls % len(batches)])["probabilities"].numpy()
                calls += 1
        rates[batch] = calls / (time.perf_counter() - started)
    return rates, infer


def check_answers(rest_port, grpc_port, images, expected_classes):
    """A Predict of 8 images over REST (and gRPC) must give the classes the in-process call gives."""
    conn = http.client.HTTPConnection("127.0.0.1", rest_port, timeout=60)
    conn.request("POST", PATH, json.dumps({"instances": images[:8].tolist()}), {"Content-Type": "application/json"})
    response = conn.getresponse()
    body = json.loads(response.read())
    conn.close()
    classes = [p["classes"] for p in body.get("predictions", [])]
    if response.status != 200 or classes != list(expected_classes[:8]):
        sys.exit(f"wrong answer over REST on port {rest_port}: {response.status} {str(body)[:300]}")
    if grpc_port:
        from serving.client.model_client import ModelClient
        with ModelClient(f"127.0.0.1:{grpc_port}", grpc=True, timeout=60) as client:
            if client.predict(images[:8]).argmax(axis=1).tolist() != list(expected_classes[:8]):
                sys.exit(f"wrong answer over gRPC on port {grpc_port}")


def measure_server(name, batching, pid, rest_port, grpc_port, files, args, rows):
    generators = {"REST": loadgen.wrk_point,
                  "gRPC": loadgen.h2load_point if args.grpc_load == "h2load" else loadgen.grpc_point}
    for protocol, port in (("REST", rest_port), ("gRPC", grpc_port)):
        if port is None:
            continue
        for per_request, connections in LOAD:
            start = []  # wall time, server CPU, machine CPU when the measured window opens
            point = generators[protocol](port, files[protocol, per_request], connections, args.duration,
                                         lambda: start.append((time.perf_counter(), cpu_seconds(pid),
                                                               machine_busy_seconds())))
            wall = time.perf_counter() - start[0][0]
            server_pct = 100 * (cpu_seconds(pid) - start[0][1]) / wall
            generator_pct = 100 * point["generator_cpu_s"] / point["seconds"]
            other_pct = 100 * (machine_busy_seconds() - start[0][2]) / wall - server_pct - generator_pct
            row = {"server": name, "protocol": protocol, "batching": batching, "images_per_request": per_request,
                   "connections": connections, **point, "images_s": point["req_s"] * per_request,
                   "server_cpu_pct": server_pct, "generator_cpu_pct": generator_pct,
                   "other_cpu_pct": max(0.0, other_pct), "peak_rss_mb": peak_rss_mb(pid)}
            rows.append(row)
            print(f"  {name:13} {protocol:4} batching={'on ' if batching else 'off'} {per_request:3} img/req "
                  f"{connections:2} conn: {row['req_s']:8.0f} req/s  p99 {row['p99_ms']:7.1f} ms  "
                  f"errors {row['errors']}", flush=True)


def naive_server(model_dir):
    port = free_port()
    process = subprocess.Popen([PY, os.path.join(BENCH, "naive_server.py"), "--model-dir", model_dir,
                                "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 180
    while True:
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            sys.exit("the naive FastAPI server did not start: run bench/naive_server.py by hand to see why")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return process, port
        except OSError:
            time.sleep(0.2)


def print_report(inproc, rows):
    base = {1: inproc[1], 100: inproc[100] * 100}
    print(f"\nin-process serving_default: batch 1 {inproc[1]:,.0f} calls/s; batch 64 {inproc[64] * 64:,.0f} "
          f"images/s; batch 100 {inproc[100] * 100:,.0f} images/s")
    print(f"\n{'server':13} {'proto':5} {'batch':5} {'img/req':>7} {'conn':>4} {'req/s':>8} {'images/s':>9} "
          f"{'x inproc':>8} {'p50 ms':>7} {'p99 ms':>7} {'RSS MB':>6} {'CPU% srv':>8} {'gen':>4} {'other':>5} "
          f"{'errors':>6}")
    for r in rows:
        print(f"{r['server']:13} {r['protocol']:5} {'on' if r['batching'] else 'off':5} {r['images_per_request']:7} "
              f"{r['connections']:4} {r['req_s']:8.0f} {r['images_s']:9.0f} "
              f"{r['images_s'] / base[r['images_per_request']]:8.2f} {r['p50_ms']:7.2f} {r['p99_ms']:7.2f} "
              f"{r['peak_rss_mb']:6.0f} {r['server_cpu_pct']:8.0f} {r['generator_cpu_pct']:4.0f} "
              f"{r['other_cpu_pct']:5.0f} {r['errors']:6}")
    print("(x inproc: images/s over the in-process rate at the same images per call. CPU%: of one core, 200 = both;\n"
          " srv = the server process, gen = the load generator, other = the rest of the machine, should be ~0)")
    noisy = [r for r in rows if r["other_cpu_pct"] > 20]
    if noisy or any(r["errors"] for r in rows):
        print(f"WARNING: {len(noisy)} points ran beside other work (>20% CPU), {sum(r['errors'] for r in rows)} "
              f"errors: figures are not clean")


def evaluate_goals(inproc, rows):
    def row(server, protocol, batching, per_request, connections):
        return next(r for r in rows if (r["server"], r["protocol"], r["batching"], r["images_per_request"],
                                        r["connections"]) == (server, protocol, batching, per_request, connections))
    naive = row("naive FastAPI", "REST", False, 1, 16)
    goals = []
    for batching in (False, True):
        rest, grpc_ = row("model server", "REST", batching, 1, 16), row("model server", "gRPC", batching, 1, 16)
        big = max((r for r in rows if r["server"] == "model server" and r["protocol"] == "REST"
                   and r["batching"] == batching and r["images_per_request"] == 100), key=lambda r: r["images_s"])
        mode = "batching " + ("on" if batching else "off")
        goals += [
            (mode, "REST 1 img/req, 16 conn >= 1.0x in-process batch-1 calls/s", rest["req_s"] / inproc[1], 1.0, "x"),
            (mode, "REST 1 img/req, 16 conn: p99 <= 10 ms", rest["p99_ms"], 10.0, "ms"),
            (mode, "gRPC >= 1.5x REST req/s (1 img/req, 16 conn)", grpc_["req_s"] / rest["req_s"], 1.5, "x"),
            (mode, f"REST 100 img/req >= 100,000 images/s (best: {big['connections']} conn)",
             big["images_s"], 100000, "images/s"),
            (mode, "REST 1 img/req, 16 conn >= 3x the naive FastAPI server", rest["req_s"] / naive["req_s"], 3.0, "x")]
    rss = max(r["peak_rss_mb"] for r in rows if r["server"] == "model server")
    goals.append(("both", "model server peak RSS <= 800 MB (one version loaded)", rss, 800, "MB"))
    print("\ngoals (the serving-speed issue):")
    result = []
    for mode, text, value, target, unit in goals:
        met = value <= target if unit in ("ms", "MB") else value >= target
        print(f"  {'✔' if met else '✘'} [{mode:12}] {text}: {value:,.2f} {unit}")
        result.append({"mode": mode, "goal": text, "value": value, "target": target, "unit": unit, "met": met})
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=6, help="seconds measured per load point (default 6)")
    parser.add_argument("--grpc-load", choices=("python", "h2load"), default="python",
                        help="gRPC generator: bench/grpc_load.py (grpc.aio), or h2load (C, far less CPU per call)")
    parser.add_argument("--batching-parameters-file", default="", help="passed to the server with --enable_batching")
    parser.add_argument("--output", default=os.path.join(ROOT, "artifacts", "bench", "serving.json"))
    args = parser.parse_args()
    for tool, package in (("wrk", "wrk"), ("h2load", "nghttp2-client")):
        if (tool == "wrk" or args.grpc_load == "h2load") and shutil.which(tool) is None:
            sys.exit(f"{tool} is not installed: `apt-get install -y {package}` (as root)")
    load = os.getloadavg()[0]
    if load > 0.5:
        print(f"WARNING: load average {load:.1f} before starting: other work will skew the figures", flush=True)
    splits = mnist_source.load_splits(mnist_source.package_data_dir(), True)
    test = splits["test"]
    images = test.images[:2000].reshape(-1, 28, 28).astype(np.float32)
    with tempfile.TemporaryDirectory(prefix="digits-serving-bench-") as work:
        source, base = prepare_model(work, splits)
        print(f"model: {source}\nin-process calls of serving_default ...", flush=True)
        inproc, infer = in_process(os.path.join(base, "1"), images, args.duration)
        expected = infer(images=images[:8])["classes"].numpy().tolist()
        accuracy = float(np.mean(infer(images=images)["classes"].numpy() == test.labels[:len(images)]))
        files = {}
        for per_request, count in ((1, 200), (100, 20)):
            files["REST", per_request] = os.path.join(work, f"bodies-{per_request}.jsonl")
            files["gRPC", per_request] = os.path.join(work, f"requests-{per_request}.bin")
            loadgen.write_bodies(files["REST", per_request], images, per_request, count)
            loadgen.write_grpc_requests(files["gRPC", per_request], images, per_request, count)
        rows = []
        for batching in (False, True):
            flags = ["--model_name=mnist", f"--model_base_path={base}"]
            if batching:
                flags.append("--enable_batching")
                if args.batching_parameters_file:
                    flags.append(f"--batching_parameters_file={os.path.abspath(args.batching_parameters_file)}")
            print(f"model server, batching {'on' if batching else 'off'} ...", flush=True)
            with ServerProcess(flags) as server:
                check_answers(server.rest_port, server.grpc_port, images, expected)
                measure_server("model server", batching, server.process.pid, server.rest_port, server.grpc_port,
                               files, args, rows)
        print("naive FastAPI + uvicorn server ...", flush=True)
        process, port = naive_server(os.path.join(base, "1"))
        try:
            check_answers(port, None, images, expected)
            measure_server("naive FastAPI", False, process.pid, port, None, files, args, rows)
        finally:
            process.terminate()
            process.wait(30)
    print_report(inproc, rows)
    goals = evaluate_goals(inproc, rows)
    os.makedirs(os.path.dirname(args.output), exist_ok=True)
    with open(args.output, "w") as f:
        json.dump({"model": source, "test_accuracy_first_2000": accuracy, "cpus": os.cpu_count(),
                   "load_average_at_start": load, "duration_s": args.duration, "grpc_load": args.grpc_load,
                   "batching_parameters_file": args.batching_parameters_file,
                   "in_process_calls_s": {str(k): v for k, v in inproc.items()}, "rows": rows, "goals": goals},
                  f, indent=1)
    print(f"\nwritten: {os.path.relpath(args.output, ROOT)}")


if __name__ == "__main__":
    main()
