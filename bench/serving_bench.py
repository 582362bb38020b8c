"""Serving benchmark: the model server under load on loopback, against the model called in-process.

    make bench-serving              # or: .venv/bin/python bench/serving_bench.py [--duration 6]
    make bench-serving ARGS="--quick --duration 1"        # a smoke run: 4 points, batching off
    make bench-serving ARGS="--server-args='--num_serving_processes=2'"  # extra server flags: keep the =

One invocation measures, one after the other: (a) the in-process limit, one thread, through the path
the server runs the model: LoadedModel.load() then its predict() (signature checks, then the session
run), and the bare session callable predict() ends in (Session::MakeCallable of serving_default), at
batch 1 and 100; (b) `python -m serving` (plus --server-args) over REST (wrk + bench/predict.lua) and
gRPC (h2load, C; or bench/grpc_load.py, grpc.aio, with --grpc-load python) with 1 image per request
at 1/4/16/64 connections and 100 images per request at 4/16, without and with --enable_batching;
(c) bench/naive_server.py (FastAPI + uvicorn) under the same REST load, for reference. Each point:
a 1 s warm-up run, then --duration seconds. --quick: 16 connections only, batching off, no naive server.
First (--hot-reload on, the default; "only" measures nothing else): the first request after a hot reload
with and without model warmup (bench/hot_reload_bench.py), the median of --reloads reloads each.

h2load counts HTTP statuses only: before loading a server, the exact request bytes h2load sends go
through a real gRPC client (grpcio), which must get status OK and the classes the in-process call
gives; under load, every answer must bring that response's DATA bytes (else it counts as an error).

Nothing is pinned: on 2 cores, pinning the server to one core would cap it below what it uses, and
pinning only the generator reserves nothing for the server. Instead each point prints the CPU of the
server (its whole process tree), of the generator and of everything else (/proc), so a starved server
or a busy machine shows. Prints req/s, images/s, p50/p99 ms, the server processes' peak RSS (VmHWM:
max and sum), the goals (bench/serving_report.py) with PASS/MISS and their ratios to the session
callable, and writes artifacts/bench/serving.json. Model: --model-dir, else the newest version under
artifacts/serving/mnist, else a small one made by tests/conftest.export_digits_model; copied as
version 1 of a temporary base dir.
"""
import argparse
import http.client
import json
import os
import shlex
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
import hot_reload_bench  # noqa: E402
import loadgen  # noqa: E402
import serving_report  # noqa: E402
from components.data import mnist_source  # noqa: E402
from loadgen import PATH, machine_busy_seconds, tree_cpu_seconds, tree_peak_rss_mb  # noqa: E402
from tests.server_process import ServerProcess, free_port  # noqa: E402

PY, BENCH = sys.executable, os.path.join(ROOT, "bench")
LOAD = [(1, c) for c in (1, 4, 16, 64)] + [(100, c) for c in (4, 16)]  # (images per request, connections)
QUICK_LOAD = [(1, serving_report.GOAL_CONNECTIONS), (100, serving_report.GOAL_CONNECTIONS)]


def newest_version(base):
    if not os.path.isdir(base):
        return None
    versions = [d for d in os.listdir(base) if d.isdigit() and os.path.exists(os.path.join(base, d, "saved_model.pb"))]
    return os.path.join(base, max(versions, key=int)) if versions else None


def prepare_model(work, splits, model_dir=None):
    """A serving base dir holding one version (1): a copy of --model-dir, of what `make run` pushed, or of a
    fresh small model."""
    source = os.path.abspath(model_dir) if model_dir else newest_version(os.path.join(ROOT, "artifacts", "serving",
                                                                                       "mnist"))
    if source is None:
        print("no model under artifacts/serving/mnist: training a small one ...", flush=True)
        from tests.conftest import export_digits_model
        source = export_digits_model(os.path.join(work, "train"), splits, seed=1, epochs=2)
    base = os.path.join(work, "mnist")
    shutil.copytree(source, os.path.join(base, "1"))
    return source, base


def in_process(model_dir, images, seconds):
    """({path: {batch: calls/s}}, the LoadedModel): this process, one thread, the server's two layers:
    LoadedModel.predict() and the bare session callable of serving_default it ends in."""
    from serving.servables.loaded_model import DEFAULT_SIGNATURE, LoadedModel
    model = LoadedModel.load(model_dir)
    runner = model.signatures[DEFAULT_SIGNATURE].runner
    if runner.feed_aliases != ("images",):
        sys.exit(f"{DEFAULT_SIGNATURE} takes {runner.feed_aliases}, not ('images',): not the digits model")
    paths = {serving_report.CALLABLE: runner._call,  # Session::MakeCallable's callable: arrays in, arrays out
             serving_report.PREDICT: lambda batch: model.predict(DEFAULT_SIGNATURE, {"images": batch})}
    rates = {path: {} for path in paths}
    for batch in (1, 100):
        batches = [images[i:i + batch] for i in range(0, len(images) - batch + 1, batch)][:200]
        for path, call in paths.items():
            for limit in (1.0, seconds):  # warm-up, then the measured loop
                calls, started = 0, time.perf_counter()
                while time.perf_counter() - started < limit:
                    call(batches[calls % len(batches)])
                    calls += 1
            rates[path][batch] = calls / (time.perf_counter() - started)
    return rates, model


def check_answers(rest_port, grpc_port, images, expected_classes, files):
    """A Predict of 8 images over REST must give the classes the in-process call gives; over gRPC, the
    frames h2load sends, through grpcio, must end OK with the right classes. Returns {images per request:
    DATA bytes of the gRPC answer frame}."""
    conn = http.client.HTTPConnection("127.0.0.1", rest_port, timeout=60)
    conn.request("POST", PATH, json.dumps({"instances": images[:8].tolist()}), {"Content-Type": "application/json"})
    response = conn.getresponse()
    body = json.loads(response.read())
    conn.close()
    classes = [p["classes"] for p in body.get("predictions", [])]
    if response.status != 200 or classes != list(expected_classes[:8]):
        sys.exit(f"wrong answer over REST on port {rest_port}: {response.status} {str(body)[:300]}")
    frame_bytes = {}
    if grpc_port:
        import tensorflow as tf
        from tensorflow_serving.apis import predict_pb2
        for (protocol, per_request), path in files.items():
            if protocol != "gRPC":
                continue
            answer, frame_bytes[per_request] = loadgen.grpc_frame_check(grpc_port, path + ".frame")
            got = tf.make_ndarray(predict_pb2.PredictResponse.FromString(answer).outputs["classes"]).tolist()
            if got != list(expected_classes[:per_request]):
                sys.exit(f"wrong answer over gRPC on port {grpc_port} for {per_request} images: {got[:10]}")
    return frame_bytes


def measure_server(name, batching, pid, rest_port, grpc_port, files, frame_bytes, load, args, rows):
    def wrk(port, bodies, connections, on_start, per_request):
        return loadgen.wrk_point(port, bodies, connections, args.duration, on_start)

    def h2load(port, requests_file, connections, on_start, per_request):
        return loadgen.h2load_point(port, requests_file + ".frame", connections, args.duration, on_start,
                                    frame_bytes[per_request])

    def python_grpc(port, requests_file, connections, on_start, per_request):
        return loadgen.grpc_point(port, requests_file, connections, args.duration, on_start)

    generators = {"REST": wrk, "gRPC": h2load if args.grpc_load == "h2load" else python_grpc}
    for protocol, port in (("REST", rest_port), ("gRPC", grpc_port)):
        if port is None:
            continue
        for per_request, connections in load:
            start = []  # wall time, server CPU, machine CPU when the measured window opens
            point = generators[protocol](port, files[protocol, per_request], connections,
                                         lambda: start.append((time.perf_counter(), tree_cpu_seconds(pid),
                                                               machine_busy_seconds())), per_request)
            wall = time.perf_counter() - start[0][0]
            server_pct = 100 * (tree_cpu_seconds(pid) - start[0][1]) / wall
            generator_pct = 100 * point["generator_cpu_s"] / point["seconds"]
            other_pct = max(0.0, 100 * (machine_busy_seconds() - start[0][2]) / wall - server_pct - generator_pct)
            peaks = tree_peak_rss_mb(pid)
            row = {"server": name, "protocol": protocol, "batching": batching, "images_per_request": per_request,
                   "connections": connections, **point, "images_s": point["req_s"] * per_request,
                   "server_cpu_pct": server_pct, "generator_cpu_pct": generator_pct, "other_cpu_pct": other_pct,
                   "processes": len(peaks), "rss_max_mb": max(peaks.values()), "rss_sum_mb": sum(peaks.values()),
                   "rss_mb_by_pid": {str(k): v for k, v in peaks.items()}}
            rows.append(row)
            print(f"  {name:13} {protocol:4} batching={'on ' if batching else 'off'} {per_request:3} img/req "
                  f"{connections:2} conn: {row['req_s']:8.0f} req/s  p99 {row['p99_ms']:7.1f} ms  errors "
                  f"{row['errors']}  CPU% srv {server_pct:3.0f} gen {generator_pct:3.0f} other {other_pct:3.0f}",
                  flush=True)


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


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=6, help="seconds measured per load point (default 6)")
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run: 16 connections only, batching off unless --batching says, no naive server")
    parser.add_argument("--batching", choices=("off", "on", "both"),
                        help="model server without/with --enable_batching (default both; off with --quick)")
    parser.add_argument("--grpc-load", choices=("h2load", "python"), default="h2load",
                        help="gRPC generator: h2load (C, the default) or bench/grpc_load.py (grpc.aio)")
    parser.add_argument("--server-args", default="",
                        help="extra model server flags, one string, with the =: --server-args='--flag=1 --other=2'")
    parser.add_argument("--batching-parameters-file", default="", help="passed to the server with --enable_batching")
    parser.add_argument("--model-dir", help="a SavedModel version directory to serve (default: the newest pushed)")
    parser.add_argument("--hot-reload", choices=("on", "off", "only"), default="on",
                        help="measure the first request after a hot reload, warmup off vs on (default on; only: "
                             "nothing else)")
    parser.add_argument("--reloads", type=int,
                        help="hot reloads per server for --hot-reload (default 5; 3 with --quick)")
    parser.add_argument("--output", default=os.path.join(ROOT, "artifacts", "bench", "serving.json"))
    return parser.parse_args(argv)


def main():
    args = parse_args()
    server_args = shlex.split(args.server_args)
    load = QUICK_LOAD if args.quick else LOAD
    modes = {"off": [False], "on": [True], "both": [False, True]}[args.batching or ("off" if args.quick else "both")]
    for tool, package in (("wrk", "wrk"), ("h2load", "nghttp2-client")):
        if (tool == "wrk" or args.grpc_load == "h2load") and shutil.which(tool) is None:
            sys.exit(f"{tool} is not installed: `apt-get install -y {package}` (as root)")
    load_average = os.getloadavg()[0]
    if load_average > 0.5:
        print(f"WARNING: load average {load_average:.1f} before starting: other work will skew the figures", flush=True)
    splits = mnist_source.load_splits(mnist_source.package_data_dir(), True)
    test = splits["test"]
    images = test.images[:2000].reshape(-1, 28, 28).astype(np.float32)
    with tempfile.TemporaryDirectory(prefix="digits-serving-bench-") as work:
        source, base = prepare_model(work, splits, args.model_dir)
        print(f"model: {source}", flush=True)
        hot_reload = None
        if args.hot_reload != "off":
            print("hot reload: the first request to a new version, model warmup off and on ...", flush=True)
            hot_reload = hot_reload_bench.measure(source, work, test.images, args.reloads or (3 if args.quick else 5),
                                                  server_args)
            if args.hot_reload == "only":
                _write(args.output, {"model": source, "cpus": os.cpu_count(), "load_average_at_start": load_average,
                                     "server_args": server_args, "hot_reload": hot_reload})
                return
        print("in-process calls (session callable, LoadedModel.predict) ...", flush=True)
        inproc, model = in_process(os.path.join(base, "1"), images, args.duration)
        classes = model.predict("serving_default", {"images": images})["classes"]
        model.close()
        expected, accuracy = classes[:100].tolist(), float(np.mean(classes == test.labels[:len(images)]))
        files = {}
        for per_request, count in ((1, 200), (100, 20)):
            files["REST", per_request] = os.path.join(work, f"bodies-{per_request}.jsonl")
            files["gRPC", per_request] = os.path.join(work, f"requests-{per_request}.bin")
            loadgen.write_bodies(files["REST", per_request], images, per_request, count)
            loadgen.write_grpc_requests(files["gRPC", per_request], images, per_request, count)
        rows = []
        for batching in modes:
            flags = ["--model_name=mnist", f"--model_base_path={base}", *server_args]
            if batching:
                flags.append("--enable_batching")
                if args.batching_parameters_file:
                    flags.append(f"--batching_parameters_file={os.path.abspath(args.batching_parameters_file)}")
            print(f"model server {' '.join(flags[2:])} ...", flush=True)
            with ServerProcess(flags) as server:
                frame_bytes = check_answers(server.rest_port, server.grpc_port, images, expected, files)
                measure_server("model server", batching, server.process.pid, server.rest_port, server.grpc_port,
                               files, frame_bytes, load, args, rows)
        if not args.quick:
            print("naive FastAPI + uvicorn server ...", flush=True)
            process, port = naive_server(os.path.join(base, "1"))
            try:
                check_answers(port, None, images, expected, files)
                measure_server("naive FastAPI", False, process.pid, port, None, files, {}, load, args, rows)
            finally:
                process.terminate()
                process.wait(30)
    serving_report.print_in_process(inproc)
    serving_report.print_table(inproc, rows)
    goals = serving_report.evaluate_goals(inproc, rows)
    _write(args.output, {"model": source, "test_accuracy_first_2000": accuracy, "cpus": os.cpu_count(),
                         "load_average_at_start": load_average, "duration_s": args.duration, "quick": args.quick,
                         "grpc_load": args.grpc_load, "server_args": server_args,
                         "batching_parameters_file": args.batching_parameters_file,
                         "in_process_calls_s": {path: {str(k): v for k, v in r.items()} for path, r in inproc.items()},
                         "rows": rows, "goals": goals, "hot_reload": hot_reload})


def _write(output, report):
    os.makedirs(os.path.dirname(output), exist_ok=True)
    with open(output, "w") as f:
        json.dump(report, f, indent=1)
    print(f"\nwritten: {os.path.relpath(output, ROOT)}")


if __name__ == "__main__":
    main()
