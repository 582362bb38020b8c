"""The k8s/ validators over the rendered builds and the Dockerfiles: kubernetes-validate (the API
schemas of kubectl's Kubernetes version, strict), checkov (kubernetes and dockerfile; the skips live
in k8s/.checkov.yaml only), yamllint (k8s/.yamllint) and hadolint. Each runs once per session."""
from __future__ import annotations

import json
import pathlib
import re

import pytest
import yaml

from tests.k8s.conftest import K8S, REPO, kubectl, run, tool

DOCKERFILES = sorted((K8S / "images").glob("*.Dockerfile"))


def test_there_are_dockerfiles_to_check():
    assert [p.name for p in DOCKERFILES] == ["pipeline.Dockerfile", "web.Dockerfile"]


@pytest.fixture(scope="session")
def kubernetes_version() -> str:
    """kubectl's Kubernetes minor version, or the nearest one kubernetes-validate has schemas for."""
    proc = run([kubectl(), "version", "--client", "-o", "json"])
    assert proc.returncode == 0, proc.stderr
    major, minor = map(int, re.match(r"v(\d+)\.(\d+)", json.loads(proc.stdout)["clientVersion"]["gitVersion"]).groups())
    tool("kubernetes-validate")
    where = run([tool("python"), "-c", ("import kubernetes_validate, pathlib; "
                 "print(pathlib.Path(kubernetes_validate.__file__).parent / 'kubernetes-json-schema')")])
    assert where.returncode == 0, where.stderr
    schemas = pathlib.Path(where.stdout.strip())
    shipped = {tuple(map(int, m.groups())) for d in schemas.iterdir()
               if (m := re.fullmatch(r"v(\d+)\.(\d+)\.0-local-strict", d.name))}
    nearest = min(shipped, key=lambda v: (abs(v[0] * 100 + v[1] - (major * 100 + minor)), v))
    return f"{nearest[0]}.{nearest[1]}.0"


def test_kubernetes_validate_accepts_every_object_strictly(builds, kubernetes_version):
    files = [str(b.path) for b in builds.values()]
    proc = run([tool("kubernetes-validate"), "--strict", "-k", kubernetes_version, *files])
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    assert not re.search(r"^(ERROR|WARN)", output, re.MULTILINE), output
    objects = sum(len(b.objects) for b in builds.values())
    assert output.count("passed for resource") == objects, output
    assert f"against version {kubernetes_version.rsplit('.', 1)[0]}" in output


def test_kubernetes_validate_is_strict_about_unknown_fields(tmp_path, kubernetes_version):
    """The check above means something: a misspelt field is refused."""
    bad = tmp_path / "bad.yaml"
    bad.write_text("apiVersion: v1\nkind: Service\nmetadata:\n  name: x\nspec:\n  portz: []\n")
    proc = run([tool("kubernetes-validate"), "--strict", "-k", kubernetes_version, str(bad)])
    assert proc.returncode != 0 and "'portz' was unexpected" in proc.stdout + proc.stderr


def test_yamllint_finds_nothing_in_k8s():
    proc = run([tool("yamllint"), "--strict", "-c", str(K8S / ".yamllint"), str(K8S)])
    assert proc.returncode == 0 and not proc.stdout.strip(), proc.stdout + proc.stderr


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint_finds_nothing(dockerfile):
    proc = run([tool("hadolint"), "--no-color", str(dockerfile)])
    assert proc.returncode == 0 and not proc.stdout.strip(), proc.stdout + proc.stderr


@pytest.fixture(scope="session")
def checkov(builds, rendered_dir, tmp_path_factory) -> dict:
    """One checkov run over the rendered builds (kubernetes) and k8s/images (dockerfile): its JSON
    report per framework."""
    out = tmp_path_factory.mktemp("checkov")
    proc = run([tool("checkov"), "--config-file", str(K8S / ".checkov.yaml"), "--skip-download",
                "--framework", "kubernetes", "dockerfile", "-d", str(rendered_dir), "-d", str(K8S / "images"),
                "--quiet", "--compact", "-o", "json", "--output-file-path", str(out)])
    report = out / "results_json.json"
    # Exit 1 means failed checks, which the tests below list; anything else is checkov itself failing.
    assert proc.returncode in (0, 1) and report.exists(), \
        f"checkov failed (exit {proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    reports = json.loads(report.read_text())
    return {r["check_type"]: r for r in (reports if isinstance(reports, list) else [reports])}


@pytest.mark.parametrize("framework", ["kubernetes", "dockerfile"])
def test_checkov_fails_no_check(checkov, framework):
    assert framework in checkov, f"checkov ran no {framework} checks: {sorted(checkov)}"
    report = checkov[framework]
    failed = [f"{c['check_id']} {c['check_name']}: {c['resource']} ({c['file_path']})"
              for c in report["results"].get("failed_checks", [])]
    assert not failed, "\n".join(failed)
    summary = report["summary"]
    assert summary["failed"] == 0 and summary["parsing_errors"] == 0
    assert summary["passed"] > 0 and summary["resource_count"] > 0


def test_checkov_skips_are_listed_once_with_a_reason():
    """k8s/.checkov.yaml holds every skipped check, each under a comment that says why."""
    text = (K8S / ".checkov.yaml").read_text()
    config = yaml.safe_load(text)
    assert set(config) == {"skip-check"}
    lines = text.splitlines()
    for check in config["skip-check"]:
        (index,) = [i for i, line in enumerate(lines) if line.strip() == f"- {check}"]
        assert lines[index - 1].strip().startswith("#"), f"{check} has no reason above it"
    # No other place skips checks: no checkov annotations in the manifests.
    for path in K8S.rglob("*.yaml"):
        assert "checkov.io/skip" not in path.read_text(), path.relative_to(REPO)
