"""bench/loadgen.py and bench/serving_report.py: what `make bench-serving` counts must be what happened.

h2load's summary is parsed from its own output (recorded from nghttp2 1.52's h2load against the model
server); a gRPC error is an HTTP 200 without a response message, so it must count as an error. The
server's CPU and peak RSS are read over a real process tree (a parent and a child that burns CPU)."""
import os
import subprocess
import sys

import pytest

from tests.server_process import REPO

sys.path.insert(0, os.path.join(REPO, "bench"))

import grpc_load  # noqa: E402
import loadgen  # noqa: E402
import serving_report  # noqa: E402

H2LOAD_OUT = """starting benchmark...
Application protocol: h2c

finished in 2.00s, 1943.00 req/s, 362.90KB/s
requests: 3886 total, 3890 started, 3886 done, {succeeded} succeeded, {failed} failed, 0 errored, 0 timeout
status codes: 3886 2xx, 0 3xx, 0 4xx, 0 5xx
traffic: 725.81KB (743227) total, 11.68KB (11958) headers (space savings 96.20%), 500.93KB ({data}) data
"""


def h2load_result(tmp_path, succeeded, failed, data, latencies_us):
    log = tmp_path / "h2load.log"
    log.write_text("".join(f"1796597131200136\t200\t{us}\n" for us in latencies_us))
    out = H2LOAD_OUT.format(succeeded=succeeded, failed=failed, data=data)
    return loadgen.parse_h2load(out, str(log), response_frame_bytes=132)


def test_h2load_answers_with_the_whole_response_count_as_done(tmp_path):
    result = h2load_result(tmp_path, 3886, 0, 3886 * 132, range(1000, 1100))
    assert result["req_s"] == 3886 / 2.0 and result["errors"] == 0 and result["seconds"] == 2.0
    assert 1040 / 1e3 <= result["p50_ms"] <= 1060 / 1e3 and result["p99_ms"] >= 1098 / 1e3


def test_h2load_answers_without_a_response_message_are_grpc_errors(tmp_path):
    """grpc-status != 0 comes as HEADERS only (no DATA), which h2load still counts as succeeded."""
    assert h2load_result(tmp_path, 3886, 0, 0, [500])["req_s"] == 0
    assert h2load_result(tmp_path, 3886, 0, 0, [500])["errors"] == 3886
    partly = h2load_result(tmp_path, 3886, 2, 3800 * 132, [500])
    assert partly["req_s"] == 3800 / 2.0 and partly["errors"] == 86 + 2


def test_grpc_requests_file_and_the_frame_h2load_sends(tmp_path):
    import numpy as np
    from tensorflow_serving.apis import predict_pb2
    images = np.arange(3 * 28 * 28, dtype=np.float32).reshape(3, 28, 28)
    path = str(tmp_path / "requests.bin")
    loadgen.write_grpc_requests(path, images, 2, 3)
    requests = grpc_load.read_requests(path)
    assert len(requests) == 3
    frame = open(path + ".frame", "rb").read()
    assert frame[0] == 0 and int.from_bytes(frame[1:5], "big") == len(frame) - 5 and frame[5:] == requests[0]
    request = predict_pb2.PredictRequest.FromString(frame[5:])
    assert request.model_spec.name == "mnist"
    assert [d.size for d in request.inputs["images"].tensor_shape.dim] == [2, 28, 28]
    assert np.frombuffer(request.inputs["images"].tensor_content, "<f4").tolist() == images[:2].ravel().tolist()


CHILD = "import sys, time\nwhile time.process_time() < 0.3: pass\nprint('ready', flush=True)\nsys.stdin.readline()"
PARENT = f"""import subprocess, sys
child = subprocess.Popen([sys.executable, "-c", {CHILD!r}], stdin=subprocess.PIPE)
sys.stdin.readline()
child.stdin.close(); child.wait()
print("reaped", flush=True)
sys.stdin.readline()
"""


def test_server_cpu_and_peak_rss_cover_the_process_tree():
    parent = subprocess.Popen([sys.executable, "-c", PARENT], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout.readline().strip() == "ready"  # the child has burnt 0.3 s of CPU
        own = sum(loadgen.psutil.Process(parent.pid).cpu_times()[:4])
        peaks = loadgen.tree_peak_rss_mb(parent.pid)
        assert len(peaks) == 2 and parent.pid in peaks and all(mb > 1 for mb in peaks.values())
        assert loadgen.tree_cpu_seconds(parent.pid) >= own + 0.25
        parent.stdin.write("\n")
        parent.stdin.flush()
        assert parent.stdout.readline().strip() == "reaped"  # the child's time is now the parent's cutime
        assert list(loadgen.tree_peak_rss_mb(parent.pid)) == [parent.pid]
        assert loadgen.tree_cpu_seconds(parent.pid) >= own + 0.25
        parent.stdin.write("\n")
        parent.stdin.flush()
        assert parent.wait(30) == 0
    finally:
        parent.kill()
        parent.wait()


def row(protocol, per_request, connections, req_s, p99_ms=1.0, rss=(500.0,), batching=False, server="model server"):
    return {"server": server, "protocol": protocol, "batching": batching, "images_per_request": per_request,
            "connections": connections, "req_s": req_s, "images_s": req_s * per_request, "p99_ms": p99_ms,
            "processes": len(rss), "rss_max_mb": max(rss), "rss_sum_mb": sum(rss)}


@pytest.fixture
def inproc():
    return {serving_report.CALLABLE: {1: 10000.0, 100: 1500.0}, serving_report.PREDICT: {1: 8000.0, 100: 1400.0}}


def test_goals_are_ratios_to_the_session_callable_with_pass_or_miss(inproc, capsys):
    rows = [row("REST", 1, 16, 6000, p99_ms=6.0, rss=(650.0, 640.0)), row("gRPC", 1, 16, 5000),
            row("REST", 100, 4, 900), row("REST", 100, 16, 1200), row("REST", 1, 64, 9000),
            row("REST", 1, 16, 4000, rss=(800.0,), batching=True), row("gRPC", 1, 16, 4400, batching=True)]
    goals = serving_report.evaluate_goals(inproc, rows)
    assert [(g["mode"], g["unit"]) for g in goals] == \
        [("batching off", u) for u in ("x", "ms", "x", "images/s", "MB")] \
        + [("batching on", u) for u in ("x", "ms", "x", "MB")]  # no 100 img/req point with batching on
    rest, p99, grpc_, big, rss = goals[:5]
    assert rest["value"] == pytest.approx(0.6) and rest["met"]
    assert p99["value"] == 6.0 and not p99["met"]
    assert grpc_["value"] == pytest.approx(5000 / 6000) and not grpc_["met"] and goals[7]["met"]
    assert big["value"] == 120000 and big["met"]
    assert "0.80x session callable batch 100; best at 16 conn" in big["detail"]
    assert (rss["value"], rss["met"], goals[8]["value"], goals[8]["met"]) == (650.0, True, 800.0, False)
    assert "2 processes, sum 1,290 MB" in rss["detail"]
    out = capsys.readouterr().out
    assert "PASS [batching off] REST 1 img/req, 16 conn >= 0.5x session callable batch 1: 0.60x" in out
    assert "MISS [batching on ] peak RSS <= 700 MB per serving process (one version): 800 MB" in out
