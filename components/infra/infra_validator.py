"""InfraValidator: the candidate must load and answer in a real model server before the Pusher may push it.

TFX's InfraValidator component and Executor, with what TFX 1.16 lacks for this project:

- **Where the server runs.** TFX picks a runner from ``ServingSpec.serving_platform`` (``local_docker`` or
  ``kubernetes``) in a module-level function. Here the Executor picks it in ``_CreateRunner``:
  ``serving_platform`` left unset means *a process on this machine*, the project's own serving binary
  ``digits-model-server`` (components/infra/infra_local_runner.py); ``kubernetes`` means the real
  ``tensorflow/serving`` image in the cluster (``components.infra.infra_validator_k8s.make_runner``);
  ``local_docker`` stays TFX's. The binary stays ``tensorflow_serving`` (its tag names the TF Serving
  release the server follows), so the spec is a plain ServingSpec that every TFX tool can read, and
  ``local_serving_spec()`` here and ``infra_validator_k8s.kubernetes_serving_spec()`` say which is which.
- **What is asked.** TFX's request builder builds tf.Example requests only; here every serving
  signature gets a canary (components/infra/serving_requests.py): ``RequestSpec.num_examples`` digits of
  ``RequestSpec.split_name``, over gRPC *and* REST, and every answer must equal the candidate's own
  outputs computed in this process (components/infra/infra_canaries.py).
- **Why not.** A model that fails is marked INFRA_NOT_BLESSED as TFX does, and the reason is kept on
  the InfraBlessing artifact (``reason``) and in the INFRA_NOT_BLESSED file, where the run summary
  reads it. A refusal or a wrong answer is a verdict and is not retried; a server that could not start
  or answer in time is retried up to ``ValidationSpec.num_tries``.
"""
from __future__ import annotations

import os
import time
from typing import List, Optional

from absl import logging
from tfx import types
from tfx.components.infra_validator import error_types, serving_bins
from tfx.components.infra_validator import executor as tfx_executor
from tfx.dsl.components.base import base_component, base_driver, executor_spec
from tfx.proto import infra_validator_pb2
from tfx.types import standard_artifacts, standard_component_specs
from tfx.utils import io_utils, path_utils

from components.infra import infra_canaries
from components.infra.infra_local_runner import LocalProcessRunner

MODEL_NAME = "mnist"  # the name it is served by (serve.py, k8s/base): what clients' requests name
TF_SERVING_TAG = "2.16.1"  # the TF Serving release digits-model-server follows and the cluster serves
REASON_PROPERTY = "reason"  # on the InfraBlessing artifact: why not blessed ('' when blessed)
CANARY_CALLS_PROPERTY = "canary_calls"  # on the InfraBlessing artifact: gRPC + REST calls answered alike
DEFAULT_CANARIES = 32
CLUSTER_STAGING_DIR = "candidate"  # under the InfraBlessing URI: where the cluster's serving pod reads it
_POLL_SECONDS = 0.25


def local_serving_spec(model_name: str = MODEL_NAME) -> infra_validator_pb2.ServingSpec:
    """digits-model-server as a process on this machine (no serving_platform)."""
    return infra_validator_pb2.ServingSpec(
        tensorflow_serving=infra_validator_pb2.TensorFlowServing(tags=[TF_SERVING_TAG]), model_name=model_name)


def canary_request_spec(split: str = "test", count: int = DEFAULT_CANARIES) -> infra_validator_pb2.RequestSpec:
    """Every serving signature (no signature_names: all of them), ``count`` digits of ``split``."""
    return infra_validator_pb2.RequestSpec(
        tensorflow_serving=infra_validator_pb2.TensorFlowServingRequestSpec(), split_name=split, num_examples=count)


class Executor(tfx_executor.Executor):
    """TFX's InfraValidator Executor with a local-process runner, canaries on every signature over gRPC and
    REST checked against the model's own outputs, and the reason of a failure kept."""

    def _Do(self, model: types.Artifact, examples: Optional[types.Artifact], blessing: types.Artifact,
            serving_spec: infra_validator_pb2.ServingSpec, validation_spec: infra_validator_pb2.ValidationSpec,
            request_spec: Optional[infra_validator_pb2.RequestSpec]) -> None:
        binaries = serving_bins.parse_serving_binaries(serving_spec)
        if not binaries:  # TFX would bless vacuously: nothing validated
            raise ValueError("ServingSpec.tensorflow_serving names no tag or digest, so no server would validate "
                             f"the model; use infra_validator.local_serving_spec() (tag {TF_SERVING_TAG})")
        images = None
        if examples is not None and request_spec is not None:
            images = infra_canaries.test_images(examples.uri, request_spec.split_name or "test",
                                                request_spec.num_examples or DEFAULT_CANARIES)
        if serving_spec.WhichOneof("serving_platform") == "kubernetes":
            model_path = self._StageForCluster(model, blessing, serving_spec)
        else:
            model_path = self._PrepareModelPath(model, serving_spec)
        started = time.monotonic()
        reason, calls = "", 0
        for binary in binaries:
            reason, calls = self._Validate(model_path, binary, serving_spec, validation_spec, images)
            if reason:
                break
        logging.info("InfraValidator: %s in %.1f s", reason or f"{calls} canary calls answered alike",
                     time.monotonic() - started)
        if reason:
            tfx_executor._mark_not_blessed(blessing)  # pylint: disable=protected-access
            io_utils.write_string_file(os.path.join(blessing.uri, tfx_executor._NOT_BLESSED_FILENAME), reason)  # noqa
        else:
            tfx_executor._mark_blessed(blessing)  # pylint: disable=protected-access
        blessing.set_string_custom_property(REASON_PROPERTY, reason)
        blessing.set_int_custom_property(CANARY_CALLS_PROPERTY, calls)

    def _StageForCluster(self, model: types.Artifact, blessing: types.Artifact,
                         serving_spec: infra_validator_pb2.ServingSpec) -> str:
        """The candidate in TF Serving's layout under the blessing's URI (the object store, on Kubeflow):
        TFX would copy it into the executor's temporary directory, which the serving pod cannot read."""
        base = os.path.join(blessing.uri, CLUSTER_STAGING_DIR)
        model_path = os.path.join(base, serving_spec.model_name, str(int(time.time())))
        io_utils.copy_dir(src=path_utils.serving_model_path(model.uri, path_utils.is_old_model_artifact(model)),
                          dst=model_path)
        self._AddCleanup(io_utils.delete_dir, base)
        return model_path

    def _Validate(self, model_path, binary, serving_spec, validation_spec, images):
        """(reason, canary calls): reason '' when it passed; retried up to num_tries unless a verdict."""
        reason = ""
        for attempt in range(1, validation_spec.num_tries + 1):
            try:
                return "", self._ValidateOnce(model_path, binary, serving_spec, validation_spec, images)
            except error_types.GracefulShutdown:
                raise
            except Exception as e:  # noqa: BLE001 - any failure is a failed attempt, as in TFX
                reason = str(e) or type(e).__name__
                logging.warning("Infra validation attempt %d/%d failed: %s", attempt, validation_spec.num_tries,
                                reason)
                if isinstance(e, error_types.ValidationFailed):  # refused, wrong answers: a verdict
                    break
        return reason, 0

    def _CreateRunner(self, model_path: str, binary: serving_bins.ServingBinary,
                      serving_spec: infra_validator_pb2.ServingSpec):
        platform = serving_spec.WhichOneof("serving_platform")
        if platform is None:
            return LocalProcessRunner(model_path, serving_spec.model_name)
        if platform == "kubernetes":
            from components.infra import infra_validator_k8s  # the cluster's runner: imported only there

            return infra_validator_k8s.make_runner(model_path=model_path, serving_binary=binary,
                                                   serving_spec=serving_spec)
        return tfx_executor._create_model_server_runner(model_path, binary, serving_spec)  # noqa: SLF001

    def _ValidateOnce(self, model_path, binary, serving_spec, validation_spec, images) -> int:
        """One server: start, wait for AVAILABLE (bounded), canaries; stopped whatever happens."""
        deadline = time.time() + validation_spec.max_loading_time_seconds
        runner = self._CreateRunner(model_path, binary, serving_spec)
        try:
            logging.info("Starting %r.", runner)
            runner.Start()
            runner.WaitUntilRunning(deadline)
            binary.MakeClient(runner.GetEndpoint()).WaitUntilModelLoaded(deadline, polling_interval_sec=_POLL_SECONDS)
            if images is None:
                return 0
            rest = getattr(runner, "GetRestEndpoint", None)
            if rest is None:
                raise NotImplementedError(f"{type(runner).__name__} gives no REST endpoint (GetRestEndpoint) for "
                                          "the REST canaries")
            try:
                signatures, requests = infra_canaries.build(model_path, serving_spec.model_name, images)
            except ValueError as e:
                raise error_types.ValidationFailed(f"no canary requests for this model: {e}") from None
            return infra_canaries.check(model_path, requests, signatures, runner.GetEndpoint(), rest())
        except Exception:
            logs = runner.GetLogs()
            logging.error("Model server log:\n%s", logs or "(none)")
            raise
        finally:
            logging.info("Stopping %r.", runner)
            runner.Stop()


class InfraValidator(base_component.BaseComponent):
    """TFX's InfraValidator (its spec, inputs, outputs and parameters) run by :class:`Executor`;
    ``serving_spec`` defaults to this machine's digits-model-server, ``request_spec`` to canaries on every
    signature from the test split. Not a subclass of TFX's class: TFX's Kubeflow v2 compiler refuses any
    instance of that one (step_builder.py), whatever its executor."""

    SPEC_CLASS = standard_component_specs.InfraValidatorSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(Executor)
    DRIVER_CLASS = base_driver.BaseDriver

    def __init__(self, model: types.BaseChannel, examples: types.BaseChannel,
                 serving_spec: Optional[infra_validator_pb2.ServingSpec] = None,
                 request_spec: Optional[infra_validator_pb2.RequestSpec] = None,
                 validation_spec: Optional[infra_validator_pb2.ValidationSpec] = None):
        super().__init__(spec=standard_component_specs.InfraValidatorSpec(
            model=model, examples=examples, blessing=types.Channel(type=standard_artifacts.InfraBlessing),
            serving_spec=serving_spec or local_serving_spec(), request_spec=request_spec or canary_request_spec(),
            validation_spec=validation_spec or infra_validator_pb2.ValidationSpec(max_loading_time_seconds=300,
                                                                                  num_tries=3)))


__all__: List[str] = ["InfraValidator", "Executor", "local_serving_spec", "canary_request_spec", "MODEL_NAME"]
