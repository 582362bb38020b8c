"""serving.servables.warmup with a recording servable: TF Serving 2.16's replay semantics
(saved_model_warmup_util.cc, saved_model_warmup.cc), its errors and metrics, and a version that is
AVAILABLE only once its warmup has run."""
import os
import threading

os.environ["TF_USE_LEGACY_KERAS"] = "1"

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402
from tensorflow_serving.apis import prediction_log_pb2  # noqa: E402

from components.infra import serving_requests  # noqa: E402
from components.training import warmup_requests  # noqa: E402
from serving.core.versions import VersionManager  # noqa: E402
from serving.errors import ServingError  # noqa: E402
from serving.model_servers import metrics as metrics_lib  # noqa: E402
from serving.model_servers.server_config import ModelSpec  # noqa: E402
from serving.servables import warmup  # noqa: E402
from tests.unit.test_serving_requests import SIGNATURES  # noqa: E402

IMAGES = np.arange(2 * 784).reshape(2, 784) % 256


class Recorder:
    """A servable that records what it is asked; ``fail`` makes every call raise it."""

    def __init__(self, fail=None, gate=None):
        self.calls, self.fail, self.gate, self.closed = [], fail, gate, False

    def _call(self, *call):
        if self.gate is not None:
            self.gate.wait(30)
        self.calls.append(call)
        if self.fail is not None:
            raise self.fail

    def predict(self, signature, inputs, output_filter=()):
        self._call("predict", signature, {k: v.shape for k, v in inputs.items()})

    def classify(self, signature, examples):
        self._call("classify", signature, len(examples))

    def regress(self, signature, examples):
        self._call("regress", signature, len(examples))

    def close(self):
        self.closed = True


def write_logs(export_dir, logs):
    os.makedirs(os.path.join(export_dir, "assets.extra"), exist_ok=True)
    with tf.io.TFRecordWriter(warmup.warmup_path(str(export_dir))) as writer:
        for log in logs:
            writer.write(log if isinstance(log, bytes) else log.SerializeToString())


def digit_logs():
    return warmup_requests.prediction_logs(serving_requests.build_requests(IMAGES, "any", SIGNATURES))


def page(metrics):
    return metrics.render()[0].decode().splitlines()


def test_every_record_is_replayed_each_iteration_and_measured(tmp_path, caplog):
    write_logs(tmp_path, digit_logs())
    model, metrics = Recorder(), metrics_lib.ServingMetrics()
    with caplog.at_level("INFO", "digits.model_server"):
        assert warmup.run_warmup(model, str(tmp_path), num_request_iterations=2, metrics=metrics) == 3
    assert model.calls == [("classify", "classify", 2)] * 2 + [
        ("predict", "serving_default", {"images": (2, 28, 28)})] * 2 + [
        ("predict", "serving_examples", {"examples": (2,)})] * 2
    assert f"Finished reading warmup data for model at {warmup.warmup_path(str(tmp_path))}. Number of warmup " \
           "records read: 3. Elapsed time (microseconds): " in caplog.text
    lines = page(metrics)
    assert f':tensorflow:serving:model_warmup_records_read{{model_path="{tmp_path}",status="OK"}} 3' in lines
    assert f':tensorflow:serving:model_warmup_latency_count{{model_path="{tmp_path}",status="OK"}} 1' in lines
    # iterations <= 0 mean once, as --num_request_iterations_for_warmup is used only if > 0
    model = Recorder()
    warmup.run_warmup(model, str(tmp_path), num_request_iterations=0)
    assert len(model.calls) == 3


def test_no_warmup_file_is_fine_and_records_nothing(tmp_path, caplog):
    metrics = metrics_lib.ServingMetrics()
    with caplog.at_level("INFO", "digits.model_server"):
        assert warmup.run_warmup(Recorder(), str(tmp_path), metrics=metrics) == 0
    assert f"No warmup data file found at {tmp_path}/assets.extra/tf_serving_warmup_requests" in caplog.text
    assert not [line for line in page(metrics) if "warmup" in line and not line.startswith("#")]


def test_a_file_that_is_not_tfrecord_is_data_loss(tmp_path):
    os.makedirs(tmp_path / "assets.extra")
    (tmp_path / "assets.extra" / "tf_serving_warmup_requests").write_bytes(b"not a TFRecord file, just text")
    metrics = metrics_lib.ServingMetrics()
    with pytest.raises(ServingError) as info:
        warmup.run_warmup(Recorder(), str(tmp_path), metrics=metrics)
    assert info.value.code == "DATA_LOSS"
    assert info.value.message == ("corrupted record at 0 (Is this even a TFRecord file?). "
                                  "Please verify your warmup data is in TFRecord format.")
    # the metric's status is the reader's, before the hint is added
    assert (f':tensorflow:serving:model_warmup_records_read{{model_path="{tmp_path}",'
            'status="DATA_LOSS: corrupted record at 0 (Is this even a TFRecord file?)"} 0') in page(metrics)


def test_records_that_cannot_run_fail_the_warmup(tmp_path):
    session_run = prediction_log_pb2.PredictionLog()
    session_run.session_run_log.SetInParent()
    write_logs(tmp_path, [prediction_log_pb2.PredictionLog(), session_run])  # an empty log does nothing
    with pytest.raises(ServingError) as info:
        warmup.run_warmup(Recorder(), str(tmp_path))
    assert (info.value.code, info.value.message) == ("UNIMPLEMENTED", "Unsupported log_type for warmup: 5")

    write_logs(tmp_path, [b"\xff\xff\xff"])
    with pytest.raises(ServingError, match="^Failed to parse warmup record: .* from .*tf_serving_warmup_requests$"):
        warmup.run_warmup(Recorder(), str(tmp_path))

    write_logs(tmp_path, digit_logs())
    with pytest.raises(ServingError) as info:
        warmup.run_warmup(Recorder(fail=ServingError("bad input", "INVALID_ARGUMENT")), str(tmp_path))
    assert (info.value.code, info.value.message) == ("INVALID_ARGUMENT", "bad input")


def test_at_most_1000_records(tmp_path):
    write_logs(tmp_path, [prediction_log_pb2.PredictionLog()] * 1000)
    assert warmup.run_warmup(Recorder(), str(tmp_path)) == 1000
    write_logs(tmp_path, [prediction_log_pb2.PredictionLog()] * 1001)
    with pytest.raises(ServingError) as info:
        warmup.run_warmup(Recorder(), str(tmp_path))
    path = warmup.warmup_path(str(tmp_path))
    assert (info.value.code, info.value.message) == (
        "INVALID_ARGUMENT", f"Number of warmup records exceeds the maximum (1000) at {path}")


def test_a_version_is_available_only_after_its_warmup_and_a_failed_one_ends(tmp_path):
    base = tmp_path / "m"
    write_logs(base / "1", digit_logs())
    gate, servables = threading.Event(), []

    def load(path):
        servables.append(Recorder(gate=gate, fail=None if path.endswith("1") else ServingError("no", "INTERNAL")))
        return servables[-1]
    manager = VersionManager(ModelSpec("m", str(base)), warmup.warming_loader(load, 1), poll_seconds=-1,
                             max_num_load_retries=0)
    poller = threading.Thread(target=manager.poll_once)
    poller.start()
    deadline = threading.Event()
    while not servables or not [s for s in manager.status() if s.state == "LOADING"]:
        assert not deadline.wait(0.01) and poller.is_alive()
    assert manager.available_versions() == ()  # loaded, but its warmup is still running
    gate.set()
    poller.join(30)
    assert manager.available_versions() == (1,) and len(servables[0].calls) == 3

    write_logs(base / "2", digit_logs())
    manager.poll_once()
    (v2,) = [s for s in manager.status() if s.version == 2]
    assert (v2.state, v2.error_code, v2.error_message) == ("END", "INTERNAL", "no")
    assert servables[1].closed and manager.get() == (1, servables[0])  # released; version 1 serves on


def test_warmup_metrics_of_serving_processes_add_up():
    one, two, total = (metrics_lib.ServingMetrics() for _ in range(3))
    one.record_warmup("/m/1", "OK", 50, 6)
    two.record_warmup("/m/1", "OK", 70, 6)
    for metrics in (one, two):
        total.merge(metrics.snapshot())
    lines = page(total)
    assert ':tensorflow:serving:model_warmup_records_read{model_path="/m/1",status="OK"} 12' in lines
    assert ':tensorflow:serving:model_warmup_latency_count{model_path="/m/1",status="OK"} 2' in lines
    assert ':tensorflow:serving:model_warmup_latency_sum{model_path="/m/1",status="OK"} 120' in lines
