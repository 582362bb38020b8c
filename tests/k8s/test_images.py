"""k8s/images/pipeline.Dockerfile and the root .dockerignore (the build context is the repository):
what the Kubeflow tasks, Dataflow and the scheduled-runs CronJob rely on the image to hold."""
from __future__ import annotations

import fnmatch
import shlex

from pipeline.config import PipelineConfig
from tests.k8s.conftest import K8S, REPO

CONFIG = PipelineConfig()


def instructions(path) -> list:
    """(INSTRUCTION, text) pairs, continuation lines joined and comments dropped."""
    result, pending = [], ""
    for line in path.read_text().splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        text = (pending + line).strip()
        pending = ""
        keyword, _, rest = text.partition(" ")
        result.append((keyword.upper(), rest.strip()))
    return result


def test_pipeline_image_holds_the_repository_where_the_config_says():
    steps = instructions(K8S / "images" / "pipeline.Dockerfile")
    keywords = [k for k, _ in steps]
    assert [t for k, t in steps if k == "FROM"] == ["python:3.10.13-slim-bookworm"]
    assert "ENTRYPOINT" not in keywords, "TFX's Kubeflow launcher sets the command; an ENTRYPOINT would wrap it"
    (user,) = [t for k, t in steps if k == "USER"]
    uid, _, gid = user.partition(":")
    assert int(uid) > 10000 and (not gid or int(gid) > 10000)
    assert keywords.index("USER") > max(i for i, k in enumerate(keywords) if k == "RUN"), "installs run as root"
    (workdir,) = [t for k, t in steps if k == "WORKDIR"]
    assert workdir == CONFIG.image_source_dir
    assert CONFIG.dataflow_setup_file == f"{CONFIG.image_source_dir}/setup.py"
    copies = [t for k, t in steps if k == "COPY"]
    assert copies[0].split()[0] == "requirements.lock", "the locked dependencies get a layer of their own"
    assert copies[-1] == f". {CONFIG.image_source_dir}"
    runs = [t for k, t in steps if k == "RUN"]
    assert any("-r /tmp/requirements.lock" in r and "--no-cache-dir" in r for r in runs)
    editable = [r for r in runs if f"-e {CONFIG.image_source_dir}" in r]
    assert editable and "--no-deps" in editable[0] and "--no-build-isolation" in editable[0]
    env = dict(item.split("=", 1) for k, t in steps if k == "ENV" for item in shlex.split(t))
    assert env["TF_USE_LEGACY_KERAS"] == "1" and env["PYTHONUNBUFFERED"] == "1"
    assert env["HOME"] == "/tmp", "a writable HOME under the read-only root filesystem (an emptyDir in the pods)"
    assert (REPO / "components" / "schema" / "schema.pbtxt").exists()


def test_dockerignore_keeps_outputs_out_and_sources_in():
    patterns = [line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]

    def ignored(path: str) -> bool:
        parts = path.split("/")
        prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
        return any(fnmatch.fnmatch(p, pattern.removeprefix("**/")) or fnmatch.fnmatch(p, pattern)
                   for pattern in patterns for p in prefixes + parts)

    for path in (".git/HEAD", ".venv/bin/python", ".venv-tools/bin/checkov", "artifacts/serving/mnist/1",
                 "build/kfp/pipeline.json", "tests/artifacts/x", "serving/__pycache__/core.cpython-310.pyc"):
        assert ignored(path), path
    for path in ("setup.py", "requirements.lock", "components/schema/schema.pbtxt", "pipeline/cli.py",
                 "serving/model_servers/monitoring.config"):
        assert not ignored(path), path


def _components_used() -> list:
    """Every components/ module web/ imports (anywhere), directly or through another's module-level imports
    (the store's lazy ones, ML Metadata for `digits data drop`, are not the app's), with the __init__.py of
    each package on the way (components/, components/data/)."""
    import ast

    def files(dotted: str) -> list:
        """The files importing ``dotted`` runs: each enclosing package's __init__.py, then the module."""
        parts, result = dotted.split("."), []
        for i in range(1, len(parts) + 1):
            base = REPO.joinpath(*parts[:i])
            result.append(base / "__init__.py" if (base / "__init__.py").exists() else base.with_suffix(".py"))
        return [p for p in result if p.exists()]

    found, todo = set(), list((REPO / "web").glob("*.py"))
    while todo:
        path = todo.pop()
        tree = ast.parse(path.read_text())
        for node in (ast.walk(tree) if path.parent.name == "web" else tree.body):
            modules = []
            if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] == "components":
                modules = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
            elif isinstance(node, ast.Import):
                modules = [a.name for a in node.names if a.name.split(".")[0] == "components"]
            for module in modules:
                for used in files(module):
                    if used not in found:
                        found.add(used)
                        todo.append(used)
    return sorted(found)


SPAN_STORE = _components_used()


def _third_party_imports(path, module_level_only: bool) -> set:
    """Top-level names of the modules ``path`` imports that are neither the standard library nor ours."""
    import ast
    import sys

    tree = ast.parse(path.read_text())
    nodes = tree.body if module_level_only else list(ast.walk(tree))
    names = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return {n for n in names if n not in sys.stdlib_module_names
            and n not in ("__future__", "serving", "web", "components")}


def test_web_image_installs_what_the_app_imports_at_the_locked_versions():
    steps = instructions(K8S / "images" / "web.Dockerfile")
    keywords = [k for k, _ in steps]
    assert [t for k, t in steps if k == "FROM"] == ["python:3.10.13-slim-bookworm"]
    (user,) = [t for k, t in steps if k == "USER"]
    uid, _, gid = user.partition(":")
    assert int(uid) > 10000 and (not gid or int(gid) > 10000)
    assert keywords.index("USER") > max(i for i, k in enumerate(keywords) if k == "RUN"), "installs run as root"
    (install,) = [t for k, t in steps if k == "RUN" and "pip install" in t]
    words = shlex.split(install.split("&&")[0])
    assert "--no-cache-dir" in words and words[words.index("-c") + 1] == "/tmp/requirements.lock"
    packages = {w for w in words[words.index("install") + 1:] if not w.startswith("-") and "/" not in w}
    assert packages == {"numpy", "pillow", "fastapi", "uvicorn"}
    locked = {line.split("==")[0].lower() for line in (REPO / "requirements.lock").read_text().splitlines()
              if "==" in line}
    assert packages <= locked, "every package the image installs is pinned by the lock"
    # What web/ imports, and serving's client and image code at module level (gRPC is imported lazily).
    imported = set()
    for path in (REPO / "web").glob("*.py"):
        imported |= _third_party_imports(path, module_level_only=False)
    for path in [*(REPO / "serving" / "client").glob("*.py"), *SPAN_STORE]:
        imported |= _third_party_imports(path, module_level_only=True)
    provided = {"numpy", "PIL", "fastapi", "starlette", "anyio", "uvicorn"}  # starlette, anyio come with fastapi
    assert imported <= provided, f"web.Dockerfile does not install {sorted(imported - provided)}"
    copies = [t for k, t in steps if k == "COPY"]
    assert copies[0] == "requirements.lock /tmp/requirements.lock"
    folders = sorted({p.parent for p in SPAN_STORE})  # one COPY per folder: COPY puts its sources side by side
    store = {" ".join([*(str(p.relative_to(REPO)) for p in SPAN_STORE if p.parent == folder),
                       f"/opt/digits/{folder.relative_to(REPO)}/"]) for folder in folders}
    assert {"serving/__init__.py /opt/digits/serving/__init__.py", "serving/client /opt/digits/serving/client",
            *store, "web /opt/digits/web"} == {" ".join(c.split()) for c in copies[1:]}, \
        "the app, the client, the span store (what web/ imports from components/), not the server"
    assert REPO / "components" / "data" / "spans.py" in SPAN_STORE
    assert REPO / "components" / "__init__.py" in SPAN_STORE and REPO / "components" / "data" / "__init__.py" in SPAN_STORE
    (workdir,) = [t for k, t in steps if k == "WORKDIR"]
    assert workdir == "/opt/digits"
    env = dict(item.split("=", 1) for k, t in steps if k == "ENV" for item in shlex.split(t))
    assert env["HOME"] == "/tmp" and env["DIGITS_UI_PORT"] == "8080" and env["DIGITS_UI_HOST"] == "0.0.0.0"
    assert [t for k, t in steps if k == "CMD"] == ['["python", "-m", "web"]']
    (healthcheck,) = [t for k, t in steps if k == "HEALTHCHECK"]
    assert "/healthz" in healthcheck
