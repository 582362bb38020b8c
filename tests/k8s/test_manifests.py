"""The kustomize builds of k8s/ (base, local, prod) as the cluster would receive them: they render,
every pod meets Pod Security `restricted`, and tf-serving, the scheduled runs and the network policy
agree with TF Serving's flags, serving/model_servers/monitoring.config and the pipeline's config."""
from __future__ import annotations

import posixpath
import re

import pytest
from google.protobuf import text_format

from pipeline import config as config_lib
from pipeline.config import PipelineConfig
from serving.model_servers import options, server_config
from tests.k8s.conftest import BUILDS, REPO, pod_spec

CONFIG = PipelineConfig()
MODEL = CONFIG.model_name
SERVING_LABELS = {"app.kubernetes.io/name": "tf-serving", "app.kubernetes.io/instance": "digits-mnist"}
WEB = {("ServiceAccount", "digits-web"), ("Deployment", "digits-web"), ("Service", "digits-web"),
       ("NetworkPolicy", "digits-web"), ("PersistentVolumeClaim", "digits-data")}
COMMON = {("Namespace", "digits"), ("ServiceAccount", "tf-serving"), ("Service", "tf-serving"),
          ("Deployment", "tf-serving"), ("HorizontalPodAutoscaler", "tf-serving"),
          ("PodDisruptionBudget", "tf-serving"), ("NetworkPolicy", "tf-serving")} | WEB
SCHEDULED = {("CronJob", "digits-pipeline"), ("ServiceAccount", "digits-pipeline"),
             ("PersistentVolumeClaim", "digits-pipeline"), ("NetworkPolicy", "digits-pipeline")}
EXPECTED = {"base": COMMON, "local": COMMON | SCHEDULED | {("PersistentVolumeClaim", "digits-serving")},
            "prod": COMMON}
WORKLOADS = {"base": {("Deployment", "tf-serving"), ("Deployment", "digits-web")},
             "local": {("Deployment", "tf-serving"), ("Deployment", "digits-web"), ("CronJob", "digits-pipeline")},
             "prod": {("Deployment", "tf-serving"), ("Deployment", "digits-web")}}
# Pod Security `restricted` allows only these volume types.
RESTRICTED_VOLUMES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim",
                      "projected", "secret"}

each_build = pytest.mark.parametrize("name", list(BUILDS))


def serving_pod(build) -> dict:
    return pod_spec(build.get("Deployment", "tf-serving"))


def container(spec: dict, name: str) -> dict:
    found = [c for c in spec["containers"] if c["name"] == name]
    assert len(found) == 1, f"expected one container {name!r}"
    return found[0]


def resolve(c: dict, text: str) -> str:
    """Expands $(VAR) as the kubelet does in command and args, from the container's literal env values."""
    env = {e["name"]: e["value"] for e in c.get("env", []) if "value" in e}

    def one(match):
        assert match.group(1) in env, f"{text!r} refers to $({match.group(1)}), which the container's env lacks"
        return env[match.group(1)]
    return re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", one, text)


def serving_options(build) -> options.ServerOptions:
    """tf-serving's command line read by serving/model_servers/options.py, which takes exactly tensorflow_model_server's
    flags and syntax (--name=value) and refuses anything else."""
    c = container(serving_pod(build), "tf-serving")
    return options.parse_args([resolve(c, arg) for arg in c["args"]])


def mount_for(spec: dict, c: dict, path: str):
    """The volume mount holding ``path`` (the deepest one) and its volume."""
    mounts = [m for m in c.get("volumeMounts", [])
              if path == m["mountPath"] or path.startswith(m["mountPath"].rstrip("/") + "/")]
    assert mounts, f"no volume is mounted at {path} or above it in container {c['name']}"
    mount = max(mounts, key=lambda m: len(m["mountPath"]))
    volume = next(v for v in spec["volumes"] if v["name"] == mount["name"])
    return mount, volume


def port_number(c: dict, port) -> int:
    if isinstance(port, int):
        return port
    return next(p["containerPort"] for p in c["ports"] if p["name"] == port)


def monitoring_config_map(build) -> dict:
    maps = [m for m in build.all("ConfigMap") if m["metadata"]["name"].startswith("tf-serving-monitoring")]
    assert len(maps) == 1, f"{build.name}: expected one tf-serving-monitoring ConfigMap"
    return maps[0]


@each_build
def test_build_renders_the_expected_objects_in_the_digits_namespace(builds, name):
    build = builds[name]
    present = {(o["kind"], o["metadata"]["name"]) for o in build.objects}
    assert EXPECTED[name] <= present, f"{name} lacks {sorted(EXPECTED[name] - present)}"
    assert {(k, n) for k, n in present if k in ("CronJob", "Deployment")} == WORKLOADS[name]
    for obj in build.objects:
        if obj["kind"] != "Namespace":
            assert obj["metadata"].get("namespace") == "digits", f"{obj['kind']} {obj['metadata']['name']}"
        labels = obj["metadata"].get("labels", {})
        assert labels.get("app.kubernetes.io/part-of") == "digits", f"{obj['kind']} {obj['metadata']['name']}"
    namespace = build.get("Namespace", "digits")["metadata"]["labels"]
    assert namespace["pod-security.kubernetes.io/enforce"] == "restricted"


@each_build
def test_every_pod_and_container_meets_pod_security_restricted(builds, name):
    build = builds[name]
    workloads = build.workloads()
    assert {(w["kind"], w["metadata"]["name"]) for w in workloads} == WORKLOADS[name]
    for workload in workloads:
        where = f"{name}: {workload['kind']} {workload['metadata']['name']}"
        spec = pod_spec(workload)
        pod = spec.get("securityContext", {})
        assert pod.get("runAsNonRoot") is True, where
        assert pod.get("seccompProfile", {}).get("type") == "RuntimeDefault", where
        assert spec.get("automountServiceAccountToken") is False, where
        account = spec.get("serviceAccountName", "default")
        assert account != "default", f"{where} runs as the namespace's default service account"
        assert build.get("ServiceAccount", account).get("automountServiceAccountToken") is False, where
        for host in ("hostNetwork", "hostPID", "hostIPC"):
            assert not spec.get(host), f"{where}: {host}"
        for volume in spec.get("volumes", []):
            kinds = set(volume) - {"name"}
            assert kinds <= RESTRICTED_VOLUMES, f"{where}: volume {volume['name']} is {kinds}"
        containers = spec["containers"] + spec.get("initContainers", []) + spec.get("ephemeralContainers", [])
        for c in containers:
            at = f"{where}, container {c['name']}"
            sc = c.get("securityContext", {})
            assert sc.get("allowPrivilegeEscalation") is False, at
            assert sc.get("privileged") in (None, False), at
            assert sc.get("capabilities", {}).get("drop") == ["ALL"], at
            assert not sc.get("capabilities", {}).get("add"), at
            assert sc.get("readOnlyRootFilesystem") is True, at
            assert sc.get("runAsNonRoot", pod.get("runAsNonRoot")) is True, at
            # The images' default users are root or unnamed: the uid must be given, and above 10000.
            for key in ("runAsUser", "runAsGroup"):
                value = sc.get(key, pod.get(key))
                assert isinstance(value, int) and value > 10000, f"{at}: {key}={value}"
            assert sc.get("seccompProfile", pod.get("seccompProfile", {})).get("type") == "RuntimeDefault", at
            for bound in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(c.get("resources", {}).get(bound, {})), f"{at}: {bound}"
            tmp_mount, tmp_volume = mount_for(spec, c, "/tmp")
            assert tmp_mount["mountPath"] == "/tmp" and "emptyDir" in tmp_volume, f"{at}: writable /tmp"


@each_build
def test_tf_serving_runs_tensorflow_model_server_with_tf_serving_flags(builds, name):
    build = builds[name]
    spec = serving_pod(build)
    c = container(spec, "tf-serving")
    assert c["image"].startswith("tensorflow/serving:2.16.1"), c["image"]
    assert c["imagePullPolicy"] == "Always"  # the one image checkov's CKV_K8S_15 skip must not cover
    assert c["command"] == ["/usr/bin/tensorflow_model_server"]
    flags = serving_options(build)
    assert (flags.port, flags.rest_api_port, flags.model_name) == (8500, 8501, MODEL)
    assert flags.file_system_poll_wait_seconds == 30
    assert not flags.model_config_file and flags.model_base_path
    config_mount, config_volume = mount_for(spec, c, flags.monitoring_config_file)
    assert config_mount.get("readOnly") is True
    config_map = monitoring_config_map(build)
    assert config_volume["configMap"]["name"] == config_map["metadata"]["name"]
    key = posixpath.relpath(flags.monitoring_config_file, config_mount["mountPath"])
    assert key in config_map["data"], f"the ConfigMap has no key {key}"


@each_build
def test_monitoring_config_map_says_what_serving_monitoring_config_says(builds, name):
    config_map = monitoring_config_map(builds[name])
    (text,) = config_map["data"].values()
    deployed = text_format.Parse(text, server_config.MonitoringConfig())
    ours = server_config.load_monitoring_config(str(REPO / "serving" / "model_servers" / "monitoring.config"))
    assert deployed == ours
    assert deployed.prometheus_config.enable


@each_build
def test_ports_service_probes_and_scrape_annotations_agree(builds, name):
    build = builds[name]
    deployment = build.get("Deployment", "tf-serving")
    spec = pod_spec(deployment)
    c = container(spec, "tf-serving")
    assert {p["name"]: p["containerPort"] for p in c["ports"]} == {"grpc": 8500, "http": 8501}
    service = build.get("Service", "tf-serving")
    assert service["spec"]["selector"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    assert deployment["spec"]["selector"]["matchLabels"] == SERVING_LABELS
    ports = {p["name"]: p for p in service["spec"]["ports"]}
    assert set(ports) == {"grpc", "http"}
    for port_name, number in (("grpc", 8500), ("http", 8501)):
        assert ports[port_name]["port"] == number
        assert port_number(c, ports[port_name]["targetPort"]) == number
        assert ports[port_name]["appProtocol"] == port_name
    metrics_path = monitoring_path(build)
    readiness = c["readinessProbe"]["httpGet"]
    assert (readiness["path"], port_number(c, readiness["port"])) == (f"/v1/models/{MODEL}", 8501)
    # Liveness and start-up: the REST server answers at all (with or without a loaded model).
    for probe in ("livenessProbe", "startupProbe"):
        get = c[probe]["httpGet"]
        assert (get["path"], port_number(c, get["port"])) == (metrics_path, 8501), probe
    startup = c["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 120, "a slow start must not be killed"
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations == {"prometheus.io/scrape": "true", "prometheus.io/port": "8501",
                           "prometheus.io/path": metrics_path}


def monitoring_path(build) -> str:
    (text,) = monitoring_config_map(build)["data"].values()
    config = text_format.Parse(text, server_config.MonitoringConfig())
    return config.prometheus_config.path or server_config.DEFAULT_PROMETHEUS_PATH


@each_build
def test_autoscaler_and_disruption_budget_cover_tf_serving(builds, name):
    build = builds[name]
    deployment = build.get("Deployment", "tf-serving")
    assert "replicas" not in deployment["spec"], "the HorizontalPodAutoscaler owns the replica count"
    hpa = build.get("HorizontalPodAutoscaler", "tf-serving")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "tf-serving"}
    (metric,) = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu" and metric["resource"]["target"]["type"] == "Utilization"
    assert 1 <= hpa["spec"]["minReplicas"] < hpa["spec"]["maxReplicas"]
    pdb = build.get("PodDisruptionBudget", "tf-serving")
    assert pdb["apiVersion"] == "policy/v1"
    assert pdb["spec"]["selector"]["matchLabels"] == SERVING_LABELS
    assert pdb["spec"].get("maxUnavailable") == 1 or pdb["spec"].get("minAvailable") == 1


@each_build
def test_network_policy_admits_only_model_clients_and_prometheus(builds, name):
    build = builds[name]
    policy = build.get("NetworkPolicy", "tf-serving")["spec"]
    assert policy["podSelector"] == {"matchLabels": SERVING_LABELS}
    assert policy["policyTypes"] == ["Ingress"]
    rules = sorted((repr(rule["from"]), sorted(p["port"] for p in rule["ports"])) for rule in policy["ingress"])
    clients = [{"podSelector": {"matchLabels": {"digits.dev/model-client": "true"}}}]
    prometheus = [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}},
                   "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}}}]
    assert rules == sorted([(repr(clients), [8500, 8501]), (repr(prometheus), [8501])])
    for rule in policy["ingress"]:
        assert all(p.get("protocol", "TCP") == "TCP" for p in rule["ports"])
    # Every pod of the build is covered by some policy (checkov's CKV2_K8S_6 only looks at bare Pods).
    selectors = [np["spec"]["podSelector"].get("matchLabels", {}) for np in build.all("NetworkPolicy")]
    for workload in build.workloads():
        template = workload["spec"]["jobTemplate"]["spec"] if workload["kind"] == "CronJob" else workload["spec"]
        labels = template["template"]["metadata"]["labels"]
        assert any(s.items() <= labels.items() for s in selectors), workload["metadata"]["name"]


def test_local_serves_from_the_claim_read_only(builds):
    build = builds["local"]
    spec = serving_pod(build)
    c = container(spec, "tf-serving")
    base_path = serving_options(build).model_base_path
    mount, volume = mount_for(spec, c, base_path)
    assert mount.get("readOnly") is True
    assert volume["persistentVolumeClaim"] == {"claimName": "digits-serving", "readOnly": True}
    assert posixpath.relpath(base_path, mount["mountPath"]) == MODEL
    claim = build.get("PersistentVolumeClaim", "digits-serving")["spec"]
    assert claim["accessModes"] == ["ReadWriteOnce"] and claim["resources"]["requests"]["storage"]


def test_scheduled_runs_push_where_tf_serving_reads(builds):
    build = builds["local"]
    job = pod_spec(build.get("CronJob", "digits-pipeline"))
    (c,) = job["containers"]
    assert c["command"] == ["digits", "run"]
    env = {e["name"]: e["value"] for e in c["env"]}
    config = config_lib.from_sources([], environ=env)  # what `digits run` makes of the CronJob's env
    assert (config.pipeline_root, config.serving_dir) == ("/var/lib/digits/pipeline", "/var/lib/digits/serving")
    stores = {}
    for path in (config.pipeline_root, config.serving_dir):
        mount, volume = mount_for(job, c, path)
        assert not mount.get("readOnly") and not volume["persistentVolumeClaim"].get("readOnly"), path
        stores[path] = (mount, volume["persistentVolumeClaim"]["claimName"])
    assert stores[config.pipeline_root][1] == "digits-pipeline"
    assert stores[config.serving_dir][1] == "digits-serving"
    assert build.get("PersistentVolumeClaim", "digits-pipeline")
    # The Pusher's <serving_dir>/<model> is, inside the claim, the directory tf-serving reads.
    pushed = posixpath.relpath(config.model_serving_dir, stores[config.serving_dir][0]["mountPath"])
    spec = serving_pod(build)
    read_mount, _ = mount_for(spec, container(spec, "tf-serving"), serving_options(build).model_base_path)
    assert pushed == posixpath.relpath(serving_options(build).model_base_path, read_mount["mountPath"])


def test_quiet_nights_succeed_and_bad_data_fails_the_job_without_retries(builds):
    from pipeline.runs import outcomes
    job = builds["local"].get("CronJob", "digits-pipeline")["spec"]["jobTemplate"]["spec"]
    assert job["template"]["spec"]["restartPolicy"] == "Never"  # podFailurePolicy needs it
    (fail,) = [r for r in job["podFailurePolicy"]["rules"] if r["action"] == "FailJob"]
    no_retry = set(fail["onExitCodes"]["values"])
    assert fail["onExitCodes"]["operator"] == "In" and fail["onExitCodes"]["containerName"] == "pipeline"
    assert no_retry == {2, outcomes.EXIT_CODES["stopped_by_data_validation"], outcomes.EXIT_CODES["not_servable"]}
    quiet = ("pushed", "already_served", "not_blessed")
    assert all(outcomes.EXIT_CODES[o] == 0 for o in quiet), "a quiet night is a successful Job"
    assert outcomes.EXIT_CODES["error"] not in no_retry and job["backoffLimit"] >= 1


def test_scheduled_runs_follow_the_config_schedule_one_at_a_time(builds):
    cron = builds["local"].get("CronJob", "digits-pipeline")["spec"]
    assert cron["schedule"] == CONFIG.schedule
    assert cron["timeZone"] in ("Etc/UTC", "UTC")  # the config's schedule is in UTC
    assert cron["concurrencyPolicy"] == "Forbid"
    assert 0 < cron["startingDeadlineSeconds"] <= 900, "a missed run is skipped, not caught up hours later"
    assert cron["successfulJobsHistoryLimit"] >= 1 and cron["failedJobsHistoryLimit"] >= 1
    job = cron["jobTemplate"]["spec"]
    assert 0 < job["activeDeadlineSeconds"] <= 4 * 3600
    assert job["template"]["spec"]["restartPolicy"] in ("Never", "OnFailure")
    (c,) = job["template"]["spec"]["containers"]
    assert c["image"] == CONFIG.pipeline_image  # the image the Kubeflow tasks run in


def test_prod_serves_from_the_bucket_the_kubeflow_pusher_writes(builds):
    prod, base = builds["prod"], builds["base"]
    assert serving_options(prod).model_base_path == CONFIG.kfp_serving_dir.rstrip("/") + "/" + MODEL
    spec = serving_pod(prod)
    assert not any("persistentVolumeClaim" in v for v in spec["volumes"])
    annotations = prod.get("ServiceAccount", "tf-serving")["metadata"].get("annotations", {})
    assert annotations.get("iam.gke.io/gcp-service-account", "").endswith(".iam.gserviceaccount.com")
    hpa, base_hpa = (b.get("HorizontalPodAutoscaler", "tf-serving")["spec"] for b in (prod, base))
    assert hpa["minReplicas"] >= 2 and hpa["minReplicas"] > base_hpa["minReplicas"]
    assert hpa["maxReplicas"] > base_hpa["maxReplicas"]
    keys = {t["topologyKey"] for t in spec["topologySpreadConstraints"]}
    assert {"topology.kubernetes.io/zone", "kubernetes.io/hostname"} <= keys
    for constraint in spec["topologySpreadConstraints"]:
        assert constraint["labelSelector"]["matchLabels"] == SERVING_LABELS
    assert spec["affinity"]["podAntiAffinity"]
    assert not prod.all("CronJob"), "prod schedules runs with Kubeflow Pipelines, not the CronJob"


@each_build
def test_web_app_is_a_model_client_of_the_tf_serving_service(builds, name):
    """digits-web's env, read by web/config.py as the app reads it, names the tf-serving Service's REST
    port and the served model; the tf-serving policy admits its pods; probes and Service use /healthz, 8080."""
    from serving.client.model_client import split_target
    from web import config as web_config

    build = builds[name]
    deployment = build.get("Deployment", "digits-web")
    spec = pod_spec(deployment)
    c = container(spec, "web")
    assert c["image"].startswith("ghcr.io/digits-ml/digits-web:") and c["imagePullPolicy"] == "Always"
    config = web_config.from_sources([], environ={e["name"]: e["value"] for e in c["env"]})
    assert config.model_name == MODEL
    host, port = split_target(config.server, 8501)
    serving_ports = {p["name"]: p["port"] for p in build.get("Service", "tf-serving")["spec"]["ports"]}
    assert (host, port) == ("tf-serving", serving_ports["http"])
    assert {p["name"]: p["containerPort"] for p in c["ports"]} == {"http": config.port} == {"http": 8080}
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert labels.get("digits.dev/model-client") == "true"
    (clients,) = [rule for rule in build.get("NetworkPolicy", "tf-serving")["spec"]["ingress"]
                  if "digits.dev/model-client" in repr(rule["from"])]
    assert clients["from"][0]["podSelector"]["matchLabels"].items() <= labels.items()
    assert 8501 in [p["port"] for p in clients["ports"]]
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        get = c[probe]["httpGet"]
        assert (get["path"], port_number(c, get["port"])) == ("/healthz", 8080), probe
    service = build.get("Service", "digits-web")["spec"]
    assert service["selector"].items() <= labels.items()
    (service_port,) = service["ports"]
    assert service_port["port"] == 8080 and port_number(c, service_port["targetPort"]) == 8080
    policy = build.get("NetworkPolicy", "digits-web")["spec"]
    assert policy["podSelector"]["matchLabels"].items() <= labels.items()
    assert [p["port"] for rule in policy["ingress"] for p in rule["ports"]] == [8080]
    assert spec["automountServiceAccountToken"] is False and spec["serviceAccountName"] == "digits-web"

