"""The cache key's view of the code: an edited module must change it, other modules must not."""
import sys

from pipeline.pipeline import code_version


def test_editing_a_module_changes_its_code_version(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "digits_probe_a.py").write_text("X = 1\n")
    (tmp_path / "digits_probe_b.py").write_text("Y = 1\n")
    before_a, before_b = code_version("digits_probe_a"), code_version("digits_probe_b")
    assert code_version("digits_probe_a") == before_a  # stable
    (tmp_path / "digits_probe_a.py").write_text("X = 2\n")
    assert code_version("digits_probe_a") != before_a
    assert code_version("digits_probe_b") == before_b
    assert code_version("digits_probe_a", "digits_probe_b") == code_version("digits_probe_b", "digits_probe_a")
    sys.modules.pop("digits_probe_a", None)
