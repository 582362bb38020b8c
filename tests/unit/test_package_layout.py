"""components/ and pipeline/ are grouped by concern (STYLE: a folder past ~16 modules gets sub-packages),
and every sub-package is a real package an installed wheel carries (setup.py's find_packages)."""
import pathlib

from setuptools import find_packages

REPO = pathlib.Path(__file__).resolve().parents[2]


def _packages(top: str) -> list:
    return [REPO / top] + [p for p in (REPO / top).rglob("*") if (p / "__init__.py").exists()]


def test_no_package_of_components_or_pipeline_holds_more_than_sixteen_modules():
    for top in ("components", "pipeline"):
        packages = _packages(top)
        assert len(packages) > 2, f"{top}/ is split into sub-packages by concern"
        for package in packages:
            modules = [m for m in package.glob("*.py") if m.name != "__init__.py"]
            assert len(modules) <= 16, f"{package.relative_to(REPO)} has {len(modules)} modules"


def test_every_folder_with_modules_is_a_package_setup_py_finds():
    found = set(find_packages(str(REPO), include=["pipeline", "pipeline.*", "components", "components.*"]))
    for top in ("components", "pipeline"):
        for folder in [REPO / top, *(p for p in (REPO / top).rglob("*") if p.is_dir())]:
            if folder.name != "__pycache__" and any(folder.glob("*.py")):
                dotted = ".".join(folder.relative_to(REPO).parts)
                assert (folder / "__init__.py").exists() and dotted in found, f"{dotted} is not a package"
