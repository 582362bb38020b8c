"""Model warmup: a version replays the requests recorded in its ``assets.extra/tf_serving_warmup_requests``
when it loads, before it is served, so the first client request does not pay for lazy initialisation
(tf.function tracing, graph optimisation, allocator growth).

As tensorflow_model_server 2.16 does it (``servables/tensorflow/saved_model_warmup_util.cc``
RunSavedModelWarmupUntracked, ``saved_model_warmup.cc`` RunWarmupRequest, ``model_servers/server.cc``):
- the file is a TFRecord of ``PredictionLog`` protos; ``predict_log``, ``classify_log``, ``regress_log``
  and ``multi_inference_log`` requests run against the loaded version directly (its model name is not
  looked up); ``session_run_log``/``predict_streamed_log`` fail with UNIMPLEMENTED; a log with no request
  does nothing;
- no file: nothing to do (logged); each record runs ``--num_request_iterations_for_warmup`` times (if > 0,
  else once); more than 1000 records, a record that does not parse, a request that fails or a file that is
  not TFRecord (DATA_LOSS, "... Please verify your warmup data is in TFRecord format.") fail the load;
- ``/tensorflow/serving/model_warmup_latency`` {model_path, status} (microseconds) and
  ``/tensorflow/serving/model_warmup_records_read`` {model_path, status}, status being absl's
  Status::ToString() ("OK", "INVALID_ARGUMENT: ...").

Here warmup wraps the loader, so it runs in every serving process (each loads its own copy) and a failure
is a load failure: the version ends in END with the error, after the usual load retries.
"""
from __future__ import annotations

import logging
import os
import re
import time
from typing import Any, Callable, Optional

from serving.errors import ServingError

log = logging.getLogger("digits.model_server")

ASSETS_EXTRA = "assets.extra"  # tensorflow/cc/saved_model/constants.h kSavedModelAssetsExtraDirectory
REQUESTS_FILE_NAME = "tf_serving_warmup_requests"  # WarmupConsts::kRequestsFileName
MAX_NUM_RECORDS = 1000  # WarmupConsts::kMaxNumRecords


def warmup_path(export_dir: str) -> str:
    return os.path.join(export_dir, ASSETS_EXTRA, REQUESTS_FILE_NAME)


def status_string(error: Optional[ServingError]) -> str:
    """absl::Status::ToString(): "OK" or "<CODE>: <message>" (the metrics' status label)."""
    return "OK" if error is None else error.status()


def run_warmup(model: Any, export_dir: str, num_request_iterations: int = 1, metrics=None) -> int:
    """Replays the warmup file of ``export_dir`` against ``model`` (a loaded servable); returns the
    number of records read. Raises ServingError as TF Serving fails the load."""
    path = warmup_path(export_dir)
    if not os.path.exists(path):
        log.info("No warmup data file found at %s", path)
        return 0
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    iterations = num_request_iterations if num_request_iterations > 0 else 1
    log.info("Starting to read warmup data for model at %s with model-warmup-options "
             "num_request_iterations { value: %d }", path, iterations)
    start, records, error = time.perf_counter_ns(), 0, None
    try:
        for record in tf.data.TFRecordDataset(path).as_numpy_iterator():
            prediction_log = prediction_log_pb2.PredictionLog()
            try:
                prediction_log.ParseFromString(record)
            except Exception:  # noqa: BLE001 - protobuf's DecodeError; any parse failure is this error
                raise ServingError(f"Failed to parse warmup record: {record.decode('utf-8', 'replace')} "
                                   f"from {path}", "INVALID_ARGUMENT") from None
            for _ in range(iterations):
                _run_request(model, prediction_log)
            records += 1
            if records > MAX_NUM_RECORDS:
                raise ServingError(f"Number of warmup records exceeds the maximum ({MAX_NUM_RECORDS}) at {path}",
                                   "INVALID_ARGUMENT")
    except ServingError as e:
        error = e
    except tf.errors.OpError as e:  # the TFRecord reader: DATA_LOSS for a corrupt or truncated file, ...
        from tensorflow.core.protobuf import error_codes_pb2
        error = ServingError(_reader_message(e.message), error_codes_pb2.Code.Name(e.error_code))
    micros = max(time.perf_counter_ns() - start, 0) // 1000
    if metrics is not None:
        metrics.record_warmup(export_dir, status_string(error), micros, records)
    if error is not None:
        if error.code == "DATA_LOSS":
            raise ServingError(f"{error.message}. Please verify your warmup data is in TFRecord format.",
                               "DATA_LOSS")
        raise error
    log.info("Finished reading warmup data for model at %s. Number of warmup records read: %d. "
             "Elapsed time (microseconds): %d.", path, records, micros)
    return records


def _reader_message(message: str) -> str:
    """The record reader's own text, without tf.data's eager wrapping ("{{function_node ...}} ",
    " [Op:IteratorGetNext] name: "), as SequentialRecordReader reports it to TF Serving."""
    return re.sub(r"\s*\[Op:[^\]]*\](\s*name:.*)?$", "", re.sub(r"^\{\{function_node [^}]*\}\}\s*", "", message))


def _run_request(model: Any, prediction_log) -> None:
    """RunWarmupRequest(): one logged request against the servable, its answer dropped."""
    from serving.grpc_api import services
    from serving.grpc_api.tensor_proto import TensorProtoError, to_ndarray

    kind = prediction_log.WhichOneof("log_type")
    if kind == "predict_log":
        request = prediction_log.predict_log.request
        try:
            inputs = {alias: to_ndarray(proto) for alias, proto in request.inputs.items()}
        except TensorProtoError as e:
            raise ServingError(str(e), "INVALID_ARGUMENT") from None
        model.predict(request.model_spec.signature_name, inputs, list(request.output_filter))
    elif kind in ("classify_log", "regress_log"):
        request = getattr(prediction_log, kind).request
        examples = services.serialized_examples(request.SerializeToString())
        run = model.classify if kind == "classify_log" else model.regress
        run(request.model_spec.signature_name, examples)
    elif kind == "multi_inference_log":
        request = prediction_log.multi_inference_log.request
        services.Services(_Only(model)).multi_inference(request, request.SerializeToString())
    elif kind is not None:  # session_run_log, predict_streamed_log: PredictionLog::LogTypeCase's number
        number = prediction_log.DESCRIPTOR.fields_by_name[kind].number
        raise ServingError(f"Unsupported log_type for warmup: {number}", "UNIMPLEMENTED")


class _Only:
    """A registry of one servable, whatever the request names (warmup runs on the version being loaded)."""

    def __init__(self, model):
        self._model = model

    def get(self, name, version=None, label=None):
        return 0, self._model


def warming_loader(loader: Callable[[str], Any], num_request_iterations: int, metrics=None,
                   unloader: Optional[Callable[[Any], None]] = None) -> Callable[[str], Any]:
    """``loader`` followed by the version's warmup; a failed warmup releases the servable and fails the load."""
    def load(path: str) -> Any:
        servable = loader(path)
        try:
            run_warmup(servable, path, num_request_iterations, metrics)
        except BaseException:
            if unloader is not None:
                unloader(servable)
            elif hasattr(servable, "close"):
                servable.close()
            raise
        return servable
    return load
