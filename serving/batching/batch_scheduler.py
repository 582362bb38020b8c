"""The batch scheduler under --enable_batching: TensorFlow 2.16's SharedBatchScheduler
(``core/kernels/batching_util/shared_batch_scheduler.h``) with TF Serving's queue options
(``servables/tensorflow/bundle_factory_util.cc`` GetQueueOptions) and batch merging/padding
(``batching/batching_session.cc``, ``batching/batching_util.cc``). What is batched, and why the
defaults are what they are, is ``serving.batching.batching_session``'s docstring.
"""
from __future__ import annotations

import collections
import dataclasses
import logging
import threading
import time
from typing import Callable, Dict, Mapping, Optional, Tuple

import numpy as np

from serving.errors import ServingError

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class BatchingOptions:
    """BatchingParameters as GetQueueOptions maps them (max_batch_size is input_batch_size_limit)."""
    max_batch_size: int = 1000
    batch_timeout_micros: int = 0
    max_enqueued_batches: int = 10
    num_batch_threads: int = 1
    thread_pool_name: str = "batch_threads"
    enable_large_batch_splitting: bool = False
    max_execution_batch_size: int = 1000
    allowed_batch_sizes: Tuple[int, ...] = ()
    pad_variable_length_inputs: bool = False

    @classmethod
    def from_settings(cls, settings: Mapping) -> "BatchingOptions":
        """From server_config.effective_batching()."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: (tuple(v) if k == "allowed_batch_sizes" else v) for k, v in settings.items() if k in names})

    @property
    def execution_limit(self) -> int:
        """Queue::GetMaxExecutionBatchSize: max_execution_batch_size only applies when splitting."""
        return self.max_execution_batch_size if self.enable_large_batch_splitting else self.max_batch_size

    def checked(self) -> "BatchingOptions":
        """SharedBatchScheduler::AddQueue's rewrite and checks; a failure fails the model's load."""
        def invalid(message):
            return ServingError(message, "INVALID_ARGUMENT")
        options = self
        if not self.enable_large_batch_splitting and self.max_enqueued_batches == 0:
            options = dataclasses.replace(self, max_enqueued_batches=1)  # kept for low-QPS models, as TF does
        if options.max_batch_size < 1:
            raise invalid(f"input_batch_size_limit must be positive; was {options.max_batch_size}")
        if options.batch_timeout_micros < 0:
            raise invalid(f"batch_timeout_micros must be non-negative; was {options.batch_timeout_micros}")
        if options.max_enqueued_batches < 1:
            raise invalid(f"max_enqueued_batches must be positive; was {options.max_enqueued_batches}")
        if options.enable_large_batch_splitting and options.max_batch_size < options.max_execution_batch_size:
            # The arguments StrCat appends after TF's sentence, run together as it prints them.
            raise invalid("When enable_large_batch_splitting is true, input_batch_size_limit must be greater "
                          f"than or equal to max_execution_batch_size.1{options.max_batch_size}"
                          f"{options.max_execution_batch_size}")
        return options


TUNED_DEFAULTS = BatchingOptions(max_batch_size=1000, batch_timeout_micros=0, max_enqueued_batches=128,
                                 num_batch_threads=1, thread_pool_name="model_server_batch_threads",
                                 enable_large_batch_splitting=True, max_execution_batch_size=128)


def invalid_argument(message: str) -> ServingError:
    return ServingError(message, "INVALID_ARGUMENT")


class BatchTask:
    """One Run() (or one piece of a split one); the caller blocks on ``done`` until a thread releases it."""
    __slots__ = ("feeds", "size", "outputs", "error", "done", "parent")

    def __init__(self, feeds: Mapping[str, np.ndarray], size: int, parent=None):
        self.feeds, self.size, self.parent = feeds, size, parent
        self.outputs, self.error = None, None
        self.done = threading.Lock()
        self.done.acquire()

    def finish(self, outputs, error) -> None:
        self.outputs, self.error = outputs, error
        if self.parent is None:
            self.done.release()
        else:
            self.parent.piece_done(error)


class _Split:
    """SplitInputTask's barrier: the caller's task completes when all its pieces have, outputs concatenated
    in order, or with the first error a piece met (ThreadSafeStatus keeps the first)."""

    def __init__(self, task: BatchTask, sizes):
        self.task, self.lock, self.left, self.error = task, threading.Lock(), len(sizes), None
        self.pieces, start = [], 0
        for n in sizes:
            self.pieces.append(BatchTask({a: v[start:start + n] for a, v in task.feeds.items()}, n, self))
            start += n

    def piece_done(self, error) -> None:
        with self.lock:
            self.error = self.error or error
            self.left -= 1
            if self.left:
                return
        if self.error is not None:
            self.task.finish(None, self.error)
        else:
            first = self.pieces[0].outputs
            self.task.finish({a: np.concatenate([p.outputs[a] for p in self.pieces]) for a in first}, None)


class _Batch:
    __slots__ = ("tasks", "size", "start")

    def __init__(self):
        self.tasks, self.size, self.start = [], 0, 0.0


class BatchQueue:
    """internal::Queue: batches[-1] is open, the others closed; ``run(feeds)`` is the wrapped Session::Run."""

    def __init__(self, options: BatchingOptions, run: Callable[[dict], dict]):
        self.options, self.run = options, run
        self.limit, self.exec_limit = options.max_batch_size, options.execution_limit
        self.timeout = options.batch_timeout_micros / 1e6
        self.batches = collections.deque([_Batch()])
        self.in_flight, self.closed, self.active = 0, False, False

    def pending(self) -> bool:
        return len(self.batches) > 1 or bool(self.batches[0].tasks)

    def idle(self) -> bool:
        return self.in_flight == 0 and not self.pending()

    def admit(self, task: BatchTask) -> list:
        """ValidateBatchTaskQueueCapacity, then the split of a task that overflows the open batch."""
        o, batches, open_size = self.options, self.batches, self.batches[-1].size
        if not o.enable_large_batch_splitting:
            if open_size + task.size > self.limit and len(batches) >= o.max_enqueued_batches:
                raise ServingError("The batch scheduling queue to which this task was submitted is full; currently "
                                   f"{len(batches)} batches enqueued and max_enqueued_batches is "
                                   f"{o.max_enqueued_batches}", "UNAVAILABLE")
            return [task]
        room = self.exec_limit - open_size
        capacity = (o.max_enqueued_batches - len(batches)) * self.exec_limit + room
        if task.size > capacity:
            raise ServingError(
                "The batch scheduling queue to which this task was submitted is full; task size is "
                f"{task.size} but scheduling capacity is only {capacity} (num_enqueued_batches={len(batches)}, "
                f"max_enqueued_batches={o.max_enqueued_batches}, open_batch_size={open_size}, "
                f"max_execution_batch_size={self.exec_limit})", "UNAVAILABLE")
        if task.size <= room:
            return [task]
        sizes, rest = [], task.size  # InputSplitMetadata: fill the open batch, then whole batches, then the rest
        while rest > 0:
            n = min(rest, room if not sizes and room > 0 else self.exec_limit)
            sizes.append(n)
            rest -= n
        return _Split(task, sizes).pieces

    def take(self, now: float) -> Optional[_Batch]:
        """ScheduleBatch: the front closed batch, or the open one once full, timed out or closing."""
        batches = self.batches
        if len(batches) == 1:
            open_batch = batches[0]
            if not open_batch.tasks or not (self.closed or open_batch.size >= self.exec_limit
                                            or now >= open_batch.start + self.timeout):
                return None
            batches.append(_Batch())
        self.in_flight += 1
        return batches.popleft()

    def process(self, batch: _Batch) -> None:
        """BatchingSession::ProcessBatch: merge (padding to an allowed size), run once, split; any error
        goes to every task of the batch."""
        tasks, error, results = batch.tasks, None, None
        try:
            allowed = self.options.allowed_batch_sizes
            total = _allowed_size(allowed, batch.size) if allowed else batch.size
            if len(tasks) == 1 and total == batch.size:
                feeds = tasks[0].feeds
            else:
                feeds = _merge(tasks, total - batch.size, self.options.pad_variable_length_inputs)
            outputs = self.run(feeds)
            for value in outputs.values():
                if value.ndim == 0:
                    raise ServingError("Batched output tensor has 0 dimensions", "FAILED_PRECONDITION")
                if value.shape[0] != total:
                    raise ServingError("Batched output tensor's 0th dimension does not equal the sum of the 0th "
                                       "dimension sizes of the input tensors", "FAILED_PRECONDITION")
            if len(tasks) == 1 and total == batch.size:
                results = [outputs]
            else:
                results, start = [], 0
                for task in tasks:
                    results.append({a: v[start:start + task.size] for a, v in outputs.items()})
                    start += task.size
        except ServingError as e:
            error = e
        except Exception as e:  # noqa: BLE001 - a batch thread must answer its callers whatever happens
            log.exception("batched run failed")
            error = ServingError(f"{type(e).__name__}: {e}", "INTERNAL")
        for i, task in enumerate(tasks):
            task.finish(None if error else results[i], error)


def _allowed_size(allowed, size: int) -> int:
    """RoundToLowestAllowedBatchSize: the smallest allowed size that fits, else the size itself (an empty
    batch has no row to pad with, so it stays empty)."""
    if allowed and size:
        return next((a for a in allowed if a >= size), size)
    return size


def _merge(tasks, padding: int, pad_variable_length: bool) -> Dict[str, np.ndarray]:
    """MergeInputTensors: concatenation on dim 0, then ``padding`` copies of the last task's first row."""
    merged = {}
    for alias in tasks[0].feeds:
        parts = [t.feeds[alias] for t in tasks]
        if pad_variable_length:
            inner = tuple(max(p.shape[d] for p in parts) for d in range(1, parts[0].ndim))
            parts = [_pad_inner(p, inner) for p in parts]
        if padding:
            row = next(p[:1] for p in reversed(parts) if len(p))
            parts.append(np.repeat(row, padding, axis=0))
        merged[alias] = np.concatenate(parts)
    return merged


def _pad_inner(value: np.ndarray, inner: tuple) -> np.ndarray:
    """batching_util.cc AddPadding: grow dims 1.. to ``inner``, filled with the tensor's first element."""
    if value.shape[1:] == inner:
        return value
    shape = (value.shape[0],) + inner
    if value.size == 0:
        if 0 in shape:
            return np.empty(shape, value.dtype)
        raise invalid_argument("Got empty tensor in batch of non-empty tensors.")
    padded = np.full(shape, value.flat[0], dtype=value.dtype)
    padded[tuple(slice(0, d) for d in value.shape)] = value
    return padded


class BatchScheduler:
    """SharedBatchScheduler: at most ``num_threads`` batches run at once, taken from the queues round-robin.
    An idle thread sleeps on a condition until a batch is ready or the oldest open batch's timeout ends (TF
    polls every 1 ms). With no timeout, nothing queued anywhere and a thread idle, that thread would take a
    new task alone at once: the caller runs it itself in that thread's slot, saving two thread switches."""

    def __init__(self, num_threads: int, name: str = "batch_threads"):
        if num_threads < 1:
            raise ValueError(f"num_batch_threads must be positive; was {num_threads}")
        self._lock = threading.Lock()
        self._work = threading.Condition(self._lock)
        self._drained = threading.Condition(self._lock)
        self._active = collections.deque()  # queues holding tasks, in round-robin order
        self._slots, self._running, self._stopping = num_threads, 0, False
        self.threads = [threading.Thread(target=self._loop, name=f"{name}_{i}", daemon=True)
                        for i in range(num_threads)]
        for thread in self.threads:
            thread.start()

    def schedule(self, queue: BatchQueue, task: BatchTask) -> bool:
        """Queue::Schedule; False when the queue is closed (its model unloaded) or the scheduler stopped."""
        if task.size > queue.limit:
            raise invalid_argument(f"Task size {task.size} is larger than maximum input batch size {queue.limit}")
        with self._lock:
            if queue.closed or self._stopping:
                return False
            if (not self._active and self._running < self._slots and queue.timeout == 0
                    and task.size <= queue.exec_limit):
                self._running += 1
                queue.in_flight += 1
                inline = _Batch()
                inline.tasks.append(task)
                inline.size = task.size
            else:
                inline = None
                self._enqueue(queue, task)
        if inline is not None:
            try:
                queue.process(inline)
            finally:
                self._finished(queue)
        return True

    def _enqueue(self, queue: BatchQueue, task: BatchTask) -> None:
        notify = False
        for piece in queue.admit(task):
            batches = queue.batches
            if batches[-1].size + piece.size > queue.exec_limit:
                batches.append(_Batch())  # StartNewBatch: the full one is closed, ready to run
                notify = True
            open_batch = batches[-1]
            if not open_batch.tasks:
                open_batch.start = time.monotonic()
                notify = True  # a new deadline, or (timeout 0) a batch ready now
            open_batch.tasks.append(piece)
            open_batch.size += piece.size
        if queue.batches[-1].size >= queue.exec_limit:
            notify = True
        if not queue.active:
            queue.active = True
            self._active.append(queue)
        if notify and self._running < self._slots:
            self._work.notify()

    def _finished(self, queue: BatchQueue) -> None:
        with self._lock:
            self._running -= 1
            queue.in_flight -= 1
            if queue.closed and queue.idle():
                self._drained.notify_all()
            if self._active:
                self._work.notify()

    def _next_batch(self, now: float):
        """GetNextWorkItem_Locked: (queue, batch, None) or (None, None, earliest open-batch deadline)."""
        active, earliest = self._active, None
        for _ in range(len(active)):
            queue = active[0]
            active.rotate(-1)
            batch = queue.take(now)
            if not queue.pending():
                active.pop()
                queue.active = False
            if batch is not None:
                return queue, batch, None
            if queue.active:
                deadline = queue.batches[0].start + queue.timeout
                earliest = deadline if earliest is None else min(earliest, deadline)
        return None, None, earliest

    def _loop(self) -> None:
        while True:
            with self._lock:
                while True:
                    if self._running < self._slots:
                        queue, batch, deadline = self._next_batch(time.monotonic())
                        if batch is not None:
                            break
                    else:
                        deadline = None  # every slot busy: woken when one frees
                    if self._stopping and not self._active:
                        return
                    self._work.wait(None if deadline is None else max(deadline - time.monotonic(), 0.0))
                self._running += 1
                if self._active and self._running < self._slots:
                    self._work.notify()  # another idle thread re-reads the deadlines or takes the next batch
            queue.process(batch)
            self._finished(queue)

    def close(self, queues) -> None:
        """QueueHandle's destructor: the queues take no new task, run what they hold, and are dropped."""
        with self._lock:
            for queue in queues:
                queue.closed = True
            self._work.notify_all()
            while not all(q.idle() for q in queues):
                self._drained.wait()

    def stop(self) -> None:
        """Runs every task already queued, then ends the threads."""
        with self._lock:
            self._stopping = True
            for queue in self._active:
                queue.closed = True
            self._work.notify_all()
        for thread in self.threads:
            thread.join()
