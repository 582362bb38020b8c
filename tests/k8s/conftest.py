"""Fixtures for the k8s/ checks: the three kustomize builds, rendered once per session, and the
validators, which `make test` (or `make k8s-validate`) installs into .venv-tools from
requirements-tools.lock and names with DIGITS_TOOLS_BIN. A missing tool fails its test; nothing skips."""
from __future__ import annotations

import dataclasses
import os
import pathlib
import shutil
import subprocess

import pytest
import yaml

REPO = pathlib.Path(__file__).resolve().parents[2]
K8S = REPO / "k8s"
BUILDS = {"base": K8S / "base", "local": K8S / "overlays" / "local", "prod": K8S / "overlays" / "prod"}
WORKLOAD_KINDS = ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "CronJob", "Pod")


def tools_bin() -> pathlib.Path:
    return pathlib.Path(os.environ.get("DIGITS_TOOLS_BIN") or REPO / ".venv-tools" / "bin")


def tool(name: str) -> str:
    """The path of a validator from the tools venv, or a failure that says how to install it."""
    path = tools_bin() / name
    if not os.access(path, os.X_OK):
        pytest.fail(f"{name} is not in {tools_bin()}: run `make test` or `make k8s-validate`, which install the "
                    f"k8s validators into .venv-tools from requirements-tools.lock (or point DIGITS_TOOLS_BIN "
                    f"at a directory that has them)", pytrace=False)
    return str(path)


def kubectl() -> str:
    path = shutil.which("kubectl")
    if path is None:
        pytest.fail("kubectl is not on PATH: install kubectl 1.27 or newer (it builds k8s/ with its own "
                    "kustomize), e.g. from Debian's or Kubernetes' packages", pytrace=False)
    return path


def run(command: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(command, check=False, capture_output=True, text=True, timeout=600, cwd=REPO, **kwargs)


def pod_spec(obj: dict) -> dict | None:
    """The pod spec a workload object runs, wherever its kind keeps it."""
    kind, spec = obj["kind"], obj.get("spec", {})
    if kind == "Pod":
        return spec
    if kind == "CronJob":
        return spec["jobTemplate"]["spec"]["template"]["spec"]
    if kind in WORKLOAD_KINDS:
        return spec["template"]["spec"]
    return None


@dataclasses.dataclass(frozen=True)
class Build:
    """One `kubectl kustomize` output: the file it was written to and its objects."""
    name: str
    path: pathlib.Path
    objects: list[dict]

    def all(self, kind: str) -> list[dict]:
        return [obj for obj in self.objects if obj["kind"] == kind]

    def get(self, kind: str, name: str) -> dict:
        found = [obj for obj in self.all(kind) if obj["metadata"]["name"] == name]
        assert len(found) == 1, f"{self.name}: expected one {kind} {name!r}, found {len(found)}"
        return found[0]

    def workloads(self) -> list[dict]:
        return [obj for obj in self.objects if obj["kind"] in WORKLOAD_KINDS]


@pytest.fixture(scope="session")
def rendered_dir(tmp_path_factory) -> pathlib.Path:
    return tmp_path_factory.mktemp("rendered")


@pytest.fixture(scope="session")
def builds(rendered_dir) -> dict[str, Build]:
    """base, local and prod rendered by `kubectl kustomize` into <tmp>/rendered/<name>.yaml."""
    result = {}
    for name, directory in BUILDS.items():
        proc = run([kubectl(), "kustomize", str(directory)])
        if proc.returncode != 0:
            pytest.fail(f"kubectl kustomize {directory.relative_to(REPO)} failed:\n{proc.stderr}", pytrace=False)
        path = rendered_dir / f"{name}.yaml"
        path.write_text(proc.stdout)
        objects = [obj for obj in yaml.safe_load_all(proc.stdout) if obj]
        result[name] = Build(name, path, objects)
    return result
