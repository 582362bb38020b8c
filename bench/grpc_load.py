"""gRPC load generator for bench/serving_bench.py: N Predict calls always in flight, one JSON line out.

    python bench/grpc_load.py --target 127.0.0.1:8500 --requests-file reqs.bin --concurrency 16 --duration 6

It runs as its own process (so its CPU shows up apart from the server's) on grpc.aio, one event loop.
The PredictRequests come pre-serialized from the bench (length-prefixed in --requests-file) and the
method is called with identity serializers: the client never builds or parses a protobuf, so its CPU
per call is the gRPC transport only. Only grpc is imported (no TensorFlow), so it starts in a second.
Workers are spread over up to --channels channels, each its own TCP connection (local subchannel pool).
"""
import argparse
import asyncio
import json
import os
import struct
import sys
import time

import grpc

METHOD = "/tensorflow.serving.PredictionService/Predict"


def read_requests(path):
    """The serialized PredictRequests: each a 4-byte little-endian length, then the bytes."""
    with open(path, "rb") as f:
        data = f.read()
    requests, offset = [], 0
    while offset < len(data):
        (size,) = struct.unpack_from("<I", data, offset)
        requests.append(data[offset + 4:offset + 4 + size])
        offset += 4 + size
    return requests


def percentile(sorted_values, q):
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, int(round(q / 100.0 * (len(sorted_values) - 1))))]


async def run(args):
    requests = read_requests(args.requests_file)
    options = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1),
               ("grpc.use_local_subchannel_pool", 1)]
    channels = [grpc.aio.insecure_channel(args.target, options=options)
                for _ in range(max(1, min(args.channels, args.concurrency)))]
    calls = [c.unary_unary(METHOD, request_serializer=None, response_deserializer=None) for c in channels]
    for channel in channels:
        await asyncio.wait_for(channel.channel_ready(), 30)
    latencies, errors = [], {}
    state = {"record": False, "stop": False}

    async def worker(index):
        call, i = calls[index % len(calls)], index
        while not state["stop"]:
            request = requests[i % len(requests)]
            i += 1
            started = time.perf_counter()
            try:
                response = await call(request, timeout=30)
                ok = len(response) > 0
            except grpc.aio.AioRpcError as e:
                ok = False
                errors[e.code().name] = errors.get(e.code().name, 0) + 1
            if state["record"] and ok:
                latencies.append(time.perf_counter() - started)

    tasks = [asyncio.create_task(worker(i)) for i in range(args.concurrency)]
    await asyncio.sleep(args.warmup)
    print("START", flush=True)  # the bench samples the server's CPU time here
    cpu0, started = os.times(), time.perf_counter()
    state["record"] = True
    await asyncio.sleep(args.duration)
    state["record"] = False
    seconds, cpu1 = time.perf_counter() - started, os.times()
    count = len(latencies)  # calls that completed inside the window (latency recorded at completion)
    state["stop"] = True
    await asyncio.gather(*tasks)
    for channel in channels:
        await channel.close()
    latencies.sort()
    return {"requests": count, "seconds": seconds, "req_s": count / seconds,
            "p50_ms": percentile(latencies, 50) * 1e3, "p99_ms": percentile(latencies, 99) * 1e3,
            "errors": errors, "cpu_s": (cpu1.user + cpu1.system) - (cpu0.user + cpu0.system)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", required=True, help="HOST:PORT of the gRPC server")
    parser.add_argument("--requests-file", required=True, help="length-prefixed serialized PredictRequests")
    parser.add_argument("--concurrency", type=int, default=16, help="calls in flight at any time")
    parser.add_argument("--channels", type=int, default=4, help="channels (TCP connections) to spread them over")
    parser.add_argument("--duration", type=float, default=6.0, help="seconds measured")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds of load before measuring")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(run(args))), flush=True)  # the last line: the result
    return 0


if __name__ == "__main__":
    sys.exit(main())
