"""serving/ is grouped by concern; the client side (serving/client) stands apart from the server, so
the web app and ``digits predict`` depend on the client only (ARCHITECTURE.md's import rules)."""
import ast
import pathlib

REPO = pathlib.Path(__file__).resolve().parents[2]


def _serving_imports(path: pathlib.Path) -> set:
    """Every ``serving.*`` module a file imports, at any level (lazy imports count)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names if a.name.split(".")[0] == "serving"}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module.split(".")[0] == "serving":
                names |= {f"{node.module}.{a.name}" if node.module == "serving" else node.module
                          for a in node.names}
    return names


def test_the_client_imports_no_server_code():
    for path in (REPO / "serving" / "client").glob("*.py"):
        outside = {n for n in _serving_imports(path) if not n.startswith("serving.client")}
        assert not outside, f"{path.name} imports server modules {sorted(outside)}"


def test_the_web_app_depends_on_the_client_only():
    for path in (REPO / "web").glob("*.py"):
        outside = {n for n in _serving_imports(path) if not n.startswith("serving.client")}
        assert not outside, f"web/{path.name} imports {sorted(outside)}"


def test_no_package_of_serving_holds_more_than_sixteen_modules():
    packages = [REPO / "serving"] + [p for p in (REPO / "serving").iterdir() if (p / "__init__.py").exists()]
    assert len(packages) > 5, "serving/ is split into sub-packages by concern"
    for package in packages:
        modules = [m for m in package.glob("*.py") if m.name != "__init__.py"]
        assert len(modules) <= 16, f"{package.relative_to(REPO)} has {len(modules)} modules"
