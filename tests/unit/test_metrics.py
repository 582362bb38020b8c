"""serving.model_servers.metrics: the Prometheus page must match what tensorflow_model_server 2.16 writes
(util/prometheus_exporter.cc, servables/tensorflow/util.cc, tensorflow/cc/saved_model/loader.cc)."""
import os

os.environ["TF_USE_LEGACY_KERAS"] = "1"

import threading  # noqa: E402

import pytest  # noqa: E402

from serving.model_servers import metrics as metrics_lib  # noqa: E402
from serving.errors import ServingError  # noqa: E402
from serving.model_servers.metrics import ServingMetrics  # noqa: E402

# Buckets::Exponential(10, 1.8, 33) as absl::StrCat prints the limits, then the DBL_MAX bucket.
LE = ["10", "18", "32.4", "58.32", "104.976", "188.957", "340.122", "612.22", "1102", "1983.59", "3570.47",
      "6426.84", "11568.3", "20823", "37481.3", "67466.4", "121440", "218591", "393464", "708235",
      "1.27482e+06", "2.29468e+06", "4.13043e+06", "7.43477e+06", "1.33826e+07", "2.40887e+07", "4.33596e+07",
      "7.80473e+07", "1.40485e+08", "2.52873e+08", "4.55172e+08", "8.19309e+08", "1.47476e+09", "+Inf"]


@pytest.fixture
def clock(monkeypatch):
    """A fake clock: each request or load lasts the next duration (microseconds) pushed on ``durations``."""
    state = {"now": 0, "start": True, "durations": []}

    def now_ns():
        if not state["start"]:
            state["now"] += state["durations"].pop(0) * 1000
        state["start"] = not state["start"]
        return state["now"]

    monkeypatch.setattr(metrics_lib, "_clock", now_ns)
    return state["durations"]


def page_lines(metrics):
    body, content_type = metrics.render()
    assert content_type == "text/plain"
    assert body.endswith(b"\n")
    return body.decode().splitlines()


def family(lines, name):
    """The lines of one family: its # TYPE line and the samples up to the next # TYPE."""
    start = lines.index(next(line for line in lines if line.startswith(f"# TYPE {name} ")))
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("# TYPE")), len(lines))
    return lines[start:end]


def test_empty_page_has_every_type_line_and_nothing_else():
    assert page_lines(ServingMetrics()) == [
        "# TYPE :tensorflow:cc:saved_model:load_attempt_count counter",
        "# TYPE :tensorflow:cc:saved_model:load_latency counter",
        "# TYPE :tensorflow:serving:model_warmup_latency histogram",
        "# TYPE :tensorflow:serving:model_warmup_records_read counter",
        "# TYPE :tensorflow:serving:request_count counter",
        "# TYPE :tensorflow:serving:request_latency histogram",
    ]


def test_requests_render_as_tf_serving_writes_them(clock):
    metrics = ServingMetrics()
    clock.extend([10, 1000, 2_000_000, 5, 7])
    for _ in range(3):
        with metrics.request("digits", "predict", "REST"):
            pass
    with pytest.raises(ServingError):
        with metrics.request("nope", "predict", "REST"):
            raise ServingError("Servable not found for request: Latest(nope)", "NOT_FOUND")
    with metrics.request("digits", metrics_lib.API_PREDICT, "GRPC"):
        pass
    lines = page_lines(metrics)
    assert not [line for line in lines if line.startswith("# HELP") or "_total" in line]
    assert family(lines, ":tensorflow:serving:request_count") == [
        "# TYPE :tensorflow:serving:request_count counter",
        ':tensorflow:serving:request_count{model_name="digits",status="OK"} 4',
        ':tensorflow:serving:request_count{model_name="nope",status="NOT_FOUND"} 1',
    ]
    latency = family(lines, ":tensorflow:serving:request_latency")
    assert latency[0] == "# TYPE :tensorflow:serving:request_latency histogram"
    grpc = [line for line in latency if 'API="Predict"' in line]
    rest = [line for line in latency if 'API="predict"' in line]
    assert len(latency) == 1 + len(grpc) + len(rest) and len(rest) == len(grpc) == len(LE) + 2
    labels = 'model_name="digits",API="predict",entrypoint="REST"'
    assert [line.split("le=")[1].split("}")[0] for line in rest[:-2]] == [f'"{le}"' for le in LE]
    # tsl::Histogram buckets are [limit[i-1], limit[i]): 10 us lands in le="18", not le="10".
    counts = [int(line.rsplit(" ", 1)[1]) for line in rest[:-2]]
    assert counts[:2] == [0, 1] and counts[LE.index("1102")] == 2 and counts[LE.index("2.29468e+06")] == 3
    assert counts == sorted(counts) and counts[-1] == 3
    assert rest[0] == f':tensorflow:serving:request_latency_bucket{{{labels},le="10"}} 0'
    assert rest[-2:] == [f":tensorflow:serving:request_latency_sum{{{labels}}} 2.00101e+06",
                         f":tensorflow:serving:request_latency_count{{{labels}}} 3"]
    assert grpc[-1] == (':tensorflow:serving:request_latency_count{model_name="digits",API="Predict",'
                        'entrypoint="GRPC"} 1')
    assert not [line for line in latency if "nope" in line]  # failed requests are counted, not timed


def test_errors_are_counted_with_their_code_name():
    metrics = ServingMetrics()
    with pytest.raises(ServingError):
        with metrics.request("m", "classify", "REST"):
            raise ServingError("bad", "INVALID_ARGUMENT")
    with pytest.raises(ZeroDivisionError):
        with metrics.request("m", "classify", "REST"):
            1 / 0
    with metrics.request("m", "regress", "REST") as call:  # a front that answers the error itself
        call.status = "DEADLINE_EXCEEDED"
    lines = family(page_lines(metrics), ":tensorflow:serving:request_count")
    assert lines[1:] == [':tensorflow:serving:request_count{model_name="m",status="DEADLINE_EXCEEDED"} 1',
                         ':tensorflow:serving:request_count{model_name="m",status="INTERNAL"} 1',
                         ':tensorflow:serving:request_count{model_name="m",status="INVALID_ARGUMENT"} 1']
    assert family(page_lines(metrics), ":tensorflow:serving:request_latency") == [
        "# TYPE :tensorflow:serving:request_latency histogram"]


def test_grpc_metadata_and_multi_inference_are_not_recorded():
    metrics = ServingMetrics()
    for api in (metrics_lib.API_GET_MODEL_METADATA, metrics_lib.API_MULTI_INFERENCE):
        with metrics.request("m", api, metrics_lib.ENTRYPOINT_GRPC):
            pass
    with metrics.request("m", metrics_lib.API_CLASSIFY, metrics_lib.ENTRYPOINT_GRPC):
        pass
    assert family(page_lines(metrics), ":tensorflow:serving:request_count")[1:] == [
        ':tensorflow:serving:request_count{model_name="m",status="OK"} 1']


def test_label_values_are_escaped():
    metrics = ServingMetrics()
    with metrics.request('a"b\\c', "predict", "REST") as call:
        call.status = "NOT_FOUND"
    assert ':tensorflow:serving:request_count{model_name="a\\"b\\\\c",status="NOT_FOUND"} 1' in page_lines(metrics)


def test_loader_counts_success_and_failure_by_path(clock):
    metrics = ServingMetrics()

    def load(path):
        if path.endswith("bad"):
            raise ServingError("no SavedModel", "NOT_FOUND")
        return ("servable", path)

    loader = metrics.instrument_loader(load)
    clock.extend([1500, 2500, 40])
    assert loader("/models/digits/1") == ("servable", "/models/digits/1")
    assert loader("/models/digits/1") == ("servable", "/models/digits/1")
    with pytest.raises(ServingError):
        loader("/models/digits/bad")
    lines = page_lines(metrics)
    assert family(lines, ":tensorflow:cc:saved_model:load_attempt_count") == [
        "# TYPE :tensorflow:cc:saved_model:load_attempt_count counter",
        ':tensorflow:cc:saved_model:load_attempt_count{model_path="/models/digits/1",status="success"} 2',
        ':tensorflow:cc:saved_model:load_attempt_count{model_path="/models/digits/bad",status="fail"} 1',
    ]
    assert family(lines, ":tensorflow:cc:saved_model:load_latency") == [
        "# TYPE :tensorflow:cc:saved_model:load_latency counter",
        ':tensorflow:cc:saved_model:load_latency{model_path="/models/digits/1"} 4000',
        ':tensorflow:cc:saved_model:load_latency{model_path="/models/digits/bad"} 40',
    ]


def test_registry_is_a_prometheus_client_collector_registry():
    metrics = ServingMetrics()
    with metrics.request("digits", "predict", "REST"):
        pass
    registry = metrics.registry
    assert registry.get_sample_value(":tensorflow:serving:request_count", {"model_name": "digits", "status": "OK"}) == 1
    assert registry.get_sample_value(":tensorflow:serving:request_latency_count",
                                     {"model_name": "digits", "API": "predict", "entrypoint": "REST"}) == 1


def test_concurrent_updates_add_up():
    metrics = ServingMetrics()
    loader = metrics.instrument_loader(lambda path: path)
    threads, per_thread = 8, 400
    start = threading.Barrier(threads)

    def work(i):
        start.wait()
        for n in range(per_thread):
            with metrics.request(f"m{i % 2}", "predict", "REST") as call:
                if n % 4 == 0:
                    call.status = "INVALID_ARGUMENT"
            loader("/models/m/1")
            if n % 50 == 0:
                metrics.render()  # collecting while others update

    workers = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    registry = metrics.registry
    for m in ("m0", "m1"):
        ok = registry.get_sample_value(":tensorflow:serving:request_count", {"model_name": m, "status": "OK"})
        bad = registry.get_sample_value(":tensorflow:serving:request_count",
                                        {"model_name": m, "status": "INVALID_ARGUMENT"})
        assert (ok, bad) == (threads // 2 * per_thread * 3 / 4, threads // 2 * per_thread / 4)
        labels = {"model_name": m, "API": "predict", "entrypoint": "REST"}
        assert registry.get_sample_value(":tensorflow:serving:request_latency_count", labels) == ok
        assert registry.get_sample_value(":tensorflow:serving:request_latency_bucket", dict(labels, le="+Inf")) == ok
    assert registry.get_sample_value(":tensorflow:cc:saved_model:load_attempt_count",
                                     {"model_path": "/models/m/1", "status": "success"}) == threads * per_thread
