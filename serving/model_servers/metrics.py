"""The monitoring metrics tensorflow_model_server 2.16 exports in Prometheus text format, with the same
names, types, labels, buckets and line format, so dashboards and alerts work against either server.

Sources (tensorflow/serving 2.16.1 unless named otherwise):
- ``servables/tensorflow/util.cc``: ``/tensorflow/serving/request_count`` (Counter; model_name, status =
  ``error::Code_Name``, e.g. "OK", "NOT_FOUND") and ``/tensorflow/serving/request_latency`` (Sampler;
  model_name, API, entrypoint; microseconds; ``Buckets::Exponential(10, 1.8, 33)``).
- ``model_servers/prediction_service_impl.cc``: gRPC records Predict/Classify/Regress only (API "Predict",
  "Classify", "Regress", entrypoint "GRPC"); GetModelMetadata and MultiInference record nothing. Latency is
  recorded only for OK requests, the count for every request.
- ``model_servers/http_server.cc``: REST records every request the ``/v1/`` handler takes; its API label is
  the URL verb as written ("predict", "classify", "regress"; "" for GET status/metadata and OPTIONS).
- tensorflow 2.16 ``cc/saved_model/loader.cc`` LoadSavedModel(): ``/tensorflow/cc/saved_model/
  load_attempt_count`` (Counter; model_path, status "success"/"fail") and ``.../load_latency`` (Counter of
  microseconds by model_path, incremented on success and on failure).
- ``servables/tensorflow/saved_model_warmup_util.cc``: ``/tensorflow/serving/model_warmup_latency`` (Sampler;
  model_path, status = absl Status::ToString(); microseconds; the request buckets) and
  ``/tensorflow/serving/model_warmup_records_read`` (Counter; model_path, status), one point per warmup
  (``serving.servables.warmup``).
- ``util/prometheus_exporter.cc``: the page format (see ``_render``).

Exported: the six metrics above. Skipped, because nothing here measures them truthfully:
``/tensorflow/serving/runtime_latency`` (the Session::Run span inside the core),
``/tensorflow/cc/saved_model/load_latency_by_stage`` (restore_graph/init_graph are not separable with
tf.saved_model.load),
``/tensorflow/serving/request_example_counts`` / ``request_example_count_total`` (MultiInference only),
the batching, request-logging and mlmd metrics, and TensorFlow's own ``/tensorflow/core/...`` metrics.

Why not ``prometheus_client.generate_latest``: in 0.26.0 (exposition.py) it writes a counter family's
``# HELP``/``# TYPE`` lines as ``<name>_total``, adds ``# HELP`` lines, sorts label names and prints
values as floats ("3.0"); TF Serving writes ``# TYPE <name> counter`` with no suffix and no HELP, labels
in declaration order and integer values. So the metrics are prometheus_client ``Metric`` families
collected from a ``CollectorRegistry`` (any prometheus_client tooling can read the registry) and
``_render`` writes them exactly as PrometheusExporter::GeneratePage does.
"""
from __future__ import annotations

import bisect
import threading
import time
from typing import Any, Callable, Dict, Iterable, Optional, Tuple

from prometheus_client.metrics_core import Metric
from prometheus_client.registry import CollectorRegistry

from serving.errors import ServingError

# API label values: gRPC (prediction_service_impl.cc) and REST (the URL verb, http_server.cc).
API_PREDICT, API_CLASSIFY, API_REGRESS = "Predict", "Classify", "Regress"
API_MULTI_INFERENCE, API_GET_MODEL_METADATA = "MultiInference", "GetModelMetadata"
REST_API_PREDICT, REST_API_CLASSIFY, REST_API_REGRESS = "predict", "classify", "regress"
ENTRYPOINT_REST, ENTRYPOINT_GRPC = "REST", "GRPC"
# PredictionServiceImpl records only these; GetModelMetadata and MultiInference record nothing.
GRPC_RECORDED_APIS = frozenset((API_PREDICT, API_CLASSIFY, API_REGRESS))
LOAD_SUCCESS, LOAD_FAIL = "success", "fail"  # loader.cc kLoadAttemptSuccess / kLoadAttemptFail

REQUEST_COUNT = ":tensorflow:serving:request_count"
REQUEST_LATENCY = ":tensorflow:serving:request_latency"
LOAD_ATTEMPT_COUNT = ":tensorflow:cc:saved_model:load_attempt_count"
LOAD_LATENCY = ":tensorflow:cc:saved_model:load_latency"
WARMUP_LATENCY = ":tensorflow:serving:model_warmup_latency"
WARMUP_RECORDS_READ = ":tensorflow:serving:model_warmup_records_read"
CONTENT_TYPE = "text/plain"  # ProcessPrometheusRequest()'s only header
_clock = time.perf_counter_ns  # looked up at each use, so tests can substitute it


def prometheus_name(tf_name: str) -> str:
    """GetPrometheusMetricName(): every character outside [a-zA-Z0-9_] becomes ':'."""
    name = "".join(c if c.isascii() and (c.isalnum() or c == "_") else ":" for c in tf_name)
    return "_" + name if name[:1].isdigit() else name


def exponential_buckets(scale: float, growth: float, count: int) -> Tuple[float, ...]:
    """Buckets::Exponential(): ``count`` limits by repeated multiplication, as ComputeBucketLimits()
    does, then ExplicitBuckets' implicit DBL_MAX limit (exported as le="+Inf")."""
    limits, bound = [], scale
    for _ in range(count):
        limits.append(bound)
        bound *= growth
    return tuple(limits) + (float("inf"),)


LATENCY_BUCKETS = exponential_buckets(10, 1.8, 33)  # request_latency: 10 us .. ~20 minutes


class _Histogram:
    """tsl::Histogram: bucket i counts values v with limit[i-1] <= v < limit[i] (std::upper_bound)."""

    __slots__ = ("counts", "total")

    def __init__(self, n: int):
        self.counts, self.total = [0] * n, 0.0

    def add(self, limits: Tuple[float, ...], value: float) -> None:
        self.counts[min(bisect.bisect_right(limits, value), len(limits) - 1)] += 1
        self.total += value


class _Call:
    """What ``ServingMetrics.request`` yields: a front that answers an error itself (instead of raising)
    sets ``status`` to the gRPC code name it answered with."""

    __slots__ = ("status",)

    def __init__(self):
        self.status: Optional[str] = None


class _RequestRecorder:
    """Times one request; on exit records it as TF Serving does (count always, latency when OK)."""

    __slots__ = ("_metrics", "_labels", "_start", "_call")

    def __init__(self, metrics: "ServingMetrics", labels: Optional[Tuple[str, str, str]]):
        self._metrics, self._labels, self._call = metrics, labels, _Call()

    def __enter__(self) -> _Call:
        self._start = _clock()
        return self._call

    def __exit__(self, exc_type, exc, tb) -> bool:
        micros = (_clock() - self._start) // 1000
        if self._labels is None or (exc_type is not None and not issubclass(exc_type, Exception)):
            return False  # not recorded by TF Serving, or the process is being interrupted
        if exc is None:
            status = self._call.status or "OK"
        else:
            status = exc.code if isinstance(exc, ServingError) else "INTERNAL"
        self._metrics._record_request(self._labels, status, micros)
        return False  # exceptions propagate


class ServingMetrics:
    """The metrics of one server, in its own CollectorRegistry; every update and collect takes one lock."""

    def __init__(self):
        self._lock = threading.Lock()
        self._request_count: Dict[Tuple[str, str], int] = {}
        self._request_latency: Dict[Tuple[str, str, str], _Histogram] = {}
        self._load_attempts: Dict[Tuple[str, str], int] = {}
        self._load_latency: Dict[Tuple[str], int] = {}
        self._warmup_latency: Dict[Tuple[str, str], _Histogram] = {}
        self._warmup_records: Dict[Tuple[str, str], int] = {}
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)

    # ---- recording ---------------------------------------------------------------------------------

    def request(self, model_name: str, api: str, entrypoint: str) -> _RequestRecorder:
        """A context manager timing one request. On exit: request_count{model_name, status} and, when the
        status is OK, request_latency{model_name, API, entrypoint} in microseconds. The status is the code
        name of a ServingError raised inside (re-raised), "INTERNAL" for any other exception, else the
        yielded call's ``status`` or "OK". gRPC GetModelMetadata/MultiInference record nothing."""
        if entrypoint == ENTRYPOINT_GRPC and api not in GRPC_RECORDED_APIS:
            return _RequestRecorder(self, None)
        return _RequestRecorder(self, (model_name, api, entrypoint))

    def _record_request(self, labels: Tuple[str, str, str], status: str, micros: int) -> None:
        with self._lock:
            key = (labels[0], status)
            self._request_count[key] = self._request_count.get(key, 0) + 1
            if status == "OK":
                histogram = self._request_latency.get(labels)
                if histogram is None:
                    histogram = self._request_latency[labels] = _Histogram(len(LATENCY_BUCKETS))
                histogram.add(LATENCY_BUCKETS, micros)

    def instrument_loader(self, loader: Callable[[str], Any]) -> Callable[[str], Any]:
        """``loader`` recording load_attempt_count{model_path, status} and load_latency{model_path} the way
        LoadSavedModel() does: every attempt is counted and its time added, failed or not."""
        def load(path: str) -> Any:
            start, status = _clock(), LOAD_FAIL
            try:
                servable = loader(path)
                status = LOAD_SUCCESS
                return servable
            finally:
                micros = (_clock() - start) // 1000
                with self._lock:
                    key = (path, status)
                    self._load_attempts[key] = self._load_attempts.get(key, 0) + 1
                    self._load_latency[(path,)] = self._load_latency.get((path,), 0) + micros
        return load

    def record_warmup(self, model_path: str, status: str, micros: int, records: int) -> None:
        """One model warmup (serving.servables.warmup): its wall time and the records it read."""
        with self._lock:
            key = (model_path, status)
            histogram = self._warmup_latency.get(key)
            if histogram is None:
                histogram = self._warmup_latency[key] = _Histogram(len(LATENCY_BUCKETS))
            histogram.add(LATENCY_BUCKETS, micros)
            self._warmup_records[key] = self._warmup_records.get(key, 0) + records

    # ---- several processes (--num_serving_processes) ------------------------------------------------

    def snapshot(self) -> dict:
        """Everything recorded so far as plain (picklable) data, for merge() in another process."""
        with self._lock:
            return {"request_count": dict(self._request_count),
                    "request_latency": {k: (list(h.counts), h.total) for k, h in self._request_latency.items()},
                    "load_attempts": dict(self._load_attempts), "load_latency": dict(self._load_latency),
                    "warmup_latency": {k: (list(h.counts), h.total) for k, h in self._warmup_latency.items()},
                    "warmup_records": dict(self._warmup_records)}

    def merge(self, snapshot: dict) -> None:
        """Adds a snapshot in: counters and histogram buckets of one server spread over processes are sums."""
        with self._lock:
            for mine, theirs in ((self._request_count, snapshot["request_count"]),
                                 (self._load_attempts, snapshot["load_attempts"]),
                                 (self._load_latency, snapshot["load_latency"]),
                                 (self._warmup_records, snapshot.get("warmup_records", {}))):
                for key, value in theirs.items():
                    mine[key] = mine.get(key, 0) + value
            for histograms, theirs in ((self._request_latency, snapshot["request_latency"]),
                                       (self._warmup_latency, snapshot.get("warmup_latency", {}))):
                for key, (counts, total) in theirs.items():
                    histogram = histograms.get(key)
                    if histogram is None:
                        histogram = histograms[key] = _Histogram(len(LATENCY_BUCKETS))
                    histogram.counts = [a + b for a, b in zip(histogram.counts, counts)]
                    histogram.total += total

    # ---- collecting and rendering -------------------------------------------------------------------

    def collect(self) -> Iterable[Metric]:
        """The Collector protocol: a snapshot, families in TF metric-name order and points in label-value
        order, as CollectionRegistry's std::maps order them."""
        with self._lock:
            attempts, load_latency = dict(self._load_attempts), dict(self._load_latency)
            counts = dict(self._request_count)
            latency = {k: (list(h.counts), h.total) for k, h in self._request_latency.items()}
            warmup_latency = {k: (list(h.counts), h.total) for k, h in self._warmup_latency.items()}
            warmup_records = dict(self._warmup_records)
        yield _scalar(LOAD_ATTEMPT_COUNT, "The number of times a SavedModel was successfully loaded.",
                      ("model_path", "status"), attempts)
        yield _scalar(LOAD_LATENCY, "Latency in microseconds for SavedModels that were successfully loaded.",
                      ("model_path",), load_latency)
        yield _histogram(WARMUP_LATENCY, "Distribution of wall time (in microseconds) for warming up the model.",
                         ("model_path", "status"), warmup_latency)
        yield _scalar(WARMUP_RECORDS_READ, "Total number of warmup records read during model warmup.",
                      ("model_path", "status"), warmup_records)
        yield _scalar(REQUEST_COUNT, "The total number of requests.", ("model_name", "status"), counts)
        yield _histogram(REQUEST_LATENCY, "Distribution of wall time (in microseconds) for Tensorflow Serving "
                         "request.", ("model_name", "API", "entrypoint"), latency)

    def render(self) -> Tuple[bytes, str]:
        """(page, content type) as ProcessPrometheusRequest() answers the metrics path."""
        return _render(self.registry.collect()), CONTENT_TYPE


def _scalar(name: str, documentation: str, label_names: Tuple[str, ...], values: dict) -> Metric:
    family = Metric(name, documentation, "counter")
    for key in sorted(values):
        family.add_sample(name, dict(zip(label_names, key)), values[key])
    return family


def _histogram(name: str, documentation: str, label_names: Tuple[str, ...], values: dict) -> Metric:
    """A Sampler family: per label set, cumulative ``_bucket`` counts over LATENCY_BUCKETS, ``_sum``, ``_count``."""
    family = Metric(name, documentation, "histogram")
    for key in sorted(values):
        labels = dict(zip(label_names, key))
        bucket_counts, total = values[key]
        cumulative = 0
        for limit, n in zip(LATENCY_BUCKETS, bucket_counts):
            cumulative += n
            le = "+Inf" if limit == float("inf") else "%.6g" % limit
            family.add_sample(name + "_bucket", dict(labels, le=le), cumulative)
        family.add_sample(name + "_sum", labels, total)
        family.add_sample(name + "_count", labels, cumulative)
    return family


def _label_value(value: str) -> str:
    """SanitizeLabelValue() escapes backslash and double quote; a newline is escaped too (TF Serving
    leaves it raw, which would break the whole page)."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


_TYPE_WORDS = {"counter": "counter", "gauge": "gauge", "histogram": "histogram"}


def _render(families: Iterable[Metric]) -> bytes:
    """PrometheusExporter::GeneratePage(): per family ``# TYPE <name> <type>`` (no HELP, no ``_total``),
    then ``name{l="v",...} value`` with labels in declaration order and ``{}`` even when there are none;
    counts as integers, a histogram's bucket limits and ``_sum`` as absl::StrCat(double) (%.6g)."""
    lines = []
    for family in families:
        lines.append(f"# TYPE {family.name} {_TYPE_WORDS.get(family.type, 'untyped')}")
        for sample in family.samples:
            labels = ",".join(f'{k}="{_label_value(v)}"' for k, v in sample.labels.items())
            is_sum = family.type == "histogram" and sample.name.endswith("_sum")
            value = "%.6g" % sample.value if is_sum else "%d" % sample.value
            lines.append(f"{sample.name}{{{labels}}} {value}")
    return ("\n".join(lines) + "\n").encode("utf-8", "surrogateescape")
