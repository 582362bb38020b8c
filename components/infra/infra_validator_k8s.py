"""InfraValidator in the cluster: the candidate in the real tensorflow/serving image, in a pod of the
pipeline pod's own namespace, for a ServingSpec with `kubernetes` set.

Why not TFX's KubernetesRunner as it is: it requires KFP v1's pod environment (KFP_POD_NAME and
KFP_NAMESPACE; Kubeflow Pipelines v2, which TFX 1.16's KubeflowV2DagRunner compiles for, sets
KFP_POD_NAME and KFP_POD_UID only, and TFX's v2 compiler can add neither environment nor a
Kubernetes platform spec to a task), and the pod it builds has no security context, which the
`digits` namespace (Pod Security `restricted`) refuses. This subclass keeps its Start, WaitUntilRunning
and Stop, and replaces how it finds its own pod (components/infra/infra_validator_pod.py's pod_identity) and
the pod it creates (pod_manifest). The serving pod reads the candidate from the object store (a gs://
path: TF Serving reads GCS itself; the pod runs as tf-serving, whose Workload Identity may read the
bucket), or from the PersistentVolumeClaim the pipeline's pod has it on, mounted read-only.

The pipeline's service account needs the Role digits-infra-validator (k8s/components/infra-validation)."""
from __future__ import annotations

import os
from typing import Mapping, Optional

from tfx.components.infra_validator.model_server_runners import kubernetes_runner

from components.infra.infra_validator_pod import (ACTIVE_DEADLINE_SECONDS, CONTAINER, REST_PORT,
                                                  SERVICE_ACCOUNT_NAMESPACE_FILE, SERVING_ACCOUNT, TF_SERVING_IMAGE,
                                                  TF_SERVING_TAG, ClusterSetupError, ModelVolume, PodIdentity,
                                                  pod_identity, pod_manifest)

__all__ = ["ClusterSetupError", "DigitsKubernetesRunner", "kubernetes_serving_spec", "make_runner"]


def kubernetes_serving_spec(model_name: str = "mnist", tag: str = TF_SERVING_TAG,
                            service_account: str = SERVING_ACCOUNT,
                            active_deadline_seconds: int = ACTIVE_DEADLINE_SECONDS):
    """A ServingSpec for the cluster: tensorflow/serving:<tag>, run as ``service_account``."""
    from tfx.proto import infra_validator_pb2

    return infra_validator_pb2.ServingSpec(
        model_name=model_name,
        tensorflow_serving=infra_validator_pb2.TensorFlowServing(image_name=TF_SERVING_IMAGE, tags=[tag]),
        kubernetes=infra_validator_pb2.KubernetesConfig(service_account_name=service_account,
                                                        active_deadline_seconds=active_deadline_seconds))


def _env(var) -> dict:
    """ServingSpec's EnvVar as the pod's. Literal values only: TFX also allows a Secret key, but secrets
    reach this project's pods as files (checkov CKV_K8S_35), and the serving pod needs none."""
    if not var.name:
        raise ValueError("serving_pod_overrides.env: every EnvVar needs a name")
    if var.HasField("value_from"):
        raise ValueError(f"serving_pod_overrides.env {var.name}: secrets are not passed as environment "
                         "variables here; the serving pod reads the model with its service account's identity")
    return {"name": var.name, "value": var.value}


def _within(mount_path: str, path: str) -> bool:
    mount = os.path.normpath(mount_path)
    return os.path.normpath(path) == mount or os.path.normpath(path).startswith(mount.rstrip("/") + "/")


def model_volume(core_api, identity: PodIdentity, path: str) -> ModelVolume:
    """The claim the pipeline's pod holds ``path`` on, for the serving pod to mount; a clear error when
    the path is on the pod's own filesystem (another pod cannot read it)."""
    if not identity.name:
        raise ClusterSetupError(
            f"the candidate {path} is a local path, and the pipeline pod's name is unknown (no KFP_POD_NAME or "
            "POD_NAME), so the claim holding it cannot be found: set POD_NAME from the downward API "
            "(fieldRef metadata.name), or stage the candidate in the object store (gs://...)")
    pod = core_api.read_namespaced_pod(name=identity.name, namespace=identity.namespace)
    mounts = [m for c in pod.spec.containers for m in (c.volume_mounts or []) if _within(m.mount_path, path)]
    if not mounts:
        raise ClusterSetupError(
            f"the candidate {path} is on the pipeline pod's own filesystem, which the serving pod cannot read: "
            "stage it in the object store (a gs:// path under the pipeline root) or on a PersistentVolumeClaim "
            "mounted in this pod")
    mount = max(mounts, key=lambda m: len(m.mount_path))
    volume = next(v for v in pod.spec.volumes if v.name == mount.name)
    if volume.persistent_volume_claim is None:
        raise ClusterSetupError(f"the candidate {path} is on volume {volume.name!r}, which is not a "
                                "PersistentVolumeClaim: another pod cannot mount it")
    claim = volume.persistent_volume_claim.claim_name
    modes = set(core_api.read_namespaced_persistent_volume_claim(
        name=claim, namespace=identity.namespace).spec.access_modes or ())
    if modes & {"ReadWriteMany", "ReadOnlyMany"}:
        return ModelVolume(claim, mount.mount_path)
    if "ReadWriteOnce" in modes:  # mountable by pods of one node: put the server on the validator's node
        return ModelVolume(claim, mount.mount_path, node=pod.spec.node_name)
    raise ClusterSetupError(f"claim {claim} ({', '.join(sorted(modes)) or 'no access mode'}) cannot be mounted "
                            "by a second pod: use ReadWriteMany, or the object store")


class DigitsKubernetesRunner(kubernetes_runner.KubernetesRunner):
    """TFX's KubernetesRunner with the pipeline pod found the KFP v2 way and a restricted pod."""

    def __init__(self, model_path: str, serving_binary, serving_spec, *, core_api=None,
                 environ: Mapping[str, str] = os.environ,
                 namespace_file: str = SERVICE_ACCOUNT_NAMESPACE_FILE):
        # Not KubernetesRunner.__init__: it refuses to run without KFP v1's environment and reads its pod.
        from tfx.components.infra_validator import serving_bins
        from tfx.utils.model_paths import tf_serving_flavor

        if serving_spec.WhichOneof("serving_platform") != "kubernetes":
            raise ValueError("DigitsKubernetesRunner takes a ServingSpec with `kubernetes` set")
        if not isinstance(serving_binary, serving_bins.TensorFlowServing):
            raise ValueError(f"the cluster serves with tensorflow/serving, not {type(serving_binary).__name__}")
        self._config = serving_spec.kubernetes
        self._serving_spec = serving_spec
        self._serving_binary = serving_binary
        self._model_path = model_path
        self._model_base_path, self._model_name, _ = tf_serving_flavor.parse_model_path(
            model_path, expected_model_name=serving_spec.model_name or None)
        self._identity = pod_identity(environ, namespace_file)
        self._namespace = self._identity.namespace
        if core_api is None:
            from tfx.utils import kube_utils

            core_api = kube_utils.make_core_v1_api()
        self._k8s_core_api = core_api
        self._pod_name = None
        self._endpoint = None
        self._executor_container = None  # KubernetesRunner's GetLogs would read this; ours reads CONTAINER

    def __repr__(self):
        return f"DigitsKubernetesRunner(image: {self._serving_binary.image}, pod_name: {self._pod_name})"

    def _BuildPodManifest(self) -> dict:  # noqa: N802 (TFX's name)
        volume = None
        if "://" not in self._model_path:
            volume = model_volume(self._k8s_core_api, self._identity, self._model_path)
        overrides = self._config.serving_pod_overrides
        resources = None
        if overrides.resources.requests or overrides.resources.limits:
            resources = {key: dict(getattr(overrides.resources, key)) for key in ("requests", "limits")
                         if getattr(overrides.resources, key)}
        return pod_manifest(
            namespace=self._namespace, model_name=self._model_name,
            model_base_path=f"{self._model_base_path.rstrip('/')}/{self._model_name}",
            image=self._serving_binary.image,
            service_account=self._config.service_account_name or SERVING_ACCOUNT, owner=self._identity,
            model_volume=volume, env=[_env(var) for var in overrides.env], resources=resources,
            annotations=dict(overrides.annotations),
            active_deadline_seconds=self._config.active_deadline_seconds or ACTIVE_DEADLINE_SECONDS)

    def GetRestEndpoint(self) -> str:  # noqa: N802 (TFX's style)
        """host:port of the server's REST API (GetEndpoint is gRPC's, which TFX's client uses)."""
        assert self._endpoint is not None, "call Start() and WaitUntilRunning() first"
        return f"{self._endpoint.rsplit(':', 1)[0]}:{REST_PORT}"

    def GetLogs(self) -> Optional[str]:  # noqa: N802 (TFX's name)
        """The server's log, for the executor to show when validation fails."""
        if not self._pod_name:
            return None
        from kubernetes.client import rest

        try:
            result = self._k8s_core_api.read_namespaced_pod_log(name=self._pod_name, namespace=self._namespace,
                                                               container=CONTAINER)
        except rest.ApiException as error:  # e.g. the container never started: say so, keep the real error
            return f"(no log from pod {self._pod_name}: {error.status} {error.reason})"
        return result.decode("utf-8") if isinstance(result, bytes) else str(result)


def make_runner(model_path: str, serving_binary, serving_spec) -> DigitsKubernetesRunner:
    """The runner for a Kubernetes ServingSpec, with the signature of TFX's _create_model_server_runner."""
    return DigitsKubernetesRunner(model_path, serving_binary, serving_spec)

