"""The parts of --num_serving_processes that need no TensorFlow: the pipe protocol between the coordinator
and a serving process, a serving process's routing (WorkerRegistry) and the summing of metrics."""
import threading
from multiprocessing import Pipe

import pytest

from serving.errors import ServingError
from serving.model_servers.ipc import INLINE, SERIAL, THREAD, Channel, ChannelClosed, RemoteError
from serving.model_servers.metrics import ServingMetrics
from serving.model_servers.options import OptionsError
from serving.model_servers.worker_registry import WorkerRegistry


# --------------------------------------------------------------------------------------------- Channel

@pytest.fixture
def pair():
    a_end, b_end = Pipe()
    made = []

    def make(a_handlers, b_handlers, **kwargs):
        a = Channel(a_end, a_handlers, "a", **kwargs).start()
        b = Channel(b_end, b_handlers, "b").start()
        made.extend([a, b])
        return a, b
    yield make
    for channel in made:
        channel.close()


def test_calls_go_both_ways_while_a_call_waits(pair):
    """A serving process asks for the status while the coordinator's command to it is still running."""
    ends = {}
    ends["a"], ends["b"] = pair({"status": (lambda: "from a", THREAD)},
                                {"load": (lambda: "loaded after " + ends["b"].call("status"), SERIAL)})
    a = ends["a"]
    assert a.call("load", timeout=10) == "loaded after from a"


def test_remote_errors(pair):
    def fail(kind):
        raise {"serving": ServingError("Servable not found for request: Latest(m)", "NOT_FOUND"),
               "options": OptionsError("bad label"), "other": KeyError("x")}[kind]
    a, _ = pair({}, {"fail": (fail, INLINE)})
    with pytest.raises(ServingError) as info:
        a.call("fail", "serving", timeout=10)
    assert (info.value.code, info.value.message) == ("NOT_FOUND", "Servable not found for request: Latest(m)")
    with pytest.raises(OptionsError, match="bad label"):
        a.call("fail", "options", timeout=10)
    with pytest.raises(RemoteError, match="KeyError"):
        a.call("fail", "other", timeout=10)
    with pytest.raises(RemoteError, match="no method 'nope'"):
        a.call("nope", timeout=10)


def test_serial_calls_run_in_the_order_sent(pair):
    seen = []
    a, _ = pair({}, {"step": (seen.append, SERIAL)})
    futures = [a.call_async("step", i) for i in range(200)]
    for f in futures:
        f.result(10)
    assert seen == list(range(200))


def test_a_closed_peer_fails_waiting_calls_and_runs_on_close(pair):
    closed, release = threading.Event(), threading.Event()
    a, b = pair({}, {"hang": (lambda: release.wait(10), THREAD)}, on_close=closed.set)
    waiting = a.call_async("hang")
    b.close()
    with pytest.raises(ChannelClosed):
        waiting.result(10)
    assert closed.wait(10)
    with pytest.raises(ChannelClosed):
        a.call("hang", timeout=10)
    release.set()


# ------------------------------------------------------------------------------------- WorkerRegistry

def registry(unloaded=None):
    return WorkerRegistry(lambda *args: ("asked", args), lambda path: f"servable at {path}",
                          unloaded.append if unloaded is not None else None)


def not_found(fn, *args, **kwargs):
    with pytest.raises(ServingError) as info:
        fn(*args, **kwargs)
    return info.value.code, info.value.message


def test_a_loaded_version_is_served_only_once_committed():
    r = registry()
    r.load("m", 1, "/m/1")
    assert not_found(r.get, "m") == ("NOT_FOUND", "Servable not found for request: Latest(m)")
    assert not_found(r.get, "m", 1) == ("NOT_FOUND", "Servable not found for request: Specific(m, 1)")
    r.commit("m", 1)
    assert r.get("m") == (1, "servable at /m/1") == r.get("m", 1)


def test_latest_is_the_highest_committed_and_retire_comes_before_unload():
    unloaded = []
    r = registry(unloaded)
    for v in (1, 2):
        r.load("m", v, f"/m/{v}")
        r.commit("m", v)
    assert r.get("m")[0] == 2
    r.retire("m", 2)
    assert r.get("m")[0] == 1 and r.held() == [("m", 1), ("m", 2)]
    assert not_found(r.get, "m", 2)[0] == "NOT_FOUND"
    r.unload("m", 2)
    assert unloaded == ["servable at /m/2"] and r.held() == [("m", 1)]


def test_labels_route_as_the_version_manager_does():
    r = registry()
    r.load("m", 1, "/m/1")
    r.commit("m", 1)
    r.set_labels({"m": {"stable": 1, "canary": 3}})
    assert r.get("m", label="stable") == (1, "servable at /m/1")
    assert not_found(r.get, "m", label="canary") == ("NOT_FOUND", "Servable not found for request: Specific(m, 3)")
    assert not_found(r.get, "m", label="other") == ("INVALID_ARGUMENT", "Unrecognized servable version label: other")
    assert not_found(r.get, "x", label="stable") == ("INVALID_ARGUMENT", "Unrecognized servable version label: stable")
    assert not_found(r.get, "x", 4) == ("NOT_FOUND", "Servable not found for request: Specific(x, 4)")
    r.set_labels({})  # the model left the config
    assert not_found(r.get, "m", label="stable")[0] == "INVALID_ARGUMENT"


def test_a_failed_load_is_the_error_a_single_process_records():
    def broken(path):
        raise OSError("SavedModel file does not exist at: /m/3")
    r = WorkerRegistry(None, broken)
    assert not_found(r.load, "m", 3, "/m/3") == ("UNKNOWN", "SavedModel file does not exist at: /m/3")
    assert r.held() == []


def test_status_and_reload_are_asked_of_the_coordinator():
    r = registry()
    assert r.status("m", 2, None) == ("asked", ("status", "m", 2, None))
    assert r.reload(iter(["spec"])) is None


# ---------------------------------------------------------------------------------------------- metrics

def test_merged_metrics_are_the_sums_of_every_process():
    ticks = iter(range(0, 10**9, 50_000))
    import serving.model_servers.metrics as metrics_module
    clock, metrics_module._clock = metrics_module._clock, lambda: next(ticks)
    try:
        one, two, total = ServingMetrics(), ServingMetrics(), ServingMetrics()
        for m, n in ((one, 2), (two, 3)):
            for _ in range(n):
                with m.request("m", "predict", "REST"):
                    pass
        with pytest.raises(ServingError):
            with two.request("m", "predict", "REST"):
                raise ServingError("nope", "NOT_FOUND")
        one.instrument_loader(lambda path: "servable")("/m/1")
    finally:
        metrics_module._clock = clock
    for m in (one, two):
        total.merge(m.snapshot())
    page = total.render()[0].decode()
    assert ':tensorflow:serving:request_count{model_name="m",status="OK"} 5' in page
    assert ':tensorflow:serving:request_count{model_name="m",status="NOT_FOUND"} 1' in page
    assert (':tensorflow:serving:request_latency_count{model_name="m",API="predict",entrypoint="REST"} 5'
            in page)
    assert ':tensorflow:serving:request_latency_sum{model_name="m",API="predict",entrypoint="REST"} 250' in page
    assert ':tensorflow:cc:saved_model:load_attempt_count{model_path="/m/1",status="success"} 1' in page


# ----------------------------------------------------------------------------------- CoordinatedRegistry

class FakeCoordinator:
    """Records what the coordinator's registry asks of the serving processes."""

    def __init__(self):
        self.metrics, self.calls = ServingMetrics(), []

    def load(self, model, path):
        self.calls.append(("load", model, path))
        return ("loaded", model, path)

    def unload(self, loaded):
        self.calls.append(("unload",) + loaded[1:])

    def push_labels(self):
        self.calls.append(("labels",))


def test_the_coordinators_versions_load_by_model_name_and_reloads_push_labels(tmp_path):
    from serving.model_servers.coordinated_registry import CoordinatedRegistry
    from serving.model_servers.server_config import ModelSpec

    for model in ("a", "b"):
        (tmp_path / model / "1").mkdir(parents=True)
    coordinator = FakeCoordinator()
    specs = [ModelSpec("a", str(tmp_path / "a")), ModelSpec("b", str(tmp_path / "b"))]
    registry = CoordinatedRegistry(coordinator, specs, poll_seconds=-1)
    registry.poll_once()
    assert sorted(coordinator.calls) == [("load", "a", str(tmp_path / "a" / "1")),
                                         ("load", "b", str(tmp_path / "b" / "1"))]
    assert [s.state for s in registry.status("a")] == ["AVAILABLE"]
    assert ':tensorflow:cc:saved_model:load_attempt_count{model_path="' + str(tmp_path / "a" / "1") + \
        '",status="success"} 1' in coordinator.metrics.render()[0].decode()
    coordinator.calls.clear()
    registry.reload(specs[1:])  # model a leaves the config: its version unloads; b is reloaded as it is
    assert coordinator.calls == [("unload", "a", str(tmp_path / "a" / "1")), ("labels",)]
    registry.stop()


def test_how_many_serving_processes():
    from serving.model_servers.options import cgroup_cpu_limit, parse_args, schedulable_cpus, serving_processes

    base = ["--model_base_path=/models/m"]
    assert serving_processes(parse_args(base)) == min(schedulable_cpus(), cgroup_cpu_limit() or 1 << 20)
    assert serving_processes(parse_args(base + ["--num_serving_processes=3"])) == 3
    assert serving_processes(parse_args(base + ["--num_serving_processes=1"])) == 1
    only_a_unix_socket = ["--port=0", "--grpc_socket_path=/tmp/s.sock", "--num_serving_processes=3"]
    assert serving_processes(parse_args(base + only_a_unix_socket)) == 1
    assert serving_processes(parse_args(base + only_a_unix_socket + ["--rest_api_port=8501"])) == 3


@pytest.mark.parametrize("files, cpus", [
    ({"cpu.max": "max 100000\n"}, None),
    ({"cpu.max": "150000 100000\n"}, 2),
    ({"cpu.max": "50000 100000\n"}, 1),
    ({"cpu/cpu.cfs_quota_us": "300000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 3),
    ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, None),
    ({}, None),
])
def test_the_container_cpu_quota_bounds_the_default(tmp_path, files, cpus):
    from serving.model_servers.options import cgroup_cpu_limit

    for name, text in files.items():
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text(text)
    assert cgroup_cpu_limit(str(tmp_path)) == cpus
