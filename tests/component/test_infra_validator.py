"""InfraValidator (components/infra/infra_validator.py) with the real digits-model-server process: a real model is
blessed after canaries over gRPC and REST through every signature; a model the server refuses, or one whose
answers differ from its own in-process outputs, is not, and the Pusher then leaves serving untouched."""
import json
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np
import pytest

os.environ["TF_USE_LEGACY_KERAS"] = "1"

import tensorflow as tf  # noqa: E402
from tensorflow.core.protobuf import saved_model_pb2  # noqa: E402
from tfx.dsl.components.base import base_executor  # noqa: E402
from tfx.proto import infra_validator_pb2, pusher_pb2  # noqa: E402
from tfx.types import standard_artifacts  # noqa: E402
from tfx.utils import proto_utils  # noqa: E402

from components.infra import infra_canaries, infra_validator  # noqa: E402
from components import pusher  # noqa: E402
from components.infra import infra_local_runner  # noqa: E402
from components.infra.infra_local_runner import refusal_reason  # noqa: E402
from tests.e2e.test_pipeline import snapshot  # noqa: E402
from tests.server_process import wait_for  # noqa: E402

CANARIES = 24


class RecordingExecutor(infra_validator.Executor):
    """The real Executor; keeps its runners so a test can see each server stopped."""

    runners = []

    def _CreateRunner(self, *args):
        runner = super()._CreateRunner(*args)
        self.runners.append(runner)
        return runner


@pytest.fixture(scope="module")
def canary_examples(tmp_path_factory, package_splits):
    """An Examples artifact whose test split holds real MNIST test digits as ExampleGen writes them."""
    uri = tmp_path_factory.mktemp("examples")
    os.makedirs(uri / "Split-test")
    test = package_splits["test"]
    with tf.io.TFRecordWriter(str(uri / "Split-test" / "data_tfrecord-00000-of-00001.gz"), "GZIP") as writer:
        for image, label in zip(test.images[:40].reshape(-1, 784), test.labels[:40]):
            example = tf.train.Example()
            example.features.feature["image"].int64_list.value.extend(image.astype(np.int64).tolist())
            example.features.feature["label"].int64_list.value.append(int(label))
            writer.write(example.SerializeToString())
    artifact = standard_artifacts.Examples()
    artifact.uri, artifact.split_names = str(uri), '["test"]'
    return artifact


def model_artifact(tmp_path, export_dir) -> standard_artifacts.Model:
    artifact = standard_artifacts.Model()
    artifact.uri = str(tmp_path / "model")
    shutil.copytree(export_dir, os.path.join(artifact.uri, "Format-Serving"))
    return artifact


def validate(tmp_path, model, examples):
    blessing = standard_artifacts.InfraBlessing()
    blessing.uri = str(tmp_path / "blessing")
    os.makedirs(blessing.uri)
    RecordingExecutor.runners = []
    executor = RecordingExecutor(base_executor.BaseExecutor.Context(tmp_dir=str(tmp_path / "tmp"), unique_id="7"))
    properties = {
        "serving_spec": proto_utils.proto_to_json(infra_validator.local_serving_spec()),
        "request_spec": proto_utils.proto_to_json(infra_validator.canary_request_spec(count=CANARIES)),
        "validation_spec": proto_utils.proto_to_json(infra_validator_pb2.ValidationSpec(
            max_loading_time_seconds=120, num_tries=2))}
    executor.Do({"model": [model], "examples": [examples]}, {"blessing": [blessing]}, properties)
    for runner in RecordingExecutor.runners:
        assert runner.returncode is not None, "the model server was left running"
    assert not os.path.exists(tmp_path / "tmp" / "7"), "the temporary model base path was left behind"
    return blessing


def test_a_real_model_is_blessed_by_the_real_server(tmp_path, digits_exports, canary_examples):
    blessing = validate(tmp_path, model_artifact(tmp_path, digits_exports[0]), canary_examples)
    assert os.listdir(blessing.uri) == ["INFRA_BLESSED"]
    assert blessing.get_int_custom_property("blessed") == 1
    assert blessing.get_string_custom_property(infra_validator.REASON_PROPERTY) == ""
    # serving_default, serving_examples and classify, each over gRPC and REST
    assert blessing.get_int_custom_property(infra_validator.CANARY_CALLS_PROPERTY) == 6
    assert len(RecordingExecutor.runners) == 1


def retagged(export_dir, destination) -> str:
    """The same model saved as if tagged 'train' only: TF loads it with that tag, TF Serving refuses it."""
    shutil.copytree(export_dir, destination)
    path = os.path.join(destination, "saved_model.pb")
    saved_model = saved_model_pb2.SavedModel()
    with open(path, "rb") as f:
        saved_model.ParseFromString(f.read())
    for meta_graph in saved_model.meta_graphs:
        del meta_graph.meta_info_def.tags[:]
        meta_graph.meta_info_def.tags.append("train")
    with open(path, "wb") as f:
        f.write(saved_model.SerializeToString())
    tf.saved_model.load(destination, tags=["train"])  # a model TensorFlow loads: only serving refuses it
    return destination


def test_a_model_the_server_refuses_is_not_blessed_and_not_pushed(tmp_path, digits_exports, canary_examples):
    unservable = retagged(digits_exports[0], str(tmp_path / "unservable"))
    model = model_artifact(tmp_path, unservable)
    blessing = validate(tmp_path, model, canary_examples)
    assert os.listdir(blessing.uri) == ["INFRA_NOT_BLESSED"]
    reason = blessing.get_string_custom_property(infra_validator.REASON_PROPERTY)
    assert reason.startswith("the model server refused the model") and "tags 'serve'" in reason, reason
    assert open(os.path.join(blessing.uri, "INFRA_NOT_BLESSED")).read() == reason
    assert len(RecordingExecutor.runners) == 1, "a refusal is a verdict: no retry"

    serving_dir = tmp_path / "serving" / "mnist"
    shutil.copytree(digits_exports[1], serving_dir / "1")
    before = snapshot(str(tmp_path / "serving"))
    model_blessing = standard_artifacts.ModelBlessing()
    model_blessing.uri = str(tmp_path / "model_blessing")
    model_blessing.set_int_custom_property("blessed", 1)  # the Evaluator blessed it
    pushed = standard_artifacts.PushedModel()
    pushed.uri = str(tmp_path / "pushed")
    destination = pusher_pb2.PushDestination(filesystem=pusher_pb2.PushDestination.Filesystem(
        base_directory=str(serving_dir)))
    pusher.Executor().Do({"model": [model], "model_blessing": [model_blessing], "infra_blessing": [blessing]},
                         {"pushed_model": [pushed]}, {"push_destination": proto_utils.proto_to_json(destination)})
    assert pushed.get_int_custom_property("pushed") == 0
    assert snapshot(str(tmp_path / "serving")) == before


class NoisyDigits(tf.Module):
    """Serves, but draws new answers at every call: the served ones cannot keep matching its own outputs."""

    @tf.function(input_signature=[tf.TensorSpec([None, 28, 28], tf.float32, name="images")])
    def serve(self, images):
        logits = tf.random.uniform([tf.shape(images)[0], 10])
        return {"probabilities": tf.nn.softmax(logits), "classes": tf.argmax(logits, axis=1)}


def test_answers_that_differ_from_the_models_own_are_not_blessed(tmp_path, canary_examples):
    module = NoisyDigits()
    export = str(tmp_path / "noisy")
    tf.saved_model.save(module, export, signatures={"serving_default": module.serve})
    blessing = validate(tmp_path, model_artifact(tmp_path, export), canary_examples)
    assert blessing.get_int_custom_property("blessed") == 0
    reason = blessing.get_string_custom_property(infra_validator.REASON_PROPERTY)
    assert reason.startswith("answers differ from the model's own outputs on signature serving_default ("), reason
    assert " differs " in reason and len(RecordingExecutor.runners) == 1, "wrong answers are a verdict: no retry"


def test_float_tolerance_and_what_a_difference_says():
    want = {"probabilities": np.array([[0.25, 0.75]], np.float32), "classes": np.array([1])}
    assert infra_canaries.difference(want, {"probabilities": want["probabilities"] + 5e-7,
                                            "classes": np.array([1])}) == ""
    assert "differs by up to 0.001" in infra_canaries.difference(
        want, {"probabilities": want["probabilities"] + 1e-3, "classes": np.array([1])})
    assert "'classes' differs in 1 value" in infra_canaries.difference(
        want, {"probabilities": want["probabilities"], "classes": np.array([0])})
    assert "'classes' is missing" in infra_canaries.difference(want, {"probabilities": want["probabilities"]})
    labels = {"classes": np.array([[b"0", b"1"]], dtype=object)}
    assert infra_canaries.difference(labels, {"classes": np.array([["0", "1"]], dtype=object)}) == ""
    assert infra_canaries.difference({"y": np.array([1.0])}, {"outputs": np.array([1.0])}) == ""  # REST, one output


def test_the_refusal_reason_is_the_servers_error_line():
    log = ("2026-12-07 02:00:00.000: I serving.core] Loading mnist version 1\n"
           "2026-12-07 02:00:00.500000: E external/local_xla/xla/cuda_fft.cc:479] Unable to register cuFFT factory\n"
           "2026-12-07 02:00:01.000: E serving.model_servers.main] NOT_FOUND: MetaGraphDef associated with tags "
           "'serve' could not be found\n"
           "2026-12-07 02:00:01.100: E digits.model_server] UNKNOWN: 1 model(s) did not become available\n")
    assert refusal_reason(log) == "NOT_FOUND: MetaGraphDef associated with tags 'serve' could not be found"
    assert refusal_reason("") == "it exited without a word"
    assert json.dumps(refusal_reason("just a line"))  # no error line: the tail of the log


def test_for_the_cluster_the_candidate_is_staged_under_the_blessing_uri_and_removed_after(tmp_path, digits_export):
    """TFX copies the candidate into the executor's temporary directory, which a serving pod in the
    cluster cannot read: for a Kubernetes ServingSpec it goes under the blessing's URI (the object store)."""
    from tfx.types import standard_artifacts

    from components.infra.infra_validator import CLUSTER_STAGING_DIR, Executor
    from components.infra.infra_validator_k8s import kubernetes_serving_spec

    model, blessing = standard_artifacts.Model(), standard_artifacts.InfraBlessing()
    model.uri, blessing.uri = str(tmp_path / "model"), str(tmp_path / "blessing")
    os.makedirs(os.path.join(model.uri, "Format-Serving"))
    shutil.copytree(digits_export, os.path.join(model.uri, "Format-Serving"), dirs_exist_ok=True)
    executor = Executor()
    staged = executor._StageForCluster(model, blessing, kubernetes_serving_spec())
    assert staged.startswith(os.path.join(blessing.uri, CLUSTER_STAGING_DIR, "mnist") + os.sep)
    assert os.path.exists(os.path.join(staged, "saved_model.pb"))
    executor._Cleanup()
    assert not os.path.exists(os.path.join(blessing.uri, CLUSTER_STAGING_DIR))


FORKS_WITH_HANDLERS = []
os.register_at_fork(before=lambda: FORKS_WITH_HANDLERS.append(os.getpid()))


def test_a_server_starts_without_running_fork_handlers(tmp_path):
    """The pipeline has gRPC running when the InfraValidator starts its server. A start that forks with
    handlers (``preexec_fn``) lets gRPC's fork handlers start a poller in the child that ``close_fds`` then
    breaks: the child aborted (exit -6, "epoll_wait error: Bad file descriptor") about 1 start in 300. Without
    Python code between fork and exec, CPython vforks and no handler runs, in Python or in gRPC."""
    before = len(FORKS_WITH_HANDLERS)
    with tempfile.TemporaryFile() as log:
        assert infra_local_runner.spawn(["true"], log).wait() == 0
    assert len(FORKS_WITH_HANDLERS) == before, "the server was started by a fork that runs fork handlers"


def test_a_killed_pipeline_leaves_no_model_server_behind(tmp_path, digits_exports):
    version = tmp_path / "base" / "mnist" / "1"
    shutil.copytree(digits_exports[0], version)
    parent = subprocess.Popen([sys.executable, "-c", f"""
import os, sys, time
os.environ["TF_USE_LEGACY_KERAS"] = "1"
from components.infra.infra_local_runner import LocalProcessRunner
runner = LocalProcessRunner({str(version)!r}, "mnist")
runner.Start()
runner.WaitUntilRunning(time.time() + 120)
print(runner.pid, flush=True)
time.sleep(600)
"""], cwd=infra_local_runner._REPO, stdout=subprocess.PIPE, text=True)
    try:
        server_pid = int(parent.stdout.readline())
        assert alive(server_pid), "the model server should be serving while its pipeline lives"
    finally:
        parent.kill()
        parent.wait()
    wait_for(lambda: not alive(server_pid), timeout=30, what=f"the model server (pid {server_pid}) to exit")


def alive(pid: int) -> bool:
    """Running, not a zombie waiting for its new parent to reap it."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
