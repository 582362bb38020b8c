"""--enable_batching: TF Serving 2.16's dynamic batching of Session::Run, under ``LoadedModel._run``.

Follows tensorflow/serving 2.16.1 ``servables/tensorflow/bundle_factory_util`` (GetQueueOptions,
WrapSessionForBatching), ``batching/batching_session.cc`` (ComputeInputSize, MergeInputTensors,
SplitOutputTensors, SplitInputTask), ``batching/batching_util.cc`` (padding) and TensorFlow 2.16
``core/kernels/batching_util/shared_batch_scheduler.h`` (queues, capacity, timeouts, threads).

``BatchScheduler`` is SharedBatchScheduler: one set of threads for every model (the server's
``model_server_batch_threads``), round-robin over the queues; a queue is a deque of batches, the last one
open. ``BatchingModel`` wraps a LoadedModel: each signature run is a task in the queue of its (signature,
aliases, shapes after dim 0, dtypes); tasks are concatenated on dim 0, run once, and each caller gets its
own rows. Unlike TF Serving (one queue per signature, where a request of another dtype or inner shape
fails the batch it lands in), a request is checked against its signature before it is queued and shapes
are part of the key, so one bad request never fails the others.

``TUNED_DEFAULTS`` serve ``--enable_batching`` without ``--batching_parameters_file`` (a file keeps TF
Serving's defaults for the fields it leaves unset). Measured in-process on this 2-core machine, digits
model over core.py's session runner (script not committed; runs of 0.6-2 s interleaved, medians of 3-10;
other jobs shared the CPUs, so ±20%), requests/s unbatched -> tuned (p99 ms), clients x rows: 1x1 4990
-> 4450 (0.33 -> 0.38); 16x1 5930-9060 -> 9090-9730 (6-11 -> 3-5); 16x4 5800 -> 7600 (15 -> 5); 8x32
2250 -> 2040 (20 -> 6). A run costs ~75 µs at 1 row, ~135 µs at 16, then ~10 µs a row (1.3 ms at
128): merging small requests is what pays; big ones gain little but a shorter tail. Through the server (bench/loadgen.py's wrk and gRPC
clients, 1-8 images a request, 1-64 connections) the Python front ends dominate and unbatched, tuned and
the variants below were within run-to-run noise (±30% on the shared machine).
  * batch_timeout_micros 0 (TF's): nobody waits for company; batches form while the thread is busy.
    200 µs cut a lone client from ~4400 to ~1500 requests/s (p50 0.2 -> 0.7 ms) and moved 16 clients
    by only ±15%.
  * num_batch_threads 1: one run already spreads over both cores. Two threads gave 10-25% fewer
    requests/s for 1-4-row requests at 16 clients, and 15% more only for 32-row ones.
  * max_execution_batch_size 128, enable_large_batch_splitting: within noise of unsplit 1000-row
    batches (the per-row cost is at its floor well before 128), and a run holds the shared thread for
    at most ~1.5 ms, which keeps round-robin between models fair. max_batch_size stays TF's 1000, so nothing
    TF's defaults accept is refused; a larger request is split into runs of 128 and joined back.
  * max_enqueued_batches 128: the fronts run at most 2 x 4 x CPUs = 16 requests at once (default
    threads); 16 of 1000 rows fit, so the batcher never sheds load the unbatched server would serve.
"""
from __future__ import annotations

import copy
import logging
import threading
from typing import Dict, Mapping, Optional

import numpy as np

from serving.errors import ServingError
from serving.batching.batch_scheduler import (TUNED_DEFAULTS, BatchingOptions, BatchScheduler,  # noqa: F401
                                     BatchQueue, BatchTask, invalid_argument)

log = logging.getLogger(__name__)


def batch_size(feeds: Mapping[str, np.ndarray]) -> int:
    """BatchingSession::ComputeInputSize (batching_util.h ComputeTensorBatchSize)."""
    if not feeds:
        raise invalid_argument("Batching Run() must have at least one input tensor")
    size = None
    for value in feeds.values():
        if value.ndim == 0:
            raise invalid_argument("Batching Run() input tensors must have at least one dimension")
        if size is None:
            size = value.shape[0]
        elif value.shape[0] != size:
            raise invalid_argument("Batching Run() input tensors must have equal 0th-dimension size")
    return size


class BatchingModel:
    """A LoadedModel whose signature runs go through a BatchScheduler (WrapSessionForBatching). Without a
    shared ``scheduler`` it owns one with ``options.num_batch_threads`` threads, which close() stops."""

    MAX_IDLE_QUEUES = 64  # distinct (signature, shapes) keys kept before idle queues are forgotten

    def __init__(self, model, options: BatchingOptions = TUNED_DEFAULTS, scheduler: Optional[BatchScheduler] = None):
        self.options = options.checked()
        self._model, self._owns = model, scheduler is None
        self._scheduler = scheduler or BatchScheduler(self.options.num_batch_threads, self.options.thread_pool_name)
        self._queues: Dict[tuple, BatchQueue] = {}
        self._routes: Dict[tuple, BatchQueue] = {}  # (signature, (alias, shape, dtype)...) checked, and its queue
        self._lock = threading.Lock()
        self._closed = False
        self._front = copy.copy(model)  # the model's own API code, with its Session::Run replaced
        self._front._run = self._run

    path = property(lambda self: self._model.path)
    signatures = property(lambda self: self._model.signatures)

    def predict(self, signature_name, inputs, output_filter=()):
        return self._front.predict(signature_name, inputs, output_filter)

    def classify(self, signature_name, serialized_examples):
        return self._front.classify(signature_name, serialized_examples)

    def regress(self, signature_name, serialized_examples):
        return self._front.regress(signature_name, serialized_examples)

    def metadata(self):
        return self._model.metadata()

    def input_specs(self, signature_name):
        return self._model.input_specs(signature_name)

    def __getattr__(self, name):  # anything else a LoadedModel has
        if name.startswith("__") or name in ("_model", "_front"):
            raise AttributeError(name)
        return getattr(self._model, name)

    def _run(self, meta, feeds: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
        """BatchingSession::Run: checks the request on its own, queues it, waits for its rows."""
        if self._closed:
            return self._model._run(meta, feeds)
        size = batch_size(feeds)
        shapes = (meta.name,) + tuple((a, v.shape, v.dtype) for a, v in feeds.items())
        queue = self._routes.get(shapes) or self._route(shapes, meta, feeds)
        task = BatchTask(feeds, size)
        if queue is None or not self._scheduler.schedule(queue, task):
            return self._model._run(meta, feeds)  # unloaded while this request was on its way
        task.done.acquire()
        if task.error is not None:
            raise ServingError(task.error.message, task.error.code)  # a fresh one per caller
        return task.outputs

    def _route(self, shapes: tuple, meta, feeds) -> Optional[BatchQueue]:
        """The first request with these dtypes and shapes: the signature's checks (which depend on nothing
        else), then its queue, remembered for the next such request."""
        pad = self.options.pad_variable_length_inputs
        for spec in meta.inputs:
            value = feeds.get(spec.alias)
            if value is not None:
                spec.check(value)
                if pad and value.ndim > 6:
                    raise invalid_argument("Only tensors with rank from 1 to 6 can be padded.")
        key = (meta.name,) + tuple((a, len(s) if pad else s[1:], d) for a, s, d in shapes[1:])
        with self._lock:
            if self._closed:
                return None
            queue = self._queues.get(key)
            if queue is None:
                if len(self._queues) >= self.MAX_IDLE_QUEUES:  # bound what odd shapes can create
                    for k in [k for k, q in self._queues.items() if not q.active and not q.in_flight]:
                        del self._queues[k]
                    self._routes = {}
                model_run = self._model._run
                queue = self._queues[key] = BatchQueue(self.options, lambda feeds: model_run(meta, feeds))
            if len(self._routes) >= 4096:
                self._routes = {}
            self._routes[shapes] = queue
        return queue

    def close(self) -> None:
        """Unload: queued requests still run; later ones run unbatched; an owned scheduler stops."""
        with self._lock:
            self._closed = True
            queues, self._queues, self._routes = list(self._queues.values()), {}, {}
        self._scheduler.close(queues)
        if self._owns:
            self._scheduler.stop()
