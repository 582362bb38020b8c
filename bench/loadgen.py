"""Load generators and /proc readings for bench/serving_bench.py.

Each ``*_point`` runs one load point against a server as a separate process and returns req/s,
p50/p99 ms, errors and the generator's own CPU seconds in the measured window. ``on_start`` is
called when the measured window opens, so the bench can read the server's CPU time there.
  - wrk (REST): bench/predict.lua, 1 thread, keep-alive connections, a 1 s warm-up run first.
  - grpc_load.py (gRPC, the default): a grpc.aio client process, pre-serialized requests.
  - h2load (gRPC, --grpc-load h2load; Debian's nghttp2-client): C, one stream per connection, the
    request as a raw gRPC frame. It counts HTTP/2 200s, so a call answered with a gRPC error status
    (no DATA) would count as done: responses without data are counted as errors here.
"""
import json
import os
import re
import struct
import subprocess
import sys

import numpy as np

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


def cpu_seconds(pid):
    """User + system CPU seconds of a process so far (all its threads)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime: fields 14, 15 of proc(5)


def machine_busy_seconds():
    """CPU seconds the whole machine spent not idle, summed over cores."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    return (sum(values[:8]) - values[3] - values[4]) / TICKS  # minus idle, iowait


def peak_rss_mb(pid):
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024.0


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


def h2load_point(port, requests_file, connections, duration, on_start):
    log = requests_file + ".log"
    on_start()  # the window includes h2load's 1 s warm-up under the same load: CPU rates stay comparable
    cpu0 = children_cpu()
    out = run(["h2load", "-t1", f"-c{connections}", "-m1", f"-D{duration}", "--warm-up-time=1", f"--log-file={log}",
               "-H", "content-type: application/grpc", "-H", "te: trailers", "-d", requests_file + ".frame",
               f"http://127.0.0.1:{port}{GRPC_METHOD}"])
    cpu = children_cpu() - cpu0
    done = re.search(r"requests: \d+ total, \d+ started, \d+ done, (\d+) succeeded, (\d+) failed, (\d+) errored, "
                     r"(\d+) timeout", out)
    succeeded, failed = int(done.group(1)), sum(int(g) for g in done.groups()[1:])
    data_bytes = int(re.search(r"\((\d+)\) data", out).group(1))
    if succeeded and data_bytes / succeeded < 20:  # answers without a response message: gRPC errors
        failed, succeeded = failed + succeeded, 0
    with open(log) as f:
        latencies = np.array([int(line.split()[2]) for line in f if line.strip()], dtype=np.float64) / 1e3
    seconds = float(re.search(r"finished in ([\d.]+)s", out).group(1)) - 1.0  # minus the warm-up
    return {"req_s": succeeded / seconds, "p50_ms": float(np.percentile(latencies, 50)) if len(latencies) else 0.0,
            "p99_ms": float(np.percentile(latencies, 99)) if len(latencies) else 0.0, "errors": failed,
            "generator_cpu_s": cpu * seconds / (seconds + 1.0), "seconds": seconds}
