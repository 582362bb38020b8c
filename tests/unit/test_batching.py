"""serving.batching.batching_session: TF Serving's dynamic batching, over a fake servable that records its batch sizes.

Merges are arranged, never hoped for: a gate holds the first run on the batch thread while the other
callers queue behind it (``queued()`` says when they have), then opens."""
import threading
import time

import numpy as np
import pytest

from serving.batching.batching_session import BatchingModel, BatchingOptions, BatchScheduler
from serving.errors import ServingError

WAIT = 10  # seconds; only a guard against a hung test, never a timing assumption


class Spec:
    def __init__(self, alias, dtype=np.float32):
        self.alias, self.dtype = alias, dtype

    def check(self, value):
        if value.dtype != self.dtype:
            raise ServingError(f"bad dtype for {self.alias}", "INVALID_ARGUMENT")


class Meta:
    def __init__(self, name, aliases):
        self.name, self.inputs = name, tuple(Spec(a) for a in aliases)


class FakeModel:
    """y = 2x + 1 per row and s = the row's sum: any row landing with the wrong caller shows."""
    path = "/models/fake/1"

    def __init__(self, outputs=None):
        self.signatures = {"serving_default": Meta("serving_default", ["x"])}
        self.calls, self.seen = [], []  # batch sizes, merged inputs
        self.gate, self.entered = None, threading.Event()
        self.outputs = outputs or (lambda x: {"y": 2 * x + 1, "s": x.sum(axis=tuple(range(1, x.ndim)))})
        self.fail = None

    def hold(self):
        self.gate, self.entered = threading.Event(), threading.Event()

    def _run(self, meta, feeds):
        x = feeds["x"]
        self.calls.append(len(x))
        self.seen.append(x)
        self.entered.set()
        if self.gate is not None:
            assert self.gate.wait(WAIT)
            self.gate = None
        if self.fail is not None:
            raise self.fail
        return self.outputs(x)

    def predict(self, signature_name, inputs, output_filter=()):
        meta = self.signatures[signature_name or "serving_default"]
        return self._run(meta, {a: np.asarray(v) for a, v in inputs.items()})

    def metadata(self):
        return "metadata"

    def input_specs(self, signature_name):
        return {"x": "spec"}


def options(**kw):
    kw.setdefault("num_batch_threads", 1)
    return BatchingOptions(**kw)


def rows(n, start=0.0, width=3):
    return (np.arange(n * width, dtype=np.float32).reshape(n, width) + start)


def queued(model):
    return sum(len(b.tasks) for q in list(model._queues.values()) for b in q.batches)


def wait_until(condition, what):
    deadline = time.monotonic() + WAIT
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.001)


class Callers:
    """Threads calling ``model.predict``; outcomes by index."""

    def __init__(self, model, inputs):
        self.results, self.errors = {}, {}
        self.threads = [threading.Thread(target=self._call, args=(model, i, x), daemon=True)
                        for i, x in enumerate(inputs)]

    def _call(self, model, i, x):
        try:
            self.results[i] = model.predict("", {"x": x})
        except ServingError as e:
            self.errors[i] = e

    def start(self):
        for t in self.threads:
            t.start()
        return self

    def join(self):
        for t in self.threads:
            t.join(WAIT)
            assert not t.is_alive()
        return self


def in_order(model, inputs):
    """One caller per input, each started once the previous one's task is queued: a known arrival order."""
    callers = []
    for x in inputs:
        before = queued(model)
        callers.append(Callers(model, [x]).start())
        wait_until(lambda before=before: queued(model) > before, "the task to be queued")
    return callers


def gated_first_run(model, fake, first=None):
    """Starts one caller whose run blocks on the gate; returns it once its run has begun."""
    fake.hold()
    caller = Callers(model, [rows(1, 1000.0) if first is None else first]).start()
    assert fake.entered.wait(WAIT)
    return caller


def expected(x):
    return {"y": 2 * x + 1, "s": x.sum(axis=1)}


def assert_own_rows(result, x):
    for alias, want in expected(x).items():
        np.testing.assert_array_equal(result[alias], want)


# ---------------------------------------------------------------------------------------- merging

def test_32_concurrent_callers_each_get_exactly_their_rows():
    fake = FakeModel()
    model = BatchingModel(fake, options(max_batch_size=64, batch_timeout_micros=2000))
    inputs = [rows(1 + i % 5, start=1000.0 * i) for i in range(32)]
    barrier = threading.Barrier(32)
    results = {}

    def call(i):
        barrier.wait(WAIT)
        results[i] = model.predict("", {"x": inputs[i]})

    threads = [threading.Thread(target=call, args=(i,)) for i in range(32)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT)
    for i, x in enumerate(inputs):
        assert_own_rows(results[i], x)
    assert sum(fake.calls) == sum(len(x) for x in inputs)  # every row ran exactly once
    model.close()


def test_callers_arriving_while_a_run_is_in_flight_are_merged_into_one_run():
    fake = FakeModel()
    model = BatchingModel(fake, options(max_batch_size=64))
    first = gated_first_run(model, fake)
    inputs = [rows(i + 1, start=100.0 * i) for i in range(8)]
    callers = in_order(model, inputs)
    fake.gate.set()
    results = [c.join().results[0] for c in [first] + callers]
    assert fake.calls == [1, sum(range(1, 9))]
    np.testing.assert_array_equal(fake.seen[1], np.concatenate(inputs))  # concatenated in arrival order
    for result, x in zip(results[1:], inputs):
        assert_own_rows(result, x)
    model.close()


def test_a_batch_closes_at_max_batch_size_and_the_rest_waits_for_the_next():
    fake = FakeModel()
    model = BatchingModel(fake, options(max_batch_size=4))
    first = gated_first_run(model, fake)
    inputs = [rows(3), rows(2, 50.0), rows(2, 90.0)]
    callers = in_order(model, inputs)
    fake.gate.set()
    results = [c.join().results[0] for c in [first] + callers]
    assert fake.calls[1:] == [3, 4]  # 3 + 2 would overflow: the 2s start the next batch
    for result, x in zip(results[1:], inputs):
        assert_own_rows(result, x)
    model.close()


def test_timeout_flushes_a_partial_batch():
    fake = FakeModel()
    model = BatchingModel(fake, options(max_batch_size=64, batch_timeout_micros=50_000))
    start = time.monotonic()
    result = model.predict("", {"x": rows(2)})
    waited = time.monotonic() - start
    assert_own_rows(result, rows(2))
    assert fake.calls == [2]
    assert waited >= 0.045  # it did wait for company, and then ran without it
    model.close()


def test_an_idle_thread_holds_a_partial_batch_until_it_fills():
    fake = FakeModel()
    model = BatchingModel(fake, options(max_batch_size=4, batch_timeout_micros=60_000_000))
    callers = in_order(model, [rows(1), rows(2, 10.0)])  # both wait: the thread is idle, the batch not full
    assert fake.calls == []
    last = Callers(model, [rows(1, 20.0)]).start().join()  # fills the batch to 4: it runs at once
    assert fake.calls == [4]
    for caller, x in zip(callers, [rows(1), rows(2, 10.0)]):
        assert_own_rows(caller.join().results[0], x)
    assert_own_rows(last.results[0], rows(1, 20.0))
    model.close()


def test_requests_with_other_inner_shapes_or_dtypes_go_to_their_own_batches():
    fake = FakeModel()
    model = BatchingModel(fake, options(max_batch_size=64))
    first = gated_first_run(model, fake)
    callers = Callers(model, [rows(2, width=3), rows(2, width=5), rows(1, width=3)]).start()
    wait_until(lambda: queued(model) == 3, "3 queued tasks")
    fake.gate.set()
    callers.join(), first.join()
    assert sorted(fake.calls[1:]) == [2, 3]
    for i, x in enumerate([rows(2, width=3), rows(2, width=5), rows(1, width=3)]):
        assert_own_rows(callers.results[i], x)
    model.close()


def test_pad_variable_length_inputs_merges_and_pads_with_the_first_element():
    fake = FakeModel(lambda x: {"y": x})
    model = BatchingModel(fake, options(max_batch_size=64, pad_variable_length_inputs=True))
    first = gated_first_run(model, fake, rows(1, width=3))
    a, b = rows(1, 7.0, width=2), rows(2, 20.0, width=3)
    callers = Callers(model, [a, b]).start()
    wait_until(lambda: queued(model) == 2, "2 queued tasks")
    fake.gate.set()
    callers.join(), first.join()
    assert fake.calls[1:] == [3]
    np.testing.assert_array_equal(callers.results[0]["y"], [[7.0, 8.0, 7.0]])  # padded with a's first element
    np.testing.assert_array_equal(callers.results[1]["y"], b)
    model.close()


# ------------------------------------------------------------------------------- TF Serving's checks

def test_a_task_over_max_batch_size_is_refused():
    model = BatchingModel(FakeModel(), options(max_batch_size=4))
    with pytest.raises(ServingError) as e:
        model.predict("", {"x": rows(5)})
    assert (e.value.code, e.value.message) == ("INVALID_ARGUMENT",
                                               "Task size 5 is larger than maximum input batch size 4")
    model.close()


def test_large_batch_splitting_runs_pieces_and_joins_them():
    fake = FakeModel()
    model = BatchingModel(fake, options(max_batch_size=16, enable_large_batch_splitting=True,
                                        max_execution_batch_size=4))
    x = rows(10)
    assert_own_rows(model.predict("", {"x": x}), x)
    assert fake.calls == [4, 4, 2]
    with pytest.raises(ServingError, match="Task size 17 is larger than maximum input batch size 16"):
        model.predict("", {"x": rows(17)})
    model.close()


def test_a_split_piece_first_fills_the_open_batch():
    fake = FakeModel()
    model = BatchingModel(fake, options(max_batch_size=16, enable_large_batch_splitting=True,
                                        max_execution_batch_size=4))
    first = gated_first_run(model, fake)
    small, big = rows(1, 500.0), rows(6)
    callers = in_order(model, [small, big])
    assert queued(model) == 3  # the small task and the big one's two pieces
    fake.gate.set()
    results = [c.join().results[0] for c in [first] + callers]
    assert fake.calls[1:] == [4, 3]  # 1 + the first 3 rows of the big task, then its last 3
    assert_own_rows(results[1], small)
    assert_own_rows(results[2], big)
    model.close()


def test_allowed_batch_sizes_pad_with_the_first_row_and_strip_the_padding():
    fake = FakeModel()
    model = BatchingModel(fake, options(max_batch_size=8, allowed_batch_sizes=(2, 4, 8)))
    x = rows(3, 10.0)
    assert_own_rows(model.predict("", {"x": x}), x)
    assert fake.calls == [4]
    np.testing.assert_array_equal(fake.seen[0][3], x[0])
    first = gated_first_run(model, fake)
    a, b = rows(2, 100.0), rows(3, 200.0)
    callers = in_order(model, [a, b])
    fake.gate.set()
    results = [c.join().results[0] for c in [first] + callers]
    assert fake.calls[-2:] == [2, 8]  # the gated 1 row padded to 2; 2 + 3 padded to 8
    np.testing.assert_array_equal(fake.seen[-1][5:], np.repeat(b[:1], 3, axis=0))  # the last task's first row
    assert_own_rows(results[1], a)
    assert_own_rows(results[2], b)
    model.close()


def test_a_full_queue_refuses_at_once_with_unavailable():
    fake = FakeModel()
    model = BatchingModel(fake, options(max_batch_size=4, max_enqueued_batches=2))
    first = gated_first_run(model, fake, rows(4))
    callers = Callers(model, [rows(4), rows(4, 9.0)]).start()  # one batch each: 2 enqueued
    wait_until(lambda: queued(model) == 2, "2 queued tasks")
    refused = Callers(model, [rows(1)]).start().join()  # returns while the batch thread is still held
    error = refused.errors[0]
    assert error.code == "UNAVAILABLE"
    assert error.message == ("The batch scheduling queue to which this task was submitted is full; currently 2 "
                             "batches enqueued and max_enqueued_batches is 2")
    assert not fake.gate.is_set()
    fake.gate.set()
    callers.join(), first.join()
    assert len(callers.results) == 2
    model.close()


def test_a_full_queue_with_splitting_reports_its_capacity():
    fake = FakeModel()
    model = BatchingModel(fake, options(max_batch_size=8, max_enqueued_batches=2, enable_large_batch_splitting=True,
                                        max_execution_batch_size=4))
    first = gated_first_run(model, fake, rows(4))
    callers = Callers(model, [rows(8)]).start()
    wait_until(lambda: queued(model) == 2, "2 pieces")
    refused = Callers(model, [rows(1)]).start().join()
    assert refused.errors[0].code == "UNAVAILABLE"
    assert refused.errors[0].message == (
        "The batch scheduling queue to which this task was submitted is full; task size is 1 but scheduling "
        "capacity is only 0 (num_enqueued_batches=2, max_enqueued_batches=2, open_batch_size=4, "
        "max_execution_batch_size=4)")
    fake.gate.set()
    callers.join(), first.join()
    assert_own_rows(callers.results[0], rows(8))
    model.close()


def test_an_error_in_a_merged_run_reaches_every_caller_in_it():
    fake = FakeModel()
    model = BatchingModel(fake, options(max_batch_size=64))
    first = gated_first_run(model, fake)
    callers = Callers(model, [rows(1), rows(2), rows(3)]).start()
    wait_until(lambda: queued(model) == 3, "3 queued tasks")
    fake.fail = ServingError("Matrix size-incompatible", "INVALID_ARGUMENT")
    fake.gate.set()
    callers.join(), first.join()
    assert fake.calls[1:] == [6]
    errors = [callers.errors[i] for i in range(3)]
    assert all((e.code, e.message) == ("INVALID_ARGUMENT", "Matrix size-incompatible") for e in errors)
    assert len({id(e) for e in errors}) == 3  # each caller raises its own exception
    model.close()


@pytest.mark.parametrize("inputs, message", [
    ({"x": np.float32(1.0)}, "Batching Run() input tensors must have at least one dimension"),
    ({"x": rows(2), "z": rows(3)}, "Batching Run() input tensors must have equal 0th-dimension size"),
    ({}, "Batching Run() must have at least one input tensor"),
])
def test_batch_size_checks(inputs, message):
    fake = FakeModel()
    model = BatchingModel(fake, options())
    with pytest.raises(ServingError) as e:
        model._run(Meta("serving_default", list(inputs)), inputs)
    assert (e.value.code, e.value.message) == ("INVALID_ARGUMENT", message)
    assert fake.calls == []
    model.close()


def test_a_request_failing_its_signature_check_fails_alone_before_queueing():
    fake = FakeModel()
    model = BatchingModel(fake, options())
    with pytest.raises(ServingError, match="bad dtype for x"):
        model.predict("", {"x": rows(2).astype(np.float64)})
    assert fake.calls == []
    model.close()


@pytest.mark.parametrize("outputs, message", [
    (lambda x: {"y": np.float32(1.0)}, "Batched output tensor has 0 dimensions"),
    (lambda x: {"y": np.zeros(10)}, ("Batched output tensor's 0th dimension does not equal the sum of the 0th "
                                     "dimension sizes of the input tensors")),
])
def test_outputs_without_a_batch_dimension_fail_as_in_tf_serving(outputs, message):
    model = BatchingModel(FakeModel(outputs), options())
    with pytest.raises(ServingError) as e:
        model.predict("", {"x": rows(2)})
    assert (e.value.code, e.value.message) == ("FAILED_PRECONDITION", message)
    model.close()


@pytest.mark.parametrize("kw, message", [
    (dict(batch_timeout_micros=-1), "batch_timeout_micros must be non-negative; was -1"),
    (dict(max_enqueued_batches=0, enable_large_batch_splitting=True, max_execution_batch_size=10),
     "max_enqueued_batches must be positive; was 0"),
    (dict(max_batch_size=10, enable_large_batch_splitting=True, max_execution_batch_size=20),
     ("When enable_large_batch_splitting is true, input_batch_size_limit must be greater than or equal to "
      "max_execution_batch_size.11020")),
])
def test_queue_options_are_checked_as_add_queue_checks_them(kw, message):
    with pytest.raises(ServingError) as e:
        BatchingModel(FakeModel(), options(**kw))
    assert (e.value.code, e.value.message) == ("INVALID_ARGUMENT", message)


def test_zero_max_enqueued_batches_without_splitting_means_one():
    assert options(max_enqueued_batches=0).checked().max_enqueued_batches == 1


# ----------------------------------------------------------------------------------- life cycle

def test_close_stops_the_threads():
    model = BatchingModel(FakeModel(), options(num_batch_threads=2))
    threads = list(model._scheduler.threads)
    assert len(threads) == 2 and all(t.is_alive() for t in threads)
    assert_own_rows(model.predict("", {"x": rows(2)}), rows(2))
    model.close()
    assert not any(t.is_alive() for t in threads)


def test_close_runs_what_is_queued_then_stops_the_threads():
    fake = FakeModel()
    model = BatchingModel(fake, options())
    threads = list(model._scheduler.threads)
    first = gated_first_run(model, fake)
    callers = Callers(model, [rows(2)]).start()
    wait_until(lambda: queued(model) == 1, "a queued task")
    closing = threading.Thread(target=model.close)
    closing.start()
    closing.join(0.05)
    assert closing.is_alive()  # it cannot return before the held run and the queued task have run
    fake.gate.set()
    closing.join(WAIT)
    callers.join(), first.join()
    assert_own_rows(callers.results[0], rows(2))
    assert not any(t.is_alive() for t in threads)
    assert_own_rows(model.predict("", {"x": rows(3)}), rows(3))  # a late request runs unbatched
    assert fake.calls[-1] == 3


def test_models_share_one_scheduler_and_closing_one_leaves_the_other_serving():
    scheduler = BatchScheduler(1, "model_server_batch_threads")
    fakes = [FakeModel(), FakeModel()]
    models = [BatchingModel(f, options(), scheduler) for f in fakes]
    for i, model in enumerate(models):
        assert_own_rows(model.predict("", {"x": rows(2, i)}), rows(2, i))
    models[0].close()
    assert scheduler.threads[0].is_alive()
    assert_own_rows(models[1].predict("", {"x": rows(1)}), rows(1))
    scheduler.stop()
    assert not scheduler.threads[0].is_alive()
    assert [t.name for t in scheduler.threads] == ["model_server_batch_threads_0"]


def test_the_wrapper_exposes_the_model():
    fake = FakeModel()
    model = BatchingModel(fake, options())
    assert model.path == fake.path and model.signatures is fake.signatures
    assert model.metadata() == "metadata" and model.input_specs("") == {"x": "spec"}
    model.close()
