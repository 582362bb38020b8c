"""serving.batching.batching_session over the real export: callers merged into one run get what they get without batching,
and ``python -m serving --enable_batching`` answers concurrent requests with each caller's own rows.

Float32 results of one row can differ in the last bits with the batch the row runs in (the kernels take
other vector paths; measured up to ~7e-7 on probabilities), so a caller's rows are compared exactly with
the unbatched run of the same merged batch, and with the unbatched run of its own rows to atol 1e-6."""
import os

os.environ["TF_USE_LEGACY_KERAS"] = "1"

import copy  # noqa: E402
import shutil  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from serving.batching.batching_session import TUNED_DEFAULTS, BatchingModel, BatchingOptions  # noqa: E402
from tests.server_process import ServerProcess, wait_for  # noqa: E402

WAIT = 60  # seconds; only a guard against a hung test
SLICES = [(0, 1), (1, 4), (4, 5), (5, 13), (13, 16), (16, 40), (40, 41), (41, 64)]


def failures_of_concurrent_callers(count: int, call) -> list:
    """Runs ``call(i)`` for i in 0..count-1 on as many threads released together; returns what the
    calls reported as wrong (and any exception they raised), in one list."""
    barrier, failures = threading.Barrier(count), []

    def caller(i):
        barrier.wait(WAIT)
        try:
            failures.extend(call(i))
        except Exception as error:  # noqa: BLE001 - a failure of this caller, not of the thread
            failures.append((i, repr(error)))

    threads = [threading.Thread(target=caller, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT)
    return failures


class Recorded:
    """The real model, with its Session::Run recording batch sizes and holding the first run at a gate."""

    def __init__(self, model):
        self.sizes, self.gate, self.entered = [], threading.Event(), threading.Event()
        self.model = copy.copy(model)
        run = model._run

        def recording_run(meta, feeds):
            self.sizes.append(len(next(iter(feeds.values()))))
            self.entered.set()
            assert self.gate.wait(WAIT)
            return run(meta, feeds)
        self.model._run = recording_run


def queued(batching):
    return sum(len(b.tasks) for q in list(batching._queues.values()) for b in q.batches)


def run_merged(batching, recorded, call, args):
    """call(args[0]) is held in its run; the others queue one by one behind it, then all run: the first
    alone, the rest as one batch. Returns each call's result, in order."""
    results, threads = {}, []

    def start(i):
        before = queued(batching)
        threads.append(threading.Thread(target=lambda: results.__setitem__(i, call(args[i])), daemon=True))
        threads[-1].start()
        deadline = time.monotonic() + WAIT
        while (i == 0 and not recorded.entered.is_set()) or (i > 0 and queued(batching) <= before):
            assert time.monotonic() < deadline, "a caller did not reach the batcher"
            time.sleep(0.001)

    for i in range(len(args)):
        start(i)
    recorded.gate.set()
    for t in threads:
        t.join(WAIT)
    return [results[i] for i in range(len(args))]


def options(**kw):
    return BatchingOptions(**{"num_batch_threads": 1, "max_batch_size": 64, **kw})


def test_merged_predict_gives_each_caller_the_unbatched_answer(model, digits):
    images = digits[0]
    recorded = Recorded(model)
    batching = BatchingModel(recorded.model, options())
    parts = [images[a:b] for a, b in SLICES]
    results = run_merged(batching, recorded, lambda x: batching.predict("", {"images": x}), parts)
    assert recorded.sizes == [1, 63]  # the held first caller, then everyone else in one run
    merged = model.predict("", {"images": images[1:]})
    for (a, b), result in zip(SLICES[1:], results[1:]):
        for alias in ("classes", "probabilities"):
            np.testing.assert_array_equal(result[alias], merged[alias][a - 1:b - 1])
    for x, result in zip(parts, results):
        alone = model.predict("", {"images": x})
        np.testing.assert_array_equal(result["classes"], alone["classes"])
        np.testing.assert_allclose(result["probabilities"], alone["probabilities"], rtol=0, atol=1e-6)
    batching.close()


def test_merged_classify_gives_each_caller_the_unbatched_answer(model, digits):
    examples = digits[2]
    recorded = Recorded(model)
    batching = BatchingModel(recorded.model, options())
    parts = [examples[a:b] for a, b in SLICES]
    results = run_merged(batching, recorded, lambda e: batching.classify("classify", e), parts)
    assert recorded.sizes == [1, 63]
    merged_classes, merged_scores = model.classify("classify", examples[1:])
    for (a, b), (classes, scores) in zip(SLICES[1:], results[1:]):
        np.testing.assert_array_equal(classes, merged_classes[a - 1:b - 1])
        np.testing.assert_array_equal(scores, merged_scores[a - 1:b - 1])
    for e, (classes, scores) in zip(parts, results):
        alone_classes, alone_scores = model.classify("classify", e)
        np.testing.assert_array_equal(classes, alone_classes)
        np.testing.assert_allclose(scores, alone_scores, rtol=0, atol=1e-6)
    batching.close()


def test_concurrent_callers_with_the_tuned_defaults(model, digits):
    """16 threads at once, over and over, with what --enable_batching alone runs with: no row goes astray."""
    images = digits[0]
    batching = BatchingModel(model, TUNED_DEFAULTS)
    expected = model.predict("", {"images": images})["probabilities"]

    def caller(i):
        a, b = SLICES[i % len(SLICES)]
        for _ in range(10):
            got = batching.predict("", {"images": images[a:b]}, ["probabilities"])["probabilities"]
            if got.shape != (b - a, 10) or not np.allclose(got, expected[a:b], rtol=0, atol=1e-6):
                yield i, a, b

    assert failures_of_concurrent_callers(16, caller) == []
    batching.close()


# ---------------------------------------------------------------------------------------- the server

@pytest.fixture
def base(tmp_path, digits_export):
    base = tmp_path / "mnist"
    shutil.copytree(digits_export, base / "1")
    return base


def rest_predict(server, images):
    status, answer = server.rest("POST", "/v1/models/mnist:predict", {"instances": images.tolist()})
    assert status == 200, answer
    return np.asarray([row["probabilities"] for row in answer["predictions"]], np.float32)


def test_server_with_enable_batching_answers_concurrent_requests(base, model, digits, digits_exports):
    images = digits[0]
    expected = model.predict("", {"images": images})["probabilities"]
    flags = ["--model_name=mnist", f"--model_base_path={base}", "--enable_batching",
             "--file_system_poll_wait_seconds=1"]
    with ServerProcess(flags) as server:
        def caller(i):
            for j in range(4):
                a, b = SLICES[(i + j) % len(SLICES)]
                got = rest_predict(server, images[a:b])
                if not np.allclose(got, expected[a:b], rtol=0, atol=1e-6):
                    yield i, a, b

        assert failures_of_concurrent_callers(8, caller) == []

        shutil.copytree(digits_exports[1], base / ".staging")  # a new version: the old one's batcher closes
        os.rename(base / ".staging", base / "2")
        wait_for(lambda: server.version_states("mnist") == {2: ("AVAILABLE", ""), 1: ("END", "")},
                 what="version 2 to replace version 1")
        assert rest_predict(server, images[:3]).shape == (3, 10)
    log = server.log()
    assert "Wrapping session to perform batch processing" in log
    assert "does not batch" not in log


def test_server_applies_the_batching_parameters_file(base, tmp_path, digits):
    params = tmp_path / "batching.config"
    params.write_text("max_batch_size { value: 8 }\nbatch_timeout_micros { value: 1000 }\n"
                      "allowed_batch_sizes: 4\nallowed_batch_sizes: 8\n")
    flags = ["--model_name=mnist", f"--model_base_path={base}", "--enable_batching",
             f"--batching_parameters_file={params}"]
    with ServerProcess(flags) as server:
        assert rest_predict(server, digits[0][:8]).shape == (8, 10)
        assert rest_predict(server, digits[0][:3]).shape == (3, 10)  # padded to 4 and back
        status, answer = server.rest("POST", "/v1/models/mnist:predict", {"instances": digits[0][:9].tolist()})
        assert (status, answer) == (400, {"error": "Task size 9 is larger than maximum input batch size 8"})


def test_the_server_loader_wraps_each_version(tmp_path, model):
    """ModelServer's loader: the tuned defaults without a file; with --enable_per_model_batching_parameters, a
    version's own batching_params.pbtxt, and no batching for a version without one; unloading closes."""
    from serving.model_servers.options import parse_args
    from serving.model_servers.main import ModelServer, StartupConfig

    def server_for(*flags):
        options = parse_args(["--model_name=mnist", f"--model_base_path={tmp_path}", "--enable_batching", *flags])
        server = ModelServer(options, StartupConfig.read(options))
        server.batch_scheduler.stop()  # the registry's; the test calls _batching_loader itself
        return server

    server = server_for()
    load, unload = server._batching_loader(lambda path: model)
    wrapped = load(str(tmp_path))
    assert isinstance(wrapped, BatchingModel) and wrapped.options == TUNED_DEFAULTS
    unload(wrapped)
    assert wrapped._closed
    server.batch_scheduler.stop()

    (tmp_path / "1").mkdir()
    (tmp_path / "2").mkdir()
    (tmp_path / "1" / "batching_params.pbtxt").write_text("max_batch_size { value: 4 }\n")
    server = server_for("--enable_per_model_batching_parameters")
    load, unload = server._batching_loader(lambda path: model)
    own = load(str(tmp_path / "1"))
    assert isinstance(own, BatchingModel) and own.options.max_batch_size == 4
    assert own._scheduler is server.batch_scheduler  # the threads stay the common ones
    assert load(str(tmp_path / "2")) is model
    unload(own), unload(model)
    server.batch_scheduler.stop()
