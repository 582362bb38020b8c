"""The data volume of issue 14 in the kustomize builds: digits-web writes feedback to the claim digits-data
at /data (its root filesystem is read-only), the scheduled runs read the same claim, and prod requires a
feedback token from a Secret that is created with kubectl, never committed."""
from __future__ import annotations

import posixpath

from pipeline import config as config_lib
from tests.k8s.conftest import pod_spec
from tests.k8s.test_manifests import container, each_build, mount_for


def web_config_of(build):
    """digits-web's container, pod spec and the WebConfig its literal env gives (as the app reads it)."""
    from web import config as web_config

    spec = pod_spec(build.get("Deployment", "digits-web"))
    c = container(spec, "web")
    return c, spec, web_config.from_sources([], environ={e["name"]: e["value"] for e in c["env"]})


@each_build
def test_web_app_writes_feedback_to_the_shared_data_claim(builds, name):
    """The root filesystem is read-only: feedback goes to the claim digits-data at /data, ReadWriteMany so
    the pipeline's pods can mount it too (ReadWriteOnce on the local overlay's one node)."""
    build = builds[name]
    c, spec, config = web_config_of(build)
    assert config.data_root == "/data" and config.feedback
    mount, volume = mount_for(spec, c, config.data_root + "/spans/open")
    assert mount["mountPath"] == "/data" and not mount.get("readOnly")
    assert volume["persistentVolumeClaim"] == {"claimName": "digits-data"}
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    claim = build.get("PersistentVolumeClaim", "digits-data")["spec"]
    assert claim["accessModes"] == (["ReadWriteOnce"] if name == "local" else ["ReadWriteMany"])
    assert claim["resources"]["requests"]["storage"]


def test_scheduled_runs_train_on_the_spans_the_web_app_writes(builds):
    build = builds["local"]
    job = pod_spec(build.get("CronJob", "digits-pipeline"))
    (c,) = job["containers"]
    config = config_lib.from_sources([], environ={e["name"]: e["value"] for e in c["env"]})
    assert config.data_root == "/data"
    mount, volume = mount_for(job, c, config.data_root + "/spans")
    assert mount["mountPath"] == "/data" and not mount.get("readOnly")
    web, web_spec, web_config = web_config_of(build)
    _, web_volume = mount_for(web_spec, web, web_config.data_root)
    assert volume["persistentVolumeClaim"] == web_volume["persistentVolumeClaim"] == {"claimName": "digits-data"}
    assert posixpath.relpath(config.data_root, mount["mountPath"]) == posixpath.relpath(web_config.data_root, "/data")


@each_build
def test_prod_needs_a_feedback_token_from_a_secret_and_commits_none(builds, name):
    build = builds[name]
    c, spec, config = web_config_of(build)
    assert not config.feedback_token, "no token value in the manifests"
    assert not build.all("Secret"), "no Secret is committed: it is created with kubectl (feedback-token.yaml)"
    if name != "prod":
        assert not config.feedback_token_file, f"{name}: feedback from the page needs no token"
        return
    assert config.feedback and config.feedback_token_file == "/var/run/secrets/digits-feedback/token"
    mount, volume = mount_for(spec, c, config.feedback_token_file)
    assert mount.get("readOnly") is True
    secret = volume["secret"]
    assert secret["secretName"] == "digits-web-feedback" and not secret.get("optional"), "no secret, no pod"
    assert secret["items"] == [{"key": "token", "path": posixpath.relpath(config.feedback_token_file,
                                                                          mount["mountPath"])}]
    assert not any("valueFrom" in e for e in c["env"]), "a file, not an environment variable (checkov CKV_K8S_35)"
