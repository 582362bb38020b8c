"""InfraValidator's cluster runner (components/infra/infra_validator_k8s.py) against a recording stand-in for
the Kubernetes API: where it finds its own pod (KFP v1, KFP v2, the downward API, the service
account's namespace file), the pod it creates, how the serving pod reaches the candidate (object
store, or the claim it is on), and TFX's runner life cycle (start, wait, endpoints, logs, stop)."""
from __future__ import annotations

import types

import pytest
from tfx.components.infra_validator import error_types, serving_bins
from tfx.components.infra_validator.model_server_runners import kubernetes_runner
from tfx.proto import infra_validator_pb2

from components.infra import infra_validator_k8s as k8s
from components.infra import infra_validator_pod as pod_lib

GS_MODEL = "gs://digits-ml/pipeline/InfraValidator/blessing/7/candidate/mnist/1712345678"
KFP_V2 = {"KFP_POD_NAME": "digits-xyz-system-container-impl-123", "KFP_POD_UID": "3f1c-uid"}


def ns(**fields):
    return types.SimpleNamespace(**fields)


class FakeCoreApi:
    """The CoreV1Api calls the runner makes, answered from canned objects and recorded."""

    def __init__(self, pipeline_pod=None, claims=None, phases=("Running",)):
        self.pipeline_pod, self.claims, self.phases = pipeline_pod, claims or {}, list(phases)
        self.created, self.deleted, self.logs_read = [], [], []

    def create_namespaced_pod(self, namespace, body):
        self.created.append((namespace, body))
        return ns(metadata=ns(name=body["metadata"]["generateName"] + "abcde"))

    def read_namespaced_pod(self, name, namespace):
        if self.pipeline_pod is not None and name == self.pipeline_pod.metadata.name:
            return self.pipeline_pod
        phase = self.phases.pop(0) if len(self.phases) > 1 else self.phases[0]
        return ns(status=ns(phase=phase, pod_ip="10.8.0.7" if phase == "Running" else None))

    def read_namespaced_persistent_volume_claim(self, name, namespace):
        return ns(spec=ns(access_modes=self.claims[name]))

    def read_namespaced_pod_log(self, name, namespace, container):
        self.logs_read.append((name, namespace, container))
        return "Successfully loaded servable version {name: mnist version: 1712345678}"

    def delete_namespaced_pod(self, name, namespace):
        self.deleted.append((name, namespace))


def pipeline_pod(mounts, volumes, name=KFP_V2["KFP_POD_NAME"], node="node-a"):
    return ns(metadata=ns(name=name), spec=ns(
        node_name=node, containers=[ns(name="main", volume_mounts=[ns(name=n, mount_path=p) for n, p in mounts])],
        volumes=[ns(name=n, persistent_volume_claim=ns(claim_name=c) if c else None) for n, c in volumes]))


def runner(model_path=GS_MODEL, spec=None, api=None, environ=None, namespace_file=None, tmp_path=None):
    spec = spec or k8s.kubernetes_serving_spec()
    if namespace_file is None:
        namespace_file = tmp_path / "namespace"
        namespace_file.write_text("digits\n")
    (binary,) = serving_bins.parse_serving_binaries(spec)
    return k8s.DigitsKubernetesRunner(model_path, binary, spec, core_api=api or FakeCoreApi(),
                                      environ=KFP_V2 if environ is None else environ,
                                      namespace_file=str(namespace_file))


@pytest.fixture(autouse=True)
def no_polling_wait(monkeypatch):
    monkeypatch.setattr(kubernetes_runner, "_DEFAULT_POLLING_INTERVAL_SEC", 0)


# Where the pipeline's pod is.

def test_kfp_v2_gives_name_and_uid_and_the_namespace_comes_from_the_service_account_file(tmp_path):
    (tmp_path / "namespace").write_text("digits\n")
    identity = pod_lib.pod_identity(KFP_V2, str(tmp_path / "namespace"))
    assert identity == pod_lib.PodIdentity("digits", KFP_V2["KFP_POD_NAME"], "3f1c-uid")
    assert identity.owner_reference() == {"apiVersion": "v1", "kind": "Pod", "name": KFP_V2["KFP_POD_NAME"],
                                          "uid": "3f1c-uid"}


def test_kfp_v1_and_downward_api_variables_are_read_first(tmp_path):
    (tmp_path / "namespace").write_text("from-file")
    v1 = pod_lib.pod_identity({"KFP_NAMESPACE": "kubeflow", "KFP_POD_NAME": "p"}, str(tmp_path / "namespace"))
    assert (v1.namespace, v1.name, v1.uid, v1.owner_reference()) == ("kubeflow", "p", None, None)
    downward = pod_lib.pod_identity({"POD_NAMESPACE": "digits", "POD_NAME": "run-1", "POD_UID": "u"}, "/nonexistent")
    assert downward == pod_lib.PodIdentity("digits", "run-1", "u")


@pytest.mark.parametrize("content", [None, "  \n"], ids=["no-file", "empty-file"])
def test_no_namespace_anywhere_is_a_clear_error(tmp_path, content):
    path = tmp_path / "namespace"
    if content is not None:
        path.write_text(content)
    with pytest.raises(pod_lib.ClusterSetupError, match=r"POD_NAMESPACE from the downward API .*token"):
        pod_lib.pod_identity({"KFP_POD_NAME": "p"}, str(path))


# The pod it creates, and the life cycle TFX's executor drives.

def test_start_wait_endpoints_logs_and_stop_with_a_candidate_in_the_object_store(tmp_path):
    api = FakeCoreApi(phases=("Pending", "Running"))
    r = runner(api=api, tmp_path=tmp_path)
    r.Start()
    ((namespace, body),) = api.created
    assert namespace == "digits" and body["metadata"]["namespace"] == "digits"
    (c,) = body["spec"]["containers"]
    assert c["image"] == "tensorflow/serving:2.16.1" and c["command"] == ["/usr/bin/tensorflow_model_server"]
    assert c["args"] == ["--port=8500", "--rest_api_port=8501", "--model_name=mnist",
                         "--model_base_path=gs://digits-ml/pipeline/InfraValidator/blessing/7/candidate/mnist"]
    assert [v["name"] for v in body["spec"]["volumes"]] == ["tmp"]  # the object store needs no volume
    assert body["spec"]["serviceAccountName"] == "tf-serving" and body["spec"]["activeDeadlineSeconds"] == 1800
    assert body["metadata"]["ownerReferences"] == [{"apiVersion": "v1", "kind": "Pod",
                                                    "name": KFP_V2["KFP_POD_NAME"], "uid": "3f1c-uid"}]
    assert body["metadata"]["labels"] == pod_lib.LABELS and "tensorflow/serving" in repr(r)
    r.WaitUntilRunning(deadline=float("inf"))
    assert (r.GetEndpoint(), r.GetRestEndpoint()) == ("10.8.0.7:8500", "10.8.0.7:8501")
    assert "Successfully loaded" in r.GetLogs()
    assert api.logs_read == [("tf-serving-infraval-abcde", "digits", "tf-serving")]
    r.Stop()
    assert api.deleted == [("tf-serving-infraval-abcde", "digits")]


def test_a_server_that_exits_aborts_the_attempt(tmp_path):
    r = runner(api=FakeCoreApi(phases=("Pending", "Failed")), tmp_path=tmp_path)
    r.Start()
    with pytest.raises(error_types.JobAborted):
        r.WaitUntilRunning(deadline=float("inf"))


def test_a_pod_with_no_log_yet_says_so_instead_of_raising(tmp_path):
    from kubernetes.client import rest

    api = FakeCoreApi(phases=("Pending",))

    def no_log(name, namespace, container):
        raise rest.ApiException(status=400, reason="Bad Request")
    api.read_namespaced_pod_log = no_log
    r = runner(api=api, tmp_path=tmp_path)
    assert r.GetLogs() is None  # nothing started yet
    r.Start()
    assert r.GetLogs() == "(no log from pod tf-serving-infraval-abcde: 400 Bad Request)"


def test_make_runner_has_tfx_signature_and_finds_the_namespace_in_the_environment(monkeypatch):
    from tfx.utils import kube_utils

    api = FakeCoreApi()
    monkeypatch.setattr(kube_utils, "make_core_v1_api", lambda: api)
    monkeypatch.setenv("POD_NAMESPACE", "digits")
    for name in ("KFP_NAMESPACE", "KFP_POD_NAME", "KFP_POD_UID", "POD_NAME", "POD_UID"):
        monkeypatch.delenv(name, raising=False)
    spec = k8s.kubernetes_serving_spec()
    (binary,) = serving_bins.parse_serving_binaries(spec)
    r = k8s.make_runner(model_path=GS_MODEL, serving_binary=binary, serving_spec=spec)
    assert isinstance(r, kubernetes_runner.KubernetesRunner)
    r.Start()
    ((namespace, body),) = api.created
    assert namespace == "digits" and "ownerReferences" not in body["metadata"]  # no uid: no owner, the deadline


def test_serving_spec_overrides_reach_the_pod(tmp_path):
    spec = k8s.kubernetes_serving_spec(service_account="candidate-reader", active_deadline_seconds=600)
    overrides = spec.kubernetes.serving_pod_overrides
    overrides.annotations["example.com/run"] = "nightly"
    overrides.env.add(name="TF_CPP_MIN_LOG_LEVEL", value="1")
    overrides.resources.requests["cpu"] = "100m"
    overrides.resources.limits["cpu"] = "500m"
    api = FakeCoreApi()
    r = runner(spec=spec, api=api, tmp_path=tmp_path)
    r.Start()
    ((_, body),) = api.created
    (c,) = body["spec"]["containers"]
    assert c["env"] == [{"name": "TF_CPP_MIN_LOG_LEVEL", "value": "1"}]
    assert c["resources"] == {"requests": {"cpu": "100m"}, "limits": {"cpu": "500m"}}
    assert body["metadata"]["annotations"] == {"example.com/run": "nightly"}
    assert body["spec"]["serviceAccountName"] == "candidate-reader" and body["spec"]["activeDeadlineSeconds"] == 600


def test_secrets_are_not_passed_as_environment_variables(tmp_path):
    spec = k8s.kubernetes_serving_spec()
    spec.kubernetes.serving_pod_overrides.env.add(name="TOKEN").value_from.secret_key_ref.CopyFrom(
        infra_validator_pb2.SecretKeySelector(name="s", key="k"))
    api = FakeCoreApi()
    with pytest.raises(ValueError, match="TOKEN: secrets are not passed as environment variables"):
        runner(spec=spec, api=api, tmp_path=tmp_path).Start()
    assert api.created == []


def test_the_version_label_names_the_tag_served():
    labels = {image: pod_lib.pod_manifest(namespace="digits", model_name="mnist", model_base_path="gs://b/mnist",
                                          image=image)["metadata"]["labels"]
              for image in ("tensorflow/serving:2.15.0", "tensorflow/serving@sha256:" + "0" * 64,
                            "registry:5000/tensorflow/serving")}
    assert labels["tensorflow/serving:2.15.0"]["app.kubernetes.io/version"] == "2.15.0"
    assert "app.kubernetes.io/version" not in labels["tensorflow/serving@sha256:" + "0" * 64]
    assert "app.kubernetes.io/version" not in labels["registry:5000/tensorflow/serving"]
    for found in labels.values():  # what the NetworkPolicy selects stays
        assert found["app.kubernetes.io/name"] == "tf-serving-infraval"


def test_only_a_kubernetes_spec_with_tf_serving_and_a_tfs_flavoured_path(tmp_path):
    docker = infra_validator_pb2.ServingSpec(model_name="mnist", local_docker=infra_validator_pb2.LocalDockerConfig(),
                                             tensorflow_serving=infra_validator_pb2.TensorFlowServing(tags=["2.16.1"]))
    with pytest.raises(ValueError, match="kubernetes"):
        runner(spec=docker, tmp_path=tmp_path)
    with pytest.raises(ValueError, match="version"):
        runner(model_path="gs://b/Trainer/model/3/Format-Serving", tmp_path=tmp_path)


# A candidate on a claim of the pipeline's pod.

LOCAL_MODEL = "/var/lib/digits/pipeline/InfraValidator/.temp/9/mnist/1712345678"


def claim_runner(tmp_path, modes, environ=None, mounts=None, volumes=None):
    pod = pipeline_pod(mounts or [("pipeline", "/var/lib/digits/pipeline"), ("tmp", "/tmp")],
                       volumes or [("pipeline", "digits-pipeline"), ("tmp", None)])
    api = FakeCoreApi(pipeline_pod=pod, claims={"digits-pipeline": modes})
    return runner(model_path=LOCAL_MODEL, api=api, environ=environ, tmp_path=tmp_path), api


def test_a_read_write_once_claim_is_mounted_read_only_on_the_validators_node(tmp_path):
    r, api = claim_runner(tmp_path, ["ReadWriteOnce"])
    r.Start()
    ((_, body),) = api.created
    assert {"name": "model", "persistentVolumeClaim": {"claimName": "digits-pipeline", "readOnly": True}} \
        in body["spec"]["volumes"]
    (c,) = body["spec"]["containers"]
    assert {"name": "model", "mountPath": "/var/lib/digits/pipeline", "readOnly": True} in c["volumeMounts"]
    assert c["args"][-1] == "--model_base_path=/var/lib/digits/pipeline/InfraValidator/.temp/9/mnist"
    terms = body["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert terms["nodeSelectorTerms"] == [{"matchFields": [{"key": "metadata.name", "operator": "In",
                                                            "values": ["node-a"]}]}]


def test_a_read_write_many_claim_goes_to_any_node(tmp_path):
    r, api = claim_runner(tmp_path, ["ReadWriteMany"])
    r.Start()
    assert "affinity" not in api.created[0][1]["spec"]


@pytest.mark.parametrize("case,message", [
    ("pod-local", "own filesystem, which the serving pod cannot read"),
    ("empty-dir", "not a PersistentVolumeClaim"),
    ("one-pod-claim", "cannot be mounted by a second pod"),
    ("no-pod-name", "POD_NAME"),
])
def test_a_candidate_another_pod_cannot_read_is_refused_with_the_way_out(tmp_path, case, message):
    kwargs = {"modes": ["ReadWriteOncePod"] if case == "one-pod-claim" else ["ReadWriteOnce"]}
    if case == "pod-local":
        kwargs["mounts"], kwargs["volumes"] = [("tmp", "/tmp")], [("tmp", None)]
    if case == "empty-dir":
        kwargs["mounts"], kwargs["volumes"] = [("scratch", "/var/lib/digits")], [("scratch", None)]
    if case == "no-pod-name":
        kwargs["environ"] = {"POD_NAMESPACE": "digits"}
    r, api = claim_runner(tmp_path, **kwargs)
    with pytest.raises(k8s.ClusterSetupError, match=message):
        r.Start()
    assert api.created == []
