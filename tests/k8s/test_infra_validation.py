"""InfraValidator's serving pod (components/infra/infra_validator_pod.py), validated offline as the other
manifests are: kubernetes-validate --strict, checkov with k8s/.checkov.yaml (beside the NetworkPolicy
that admits the pipeline to it, as in the cluster), and the Pod Security `restricted` rules the `digits`
namespace enforces, checked one by one (and shown to refuse TFX's own KubernetesRunner pod). Also the
RBAC and NetworkPolicy of k8s/components/infra-validation as the prod build renders them."""
from __future__ import annotations

import json
import re

import pytest
import yaml

from components.infra import infra_validator_pod as pod_lib
from tests.k8s.conftest import K8S, run, tool
from tests.k8s.test_validators import kubernetes_version  # noqa: F401 (the fixture)

KFP_POD = pod_lib.PodIdentity("digits", "digits-pipeline-abc-system-container-impl-1", "3f1c-uid")
SAFE_SYSCTLS = {"kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range", "net.ipv4.ip_unprivileged_port_start",
                "net.ipv4.tcp_syncookies", "net.ipv4.ping_group_range", "net.ipv4.ip_local_reserved_ports",
                "net.ipv4.tcp_keepalive_time", "net.ipv4.tcp_fin_timeout", "net.ipv4.tcp_keepalive_intvl",
                "net.ipv4.tcp_keepalive_probes"}
RESTRICTED_VOLUMES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim",
                      "projected", "secret"}


def manifests() -> dict:
    """The pods the runner creates: the Kubeflow case (candidate in the object store, owned by the
    executor pod) and the claim case (read-only claim, pinned to the validator's node, an env value)."""
    return {
        "object-store": pod_lib.pod_manifest(
            namespace="digits", model_name="mnist", owner=KFP_POD,
            model_base_path="gs://digits-ml/pipeline/InfraValidator/blessing/7/candidate/mnist"),
        "claim": pod_lib.pod_manifest(
            namespace="digits", model_name="mnist", model_base_path="/var/lib/digits/pipeline/.temp/9/mnist",
            model_volume=pod_lib.ModelVolume("digits-pipeline", "/var/lib/digits/pipeline", node="node-a"),
            env=[{"name": "TF_CPP_MIN_LOG_LEVEL", "value": "1"}]),
    }


def restricted_violations(pod: dict) -> list:
    """What Pod Security Admission's `restricted` level (latest, which includes `baseline`) refuses in a
    pod, per the Pod Security Standards."""
    spec, found = pod["spec"], []
    pod_sc = spec.get("securityContext", {})
    for field in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(field):
            found.append(field)
    for volume in spec.get("volumes", []):
        kinds = set(volume) - {"name"}
        if not kinds <= RESTRICTED_VOLUMES:
            found.append(f"volume {volume['name']}: {sorted(kinds)}")
    for sysctl in pod_sc.get("sysctls", []):
        if sysctl["name"] not in SAFE_SYSCTLS:
            found.append(f"sysctl {sysctl['name']}")
    containers = spec["containers"] + spec.get("initContainers", []) + spec.get("ephemeralContainers", [])
    for c in containers:
        sc, at = c.get("securityContext") or {}, f"container {c['name']}"
        if sc.get("privileged"):
            found.append(f"{at}: privileged")
        if sc.get("allowPrivilegeEscalation") is not False:
            found.append(f"{at}: allowPrivilegeEscalation must be false")
        if sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")) is not True:
            found.append(f"{at}: runAsNonRoot must be true")
        if sc.get("runAsUser", pod_sc.get("runAsUser")) == 0:
            found.append(f"{at}: runAsUser 0")
        seccomp = (sc.get("seccompProfile") or pod_sc.get("seccompProfile") or {}).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            found.append(f"{at}: seccompProfile {seccomp}")
        capabilities = sc.get("capabilities") or {}
        if "ALL" not in (capabilities.get("drop") or []):
            found.append(f"{at}: capabilities must drop ALL")
        if set(capabilities.get("add") or []) - {"NET_BIND_SERVICE"}:
            found.append(f"{at}: adds {capabilities['add']}")
        if any(p.get("hostPort") for p in c.get("ports", [])):
            found.append(f"{at}: hostPort")
        if sc.get("procMount", "Default") != "Default":
            found.append(f"{at}: procMount")
    return found


@pytest.fixture(scope="module")
def rendered(tmp_path_factory, builds) -> dict:
    """The pods, one file each, as the API server stores them (generateName + a suffix as the name),
    beside the prod build's NetworkPolicy tf-serving-infraval."""
    out = tmp_path_factory.mktemp("infraval")
    for suffix, (name, pod) in zip(("x7k2p", "q4m9z"), manifests().items()):
        stored = dict(pod, metadata=dict(pod["metadata"], name=pod["metadata"]["generateName"] + suffix))
        (out / f"pod-{name}.yaml").write_text(yaml.safe_dump(stored, sort_keys=False))
    policy = builds["prod"].get("NetworkPolicy", "tf-serving-infraval")
    (out / "networkpolicy.yaml").write_text(yaml.safe_dump(policy, sort_keys=False))
    return {"dir": out, "pods": sorted(out.glob("pod-*.yaml"))}


def test_kubernetes_validate_accepts_the_pods_strictly(rendered, kubernetes_version):  # noqa: F811
    proc = run([tool("kubernetes-validate"), "--strict", "-k", kubernetes_version, *map(str, rendered["pods"])])
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0 and not re.search(r"^(ERROR|WARN)", output, re.MULTILINE), output
    assert output.count("passed for resource") == len(manifests()), output


def test_checkov_fails_no_check_on_the_pods(rendered, tmp_path):
    proc = run([tool("checkov"), "--config-file", str(K8S / ".checkov.yaml"), "--skip-download",
                "--framework", "kubernetes", "-d", str(rendered["dir"]), "--compact", "-o", "json",
                "--output-file-path", str(tmp_path)])
    report_path = tmp_path / "results_json.json"
    assert proc.returncode in (0, 1) and report_path.exists(), proc.stdout + proc.stderr
    report = json.loads(report_path.read_text())
    report = report[0] if isinstance(report, list) else report
    failed = [f"{c['check_id']} {c['check_name']}: {c['resource']}" for c in report["results"]["failed_checks"]]
    assert not failed, "\n".join(failed)
    pods = {c["resource"] for c in report["results"]["passed_checks"] if c["resource"].startswith("Pod.")}
    assert len(pods) == len(manifests()), pods  # checkov saw and checked both pods
    passed = {c["check_id"] for c in report["results"]["passed_checks"]}
    # Among them: probes, limits, non-root high uid, read-only root, no token, seccomp, and a NetworkPolicy.
    assert {"CKV_K8S_8", "CKV_K8S_9", "CKV_K8S_11", "CKV_K8S_13", "CKV_K8S_22", "CKV_K8S_38", "CKV_K8S_40",
            "CKV_K8S_31", "CKV2_K8S_6"} <= passed


@pytest.mark.parametrize("name", sorted(manifests()))
def test_the_pods_meet_pod_security_restricted(name):
    pod = manifests()[name]
    assert restricted_violations(pod) == []
    spec, (c,) = pod["spec"], pod["spec"]["containers"]
    # And this project's own rules on top (tests/k8s/test_manifests.py's): uid 10001, read-only root with a
    # writable /tmp, no API token, limits, not the default account.
    assert spec["securityContext"]["runAsUser"] == c["securityContext"]["runAsUser"] == 10001
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert {"name": "tmp", "mountPath": "/tmp"} in c["volumeMounts"]
    assert spec["automountServiceAccountToken"] is False and spec["serviceAccountName"] == "tf-serving"
    assert {"cpu", "memory"} <= set(c["resources"]["limits"]) and spec["restartPolicy"] == "Never"


def test_the_restricted_check_refuses_tfx_own_kubernetes_runner_pod():
    """Why the runner is ours: TFX's KubernetesRunner builds its pod with no security context at all."""
    from kubernetes import client
    from tfx.components.infra_validator import serving_bins
    from tfx.components.infra_validator.model_server_runners import kubernetes_runner
    from tfx.proto import infra_validator_pb2

    tfx_runner = object.__new__(kubernetes_runner.KubernetesRunner)  # its __init__ needs a KFP v1 pod
    tfx_runner._config = infra_validator_pb2.KubernetesConfig()
    tfx_runner._model_path = "gs://b/mnist/1"
    tfx_runner._serving_binary = serving_bins.TensorFlowServing(model_name="mnist", tag="2.16.1")
    tfx_runner._label_dict = {"app": "tfx-infraval-modelserver"}
    tfx_runner._executor_pod = client.V1Pod(api_version="v1", kind="Pod", metadata=client.V1ObjectMeta(
        name="p", uid="u"), spec=client.V1PodSpec(containers=[], service_account_name="pipeline-runner"))
    tfx_runner._executor_container = client.V1Container(name="main", volume_mounts=[])
    pod = client.ApiClient().sanitize_for_serialization(tfx_runner._BuildPodManifest())
    violations = restricted_violations(pod)
    assert "container model-server: allowPrivilegeEscalation must be false" in violations
    assert "container model-server: runAsNonRoot must be true" in violations
    assert "container model-server: capabilities must drop ALL" in violations


def test_the_image_is_the_tf_serving_that_serves():
    deployment = yaml.safe_load((K8S / "base" / "deployment.yaml").read_text())
    (serving,) = deployment["spec"]["template"]["spec"]["containers"]
    assert serving["image"] == f"{pod_lib.TF_SERVING_IMAGE}:{pod_lib.TF_SERVING_TAG}"
    prod = yaml.safe_load((K8S / "overlays" / "prod" / "kustomization.yaml").read_text())
    (image,) = [i for i in prod["images"] if i["name"] == pod_lib.TF_SERVING_IMAGE]
    assert image["newTag"] == pod_lib.TF_SERVING_TAG
    assert serving["command"] == manifests()["object-store"]["spec"]["containers"][0]["command"]


def test_the_network_policy_admits_the_pipeline_and_the_service_never_routes_to_a_candidate(builds):
    prod = builds["prod"]
    policy = prod.get("NetworkPolicy", "tf-serving-infraval")["spec"]
    assert policy["podSelector"]["matchLabels"].items() <= pod_lib.LABELS.items()
    (rule,) = policy["ingress"]
    assert sorted(p["port"] for p in rule["ports"]) == [pod_lib.GRPC_PORT, pod_lib.REST_PORT]
    peers = [peer["podSelector"]["matchLabels"] for peer in rule["from"]]
    # Kubeflow Pipelines v2 labels every pod it runs so; the scheduled runs' pods carry their name.
    assert peers == [{"pipelines.kubeflow.org/v2_component": "true"}, {"app.kubernetes.io/name": "digits-pipeline"}]
    selector = prod.get("Service", "tf-serving")["spec"]["selector"]
    assert not selector.items() <= pod_lib.LABELS.items()
    for other in prod.all("NetworkPolicy"):  # no other policy claims the candidate's pods
        if other["metadata"]["name"] != "tf-serving-infraval":
            assert not other["spec"]["podSelector"]["matchLabels"].items() <= pod_lib.LABELS.items()


def test_the_pipeline_account_may_run_serving_pods_in_its_namespace_only(builds):
    prod = builds["prod"]
    role = prod.get("Role", "digits-infra-validator")
    rules = {(tuple(r["apiGroups"]), tuple(r["resources"])): set(r["verbs"]) for r in role["rules"]}
    # Exactly what DigitsKubernetesRunner and TFX's KubernetesRunner call, nothing more (no secrets, no exec).
    assert rules == {(("",), ("pods",)): {"create", "get", "list", "watch", "delete"},
                     (("",), ("pods/log",)): {"get"}, (("",), ("persistentvolumeclaims",)): {"get"}}
    binding = prod.get("RoleBinding", "digits-infra-validator")
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                  "name": "digits-infra-validator"}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "digits-pipeline", "namespace": "digits"}]
    account = prod.get("ServiceAccount", "digits-pipeline")
    assert account["metadata"]["annotations"]["iam.gke.io/gcp-service-account"].startswith("digits-pipeline@")
    assert not prod.all("ClusterRole") and not prod.all("ClusterRoleBinding")


def test_kubeflow_runs_take_the_account_the_role_is_bound_to(builds):
    from pipeline.schedule import recurring_run

    (subject,) = builds["prod"].get("RoleBinding", "digits-infra-validator")["subjects"]
    assert subject["name"] == recurring_run.SERVICE_ACCOUNT


def test_a_kubeflow_v2_task_can_carry_only_literal_environment_values():
    """Why the runner finds its namespace in the service account's file: the compiled spec cannot give
    a task a value from the downward API (PipelineContainerSpec.EnvVar is a name and a literal), and TFX
    1.16's compiler writes no Kubernetes platform spec; Kubeflow's backend sets KFP_POD_NAME and
    KFP_POD_UID itself, which pod_identity reads."""
    from kfp.pipeline_spec import pipeline_spec_pb2

    env = pipeline_spec_pb2.PipelineDeploymentConfig.PipelineContainerSpec.EnvVar
    assert [field.name for field in env.DESCRIPTOR.fields] == ["name", "value"]
    assert "KFP_POD_NAME" in pod_lib.NAME_VARIABLES and "KFP_POD_UID" in pod_lib.UID_VARIABLES
