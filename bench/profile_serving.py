"""Profiling driver for the model server's hot path: starts ``python -m serving`` on the newest export
under artifacts/serving/mnist, drives it from other processes and, with --pyspy, samples the server
with py-spy while the load runs.

    .venv/bin/python bench/profile_serving.py rest --batch 1 --connections 16 --seconds 15
    .venv/bin/python bench/profile_serving.py grpc --batch 1 --connections 16 --pyspy /tmp/grpc.txt

REST load is wrk (``apt-get install wrk``) with keep-alive connections; gRPC load is a grpc.aio client
process per --procs holding --connections calls in flight in total, sending pre-serialized requests.
py-spy runs with --nonblocking (no ptrace stop of the server: it would distort the rates), --subprocesses
(a server with several serving processes) and ``--format raw`` (collapsed stacks); ``summarize`` turns
those into "% of samples" by frame. Server CPU is summed over its process tree.
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import re
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from tests.server_process import ServerProcess  # noqa: E402

sys.path.insert(0, os.path.join(ROOT, "bench"))
from loadgen import tree_cpu_seconds  # noqa: E402  (the server's processes: it and its children)

MODEL_BASE = os.path.join(ROOT, "artifacts", "serving", "mnist")


def images(batch: int):
    """Real MNIST test digits as float32 pixel values 0..255 (what `digits predict` sends): ~3.5 KB of
    JSON per image."""
    import numpy as np
    from components.data import mnist_source
    test = mnist_source.load_splits(mnist_source.package_data_dir(), True)["test"]
    return np.resize(test.images, (batch, 784)).reshape(batch, 28, 28).astype(np.float32)


def rest_body(batch: int) -> bytes:
    return json.dumps({"instances": images(batch).tolist()}).encode()


WRK_LUA = """wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local f = io.open("%s", "rb"); wrk.body = f:read("*a"); f:close()
"""


def run_wrk(port: int, batch: int, connections: int, seconds: float, threads: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        body = os.path.join(tmp, "body.json")
        with open(body, "wb") as f:
            f.write(rest_body(batch))
        script = os.path.join(tmp, "post.lua")
        with open(script, "w") as f:
            f.write(WRK_LUA % body)
        out = subprocess.run(["wrk", f"-t{threads}", f"-c{connections}", f"-d{int(seconds)}s", "--latency", "-s", script,
                              f"http://127.0.0.1:{port}/v1/models/mnist:predict"],
                             capture_output=True, text=True, check=True).stdout
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    pct = dict(re.findall(r"^\s+(50|75|90|99)%\s+(\S+)", out, re.M))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    return {"req_per_s": rate, "images_per_s": rate * batch, "latency": pct,
            "non_2xx": int(non2xx.group(1)) if non2xx else 0, "socket_errors": errors.group(1) if errors else "",
            "raw": out}


GRPC_CLIENT = r"""
import asyncio, sys, time
import grpc
port, inflight, seconds, path = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
payload = open(path, "rb").read()
lat = []
async def worker(call, stop):
    while time.perf_counter() < stop:
        t = time.perf_counter()
        await call(payload)
        lat.append(time.perf_counter() - t)
async def main():
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
        call = ch.unary_unary("/tensorflow.serving.PredictionService/Predict",
                              request_serializer=None, response_deserializer=None)
        await call(payload)
        start = time.perf_counter(); stop = start + seconds
        await asyncio.gather(*(worker(call, stop) for _ in range(inflight)))
        print(len(lat), time.perf_counter() - start, " ".join("%.6f" % x for x in lat))
asyncio.run(main())
"""


def run_grpc(port: int, batch: int, connections: int, seconds: float, procs: int) -> dict:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from tensorflow_serving.apis import predict_pb2
    from serving.grpc_api.tensor_proto import from_ndarray
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "mnist"
    request.inputs["images"].CopyFrom(from_ndarray(images(batch), content=True))
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "req.bin")
        with open(path, "wb") as f:
            f.write(request.SerializeToString())
        share = [connections // procs + (i < connections % procs) for i in range(procs)]
        clients = [subprocess.Popen([sys.executable, "-c", GRPC_CLIENT, str(port), str(n), str(seconds), path],
                                    stdout=subprocess.PIPE, text=True) for n in share]
        outs = [c.communicate()[0].split(" ", 2) for c in clients]
    count = sum(int(o[0]) for o in outs)
    elapsed = max(float(o[1]) for o in outs)
    lat = sorted(float(x) for o in outs for x in o[2].split())
    pct = {str(p): "%.2fms" % (1000 * lat[min(len(lat) - 1, int(len(lat) * p / 100))]) for p in (50, 75, 90, 99)}
    return {"req_per_s": count / elapsed, "images_per_s": count * batch / elapsed, "latency": pct}


def summarize(raw_path: str, top: int = 25) -> str:
    """py-spy raw (collapsed) stacks -> inclusive % per frame (function (file)), and self %."""
    inclusive, own, total = collections.Counter(), collections.Counter(), 0
    with open(raw_path) as f:
        for line in f:
            stack, _, n = line.rstrip("\n").rpartition(" ")
            if not stack:
                continue
            n = int(n)
            total += n
            frames = [re.sub(r":\d+\)$", ")", fr) for fr in stack.split(";")]
            for fr in set(frames):
                inclusive[fr] += n
            own[frames[-1]] += n
    lines = [f"{total} samples", "-- inclusive --"]
    lines += [f"{100 * n / total:5.1f}%  {fr}" for fr, n in inclusive.most_common(top)]
    lines += ["-- self --"] + [f"{100 * n / total:5.1f}%  {fr}" for fr, n in own.most_common(top)]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("front", choices=("rest", "grpc"))
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--threads", type=int, default=2, help="wrk threads")
    parser.add_argument("--procs", type=int, default=1, help="gRPC client processes")
    parser.add_argument("--pyspy", help="write py-spy raw stacks here (and a summary next to it)")
    parser.add_argument("--pyspy-args", default="--nonblocking --rate 200 --subprocesses",
                        help="extra py-spy record flags (--subprocesses: every serving process, not only the first)")
    parser.add_argument("--flags", default="", help="extra model server flags")
    args = parser.parse_args(argv)
    versions = sorted(os.listdir(MODEL_BASE), key=int)
    print(f"model: {MODEL_BASE}/{versions[-1]}", file=sys.stderr)
    with ServerProcess(["--model_name=mnist", f"--model_base_path={MODEL_BASE}", *args.flags.split()]) as server:
        drive = (lambda s: run_wrk(server.rest_port, args.batch, args.connections, s, args.threads)) \
            if args.front == "rest" else \
            (lambda s: run_grpc(server.grpc_port, args.batch, args.connections, s, args.procs))
        drive(2)  # warm-up: traces, thread pools, connections
        spy = None
        if args.pyspy:
            spy = subprocess.Popen([os.path.join(os.path.dirname(sys.executable), "py-spy"), "record", "--pid",
                                    str(server.process.pid), "--format", "raw", "-o", args.pyspy, "--threads",
                                    "--duration", str(int(args.seconds)), *args.pyspy_args.split()],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            time.sleep(0.5)
        cpu0, wall0 = tree_cpu_seconds(server.process.pid), time.perf_counter()
        result = drive(args.seconds)
        cpu, wall = tree_cpu_seconds(server.process.pid) - cpu0, time.perf_counter() - wall0
        # server CPU per request: less sensitive than the rate to other load on the machine
        result["server_cpu_us_per_req"] = round(1e6 * cpu / max(result["req_per_s"] * wall, 1), 1)
        result["server_cpu_cores"] = round(cpu / wall, 2)
        if spy is not None:
            err = spy.communicate()[1]
            if spy.returncode:
                print(f"py-spy failed: {err}", file=sys.stderr)
            else:
                summary = summarize(args.pyspy)
                with open(args.pyspy + ".summary", "w") as f:
                    f.write(summary + "\n")
                result["profile"] = args.pyspy + ".summary"
    result.pop("raw", None)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
