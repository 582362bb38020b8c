"""Load generators and /proc readings for bench/serving_bench.py.

Each ``*_point`` runs one load point against a server as a separate process and returns req/s,
p50/p99 ms, errors and the generator's own CPU seconds in the measured window. ``on_start`` is
called when the measured window opens, so the bench can read the server's CPU time there.
  - wrk (REST): bench/predict.lua, 1 thread, keep-alive connections, a 1 s warm-up run first.
  - h2load (gRPC, the default; Debian's nghttp2-client): C, one thread, one stream in flight per
    connection, the request sent as a raw gRPC frame, a 1 s warm-up run first. h2load counts HTTP
    statuses only and a gRPC error is an HTTP 200 with grpc-status in the trailers and no message, so
    every OK answer must bring exactly the response frame a real gRPC client got for the same bytes
    (``grpc_frame_check``): DATA bytes short of succeeded x that size are counted as errors.
  - grpc_load.py (gRPC, --grpc-load python): a grpc.aio client process, pre-serialized requests.
The server's CPU and peak RSS are read over its whole process tree (``tree_cpu_seconds``,
``tree_peak_rss_mb``), so a server that forks serving processes is measured whole.
"""
import json
import os
import re
import struct
import subprocess
import sys

import numpy as np
import psutil

BENCH = os.path.dirname(os.path.abspath(__file__))
PATH = "/v1/models/mnist:predict"
GRPC_METHOD = "/tensorflow.serving.PredictionService/Predict"
TICKS = os.sysconf("SC_CLK_TCK")


def chunks(images, per_request, count):
    return [images[(i * per_request) % len(images):][:per_request] for i in range(count)]


def write_bodies(path, images, per_request, count):
    """REST bodies, one JSON document a line: {"instances": [...]}, float32 pixels 0..255."""
    with open(path, "w") as f:
        for chunk in chunks(images, per_request, count):
            f.write(json.dumps({"instances": chunk.tolist()}, separators=(",", ":")) + "\n")


def predict_request(chunk):
    from tensorflow_serving.apis import predict_pb2
    chunk = np.ascontiguousarray(chunk, dtype="<f4")
    request = predict_pb2.PredictRequest()
    request.model_spec.name, request.model_spec.signature_name = "mnist", "serving_default"
    tensor = request.inputs["images"]
    tensor.dtype = 1  # DT_FLOAT
    for size in chunk.shape:
        tensor.tensor_shape.dim.add().size = size
    tensor.tensor_content = chunk.tobytes()
    return request.SerializeToString()


def write_grpc_requests(path, images, per_request, count):
    """Serialized PredictRequests for grpc_load.py (4-byte length, bytes) and, in path + ".frame",
    the first as one gRPC frame for h2load (flag 0, 4-byte big-endian length, bytes)."""
    requests = [predict_request(chunk) for chunk in chunks(images, per_request, count)]
    with open(path, "wb") as f:
        f.write(b"".join(struct.pack("<I", len(r)) + r for r in requests))
    with open(path + ".frame", "wb") as f:
        f.write(b"\0" + struct.pack(">I", len(requests[0])) + requests[0])


def process_tree(pid):
    """The process and all its descendants (serving processes a server forks, helpers they start)."""
    root = psutil.Process(pid)
    return [root] + root.children(recursive=True)


def tree_cpu_seconds(pid):
    """User + system CPU seconds so far of a process and its descendants, all threads, including
    children that already exited and were waited for (their time moved to the parent's cutime/cstime)."""
    total = 0.0
    for process in process_tree(pid):
        try:
            t = process.cpu_times()
        except psutil.NoSuchProcess:  # exited since the listing: its time is in its parent's children_*
            continue
        total += t.user + t.system + t.children_user + t.children_system
    return total


def machine_busy_seconds():
    """CPU seconds the whole machine spent not idle, summed over cores."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    return (sum(values[:8]) - values[3] - values[4]) / TICKS  # minus idle, iowait


def tree_peak_rss_mb(pid):
    """{pid: peak resident set size in MB (VmHWM)} for the process and each descendant alive now."""
    peaks = {}
    for process in process_tree(pid):
        try:
            with open(f"/proc/{process.pid}/status") as f:
                peaks[process.pid] = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024.0
        except (OSError, StopIteration):  # exited, or a zombie (no memory left to report)
            continue
    return peaks


def children_cpu():
    t = os.times()
    return t.children_user + t.children_system


def run(argv, on_start=None):
    """stdout of one generator run; on_start() is called when it prints a line START."""
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines = []
    for line in process.stdout:
        if line.strip() == "START" and on_start:
            on_start()
        lines.append(line)
    err = process.stderr.read()
    if process.wait():
        sys.exit(f"load generator failed ({process.returncode}): {' '.join(argv)}\n{err[-2000:]}")
    return "".join(lines)


def wrk_point(port, bodies, connections, duration, on_start):
    url = f"http://127.0.0.1:{port}{PATH}"
    base = ["wrk", "-t1", f"-c{connections}", "--timeout", "30s", "-s", os.path.join(BENCH, "predict.lua")]
    run(base + ["-d1s", url, "--", bodies])  # warm-up: the same load, not counted
    on_start()
    cpu0 = children_cpu()
    out = run(base + [f"-d{duration}s", url, "--", bodies])
    r = json.loads(next(line for line in out.splitlines() if line.startswith("WRK_JSON "))[len("WRK_JSON "):])
    errors = sum(r[k] for k in ("connect_errors", "read_errors", "write_errors", "status_errors", "timeouts"))
    seconds = r["duration_us"] / 1e6
    return {"req_s": r["requests"] / seconds, "p50_ms": r["p50_us"] / 1e3, "p99_ms": r["p99_us"] / 1e3,
            "errors": errors, "generator_cpu_s": children_cpu() - cpu0, "seconds": seconds}


def grpc_point(port, requests_file, connections, duration, on_start):
    out = run([sys.executable, os.path.join(BENCH, "grpc_load.py"), "--target", f"127.0.0.1:{port}",
               "--requests-file", requests_file, "--concurrency", str(connections),
               "--duration", str(duration), "--warmup", "1"], on_start)
    r = json.loads(out.strip().splitlines()[-1])
    return {"req_s": r["req_s"], "p50_ms": r["p50_ms"], "p99_ms": r["p99_ms"], "errors": sum(r["errors"].values()),
            "generator_cpu_s": r["cpu_s"], "seconds": r["seconds"]}  # its CPU in the window, by its own count


def grpc_frame_check(port, frame_path, timeout=60):
    """The answer a real gRPC client (grpcio) gets for the exact bytes h2load sends: (serialized
    PredictResponse, DATA bytes of its frame). Exits when the call does not end with status OK."""
    import grpc
    with open(frame_path, "rb") as f:
        request = f.read()[5:]  # past the gRPC frame prefix: flag byte, 4-byte length
    with grpc.insecure_channel(f"127.0.0.1:{port}", options=[("grpc.max_receive_message_length", -1),
                                                              ("grpc.max_send_message_length", -1)]) as channel:
        call = channel.unary_unary(GRPC_METHOD, request_serializer=None, response_deserializer=None)
        try:
            response, state = call.with_call(request, timeout=timeout)
        except grpc.RpcError as error:
            sys.exit(f"gRPC Predict of {frame_path} failed on port {port}: {error.code().name} {error.details()}")
    if state.code() != grpc.StatusCode.OK:
        sys.exit(f"gRPC Predict of {frame_path} on port {port} ended with {state.code().name}")
    return response, 5 + len(response)


def h2load_point(port, frame_path, connections, duration, on_start, response_frame_bytes):
    """``response_frame_bytes``: DATA bytes of one OK answer (grpc_frame_check) to the request in
    ``frame_path``; every answer with :status 200 but fewer DATA bytes is counted as an error."""
    log = frame_path + ".log"
    base = ["h2load", "-t1", f"-c{connections}", "-m1", "-H", "content-type: application/grpc", "-H", "te: trailers",
            "-d", frame_path, f"http://127.0.0.1:{port}{GRPC_METHOD}"]
    run(base + ["-D1"])  # warm-up: the same load, not counted
    if os.path.exists(log):
        os.remove(log)  # h2load appends to its log file
    on_start()
    cpu0 = children_cpu()
    out = run(base + [f"-D{duration}", f"--log-file={log}"])
    cpu = children_cpu() - cpu0
    return {**parse_h2load(out, log, response_frame_bytes), "generator_cpu_s": cpu}


def parse_h2load(out, log, response_frame_bytes):
    """req/s of OK answers, p50/p99 of the HTTP 200 answers (h2load's per-request log), errors, seconds."""
    done = re.search(r"requests: \d+ total, \d+ started, \d+ done, (\d+) succeeded, (\d+) failed, (\d+) errored, "
                     r"(\d+) timeout", out)
    succeeded, failed = int(done.group(1)), sum(int(g) for g in done.groups()[1:])
    data_bytes = int(re.search(r"\((\d+)\) data", out).group(1))
    ok = min(succeeded, data_bytes // response_frame_bytes)  # answers that brought the whole response
    with open(log) as f:
        rows = [line.split("\t") for line in f if line.strip()]
    latencies = np.array([int(r[2]) for r in rows if r[1] == "200"], dtype=np.float64) / 1e3
    value, unit = re.search(r"finished in ([\d.]+)(m?s)", out).groups()
    seconds = float(value) / (1e3 if unit == "ms" else 1.0)
    return {"req_s": ok / seconds, "p50_ms": float(np.percentile(latencies, 50)) if len(latencies) else 0.0,
            "p99_ms": float(np.percentile(latencies, 99)) if len(latencies) else 0.0,
            "errors": failed + succeeded - ok, "seconds": seconds}
