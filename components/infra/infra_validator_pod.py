"""The pod InfraValidator starts in the cluster, as a pure function of what it needs: the real
tensorflow/serving image serving one candidate, in a pod the `digits` namespace (Pod Security
`restricted`) admits. tests/k8s validates exactly this manifest offline (kubernetes-validate, checkov,
the restricted rules); components/infra/infra_validator_k8s.py creates it.

Also where the pipeline's own pod is: TFX's KubernetesRunner reads KFP v1's KFP_POD_NAME and
KFP_NAMESPACE, but Kubeflow Pipelines v2 gives its executor pods KFP_POD_NAME and KFP_POD_UID only (its
Argo compiler's container template), so the namespace comes from the service account's namespace
file, which every pod with an API token has."""
from __future__ import annotations

import dataclasses
import os
from typing import Mapping, Optional, Sequence

TF_SERVING_IMAGE = "tensorflow/serving"
TF_SERVING_TAG = "2.16.1"  # = k8s/base/deployment.yaml's image (tests/k8s checks)
GRPC_PORT, REST_PORT = 8500, 8501  # TF Serving's, as tf-serving's Deployment uses them
CONTAINER = "tf-serving"
SERVING_ACCOUNT = "tf-serving"  # production serving's identity: it may read the bucket, nothing in the API
USER = 10001  # the uid every digits pod runs as (the image's default user is root)
POD_NAME_PREFIX = "tf-serving-infraval-"
# Not tf-serving's selector labels: the Service must never send production traffic to a candidate. The
# NetworkPolicy tf-serving-infraval (k8s/components/infra-validation) selects these.
LABELS = {
    "app.kubernetes.io/name": "tf-serving-infraval",
    "app.kubernetes.io/instance": "digits-mnist",
    "app.kubernetes.io/component": "infra-validation",
    "app.kubernetes.io/part-of": "digits",
    "app.kubernetes.io/version": TF_SERVING_TAG,
}
# One candidate, a few dozen canaries: tf-serving's own requests and limits.
RESOURCES = {"requests": {"cpu": "250m", "memory": "512Mi", "ephemeral-storage": "64Mi"},
             "limits": {"cpu": "1", "memory": "1Gi", "ephemeral-storage": "256Mi"}}
# The pod ends itself after this long even if the validator dies without deleting it.
ACTIVE_DEADLINE_SECONDS = 1800
SERVICE_ACCOUNT_NAMESPACE_FILE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"
# Where each fact about the pipeline's pod may be, first found wins: KFP v1, KFP v2, the downward API.
NAMESPACE_VARIABLES = ("KFP_NAMESPACE", "POD_NAMESPACE")
NAME_VARIABLES = ("KFP_POD_NAME", "POD_NAME")
UID_VARIABLES = ("KFP_POD_UID", "POD_UID")


class ClusterSetupError(RuntimeError):
    """The cluster or the pipeline's pod lacks something the serving pod needs; the message says what."""


@dataclasses.dataclass(frozen=True)
class PodIdentity:
    """The pipeline's pod: the namespace the serving pod goes to, and (when known) its name and uid,
    which make it the serving pod's owner, so Kubernetes deletes the server with the validator."""
    namespace: str
    name: Optional[str] = None
    uid: Optional[str] = None

    def owner_reference(self) -> Optional[dict]:
        if not (self.name and self.uid):
            return None
        return {"apiVersion": "v1", "kind": "Pod", "name": self.name, "uid": self.uid}


def pod_identity(environ: Mapping[str, str] = os.environ,
                 namespace_file: str = SERVICE_ACCOUNT_NAMESPACE_FILE) -> PodIdentity:
    """The pipeline pod's namespace, name and uid from its environment, the namespace falling back on the
    service account's namespace file."""
    def first(names: Sequence[str]) -> Optional[str]:
        return next((environ[n] for n in names if environ.get(n)), None)

    namespace = first(NAMESPACE_VARIABLES)
    if namespace is None:
        try:
            with open(namespace_file) as f:
                namespace = f.read().strip() or None
        except OSError:
            namespace = None
    if namespace is None:
        raise ClusterSetupError(
            f"cannot tell which namespace this pod is in: none of {', '.join(NAMESPACE_VARIABLES)} is set and "
            f"{namespace_file} is missing (the pod mounts no service account token). Give the pipeline's pod "
            "POD_NAMESPACE from the downward API (fieldRef metadata.namespace) and a service account token: the "
            "runner needs the Kubernetes API to start the serving pod")
    return PodIdentity(namespace, first(NAME_VARIABLES), first(UID_VARIABLES))


@dataclasses.dataclass(frozen=True)
class ModelVolume:
    """The claim holding the candidate, mounted read-only where the pipeline's pod mounts it. ``node``
    pins the serving pod to the pipeline pod's node when the claim is ReadWriteOnce (one node only)."""
    claim: str
    mount_path: str
    node: Optional[str] = None


def pod_manifest(*, namespace: str, model_name: str, model_base_path: str,
                 image: str = f"{TF_SERVING_IMAGE}:{TF_SERVING_TAG}", service_account: str = SERVING_ACCOUNT,
                 owner: Optional[PodIdentity] = None, model_volume: Optional[ModelVolume] = None,
                 env: Sequence[dict] = (), resources: Optional[dict] = None,
                 annotations: Optional[Mapping[str, str]] = None,
                 active_deadline_seconds: int = ACTIVE_DEADLINE_SECONDS) -> dict:
    """The serving pod for one candidate: ``tensorflow_model_server`` on gRPC 8500 and REST 8501 serving
    ``model_base_path`` (the directory holding <version>/saved_model.pb) as ``model_name``."""
    if active_deadline_seconds <= 0:
        raise ValueError(f"active_deadline_seconds must be > 0, got {active_deadline_seconds}")
    security = {"runAsNonRoot": True, "runAsUser": USER, "runAsGroup": USER,
                "seccompProfile": {"type": "RuntimeDefault"}}
    mounts = [{"name": "tmp", "mountPath": "/tmp"}]
    volumes = [{"name": "tmp", "emptyDir": {"sizeLimit": "128Mi"}}]
    spec: dict = {}
    if model_volume is not None:
        mounts.append({"name": "model", "mountPath": model_volume.mount_path, "readOnly": True})
        volumes.append({"name": "model", "persistentVolumeClaim": {"claimName": model_volume.claim,
                                                                   "readOnly": True}})
        if model_volume.node:
            spec["affinity"] = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchFields": [
                    {"key": "metadata.name", "operator": "In", "values": [model_volume.node]}]}]}}}
    container = {
        "name": CONTAINER,
        "image": image,
        "imagePullPolicy": "Always",
        # The binary itself, as tf-serving's Deployment runs it, so every flag is visible here.
        "command": ["/usr/bin/tensorflow_model_server"],
        "args": [f"--port={GRPC_PORT}", f"--rest_api_port={REST_PORT}", f"--model_name={model_name}",
                 f"--model_base_path={model_base_path}"],
        "ports": [{"name": "grpc", "containerPort": GRPC_PORT, "protocol": "TCP"},
                  {"name": "http", "containerPort": REST_PORT, "protocol": "TCP"}],
        # The gRPC port opens once the initial version has loaded (or the server exits): start-up waits
        # up to 5 minutes for that, liveness then only asks that it stays open; ready = the model answers.
        "startupProbe": {"tcpSocket": {"port": "grpc"}, "periodSeconds": 5, "failureThreshold": 60},
        "livenessProbe": {"tcpSocket": {"port": "grpc"}, "periodSeconds": 10, "failureThreshold": 3},
        "readinessProbe": {"httpGet": {"path": f"/v1/models/{model_name}", "port": "http"},
                           "periodSeconds": 5, "timeoutSeconds": 3},
        "resources": resources or RESOURCES,
        "securityContext": {**security, "allowPrivilegeEscalation": False, "privileged": False,
                            "readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"]}},
        "volumeMounts": mounts,
    }
    if env:
        container["env"] = list(env)
    labels = {key: value for key, value in LABELS.items() if key != "app.kubernetes.io/version"}
    name, _, tag = image.rpartition(":")
    if name and "/" not in tag and "@" not in image:  # the label says which release serves, when a tag does
        labels["app.kubernetes.io/version"] = tag
    metadata: dict = {"generateName": POD_NAME_PREFIX, "namespace": namespace, "labels": labels}
    if annotations:
        metadata["annotations"] = dict(annotations)
    reference = owner.owner_reference() if owner else None
    if reference:
        metadata["ownerReferences"] = [reference]
    spec.update({
        "serviceAccountName": service_account,
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        # A failed server is a failed attempt: the executor retries (ValidationSpec.num_tries), not the kubelet.
        "restartPolicy": "Never",
        "activeDeadlineSeconds": active_deadline_seconds,
        "terminationGracePeriodSeconds": 10,
        "securityContext": {**security, "fsGroup": USER},
        "containers": [container],
        "volumes": volumes,
    })
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec}
