"""ServedBaseline: which served version is the baseline, and the copy the Evaluator reads; the
Evaluator dropping a baseline that holds no model."""
import os

import pytest
from tfx.types import standard_artifacts, standard_component_specs
from tfx.utils import path_utils

from components.evaluation import evaluator, served_baseline


def _version(model_dir, name, payload):
    os.makedirs(os.path.join(model_dir, name, "variables"))
    with open(os.path.join(model_dir, name, "saved_model.pb"), "wb") as f:
        f.write(payload)
    with open(os.path.join(model_dir, name, "variables", "variables.index"), "wb") as f:
        f.write(payload + b"-index")


def _files(root):
    found = {}
    for directory, _, names in os.walk(root):
        for name in names:
            with open(os.path.join(directory, name), "rb") as f:
                found[os.path.relpath(os.path.join(directory, name), root)] = f.read()
    return found


def _model_artifact(uri):
    model = standard_artifacts.Model()
    model.uri = str(uri)
    return model


@pytest.fixture
def served(tmp_path):
    """A serving directory as the Pusher leaves it, plus what TF Serving ignores: a staging copy of
    a larger version, a hidden directory, a non-integer name and a stray file."""
    model_dir = str(tmp_path / "serving" / "mnist")
    _version(model_dir, "9", b"nine")
    _version(model_dir, "1700000100", b"newest")
    _version(model_dir, "1700000050", b"older")
    _version(model_dir, ".staging-1800000000", b"half-written")
    _version(model_dir, ".hidden", b"hidden")
    _version(model_dir, "1800000000a", b"not-a-version")
    with open(os.path.join(model_dir, "1900000000"), "w") as f:  # a file, not a version directory
        f.write("stray")
    return model_dir


def test_the_newest_integer_version_is_picked(served):
    assert served_baseline.newest_version(served) == 1700000100


def test_numbers_compare_as_integers_not_text(tmp_path):
    for name in ("9", "10", "100"):
        os.makedirs(tmp_path / name)
    assert served_baseline.newest_version(str(tmp_path)) == 100


@pytest.mark.parametrize("names", [[], [".staging-5", "notes", "5a"]])
def test_no_version_is_zero(tmp_path, names):
    for name in names:
        os.makedirs(tmp_path / name)
    assert served_baseline.newest_version(str(tmp_path)) == 0
    assert served_baseline.newest_version(str(tmp_path / "missing")) == 0


def test_the_version_is_copied_where_the_evaluator_reads_a_model(served, tmp_path):
    uri = str(tmp_path / "baseline")
    target = served_baseline.copy_version(served, 1700000100, uri)
    assert target == path_utils.serving_model_path(uri) == os.path.join(uri, "Format-Serving")
    assert _files(target) == {"saved_model.pb": b"newest", os.path.join("variables", "variables.index"):
                              b"newest-index"}
    assert _files(os.path.join(served, "1700000100")) == _files(target)  # the served copy is untouched


def test_version_zero_writes_nothing(tmp_path):
    uri = tmp_path / "baseline"
    os.makedirs(uri)
    assert served_baseline.copy_version(str(tmp_path / "serving"), 0, str(uri)) is None
    assert os.listdir(uri) == []


@pytest.mark.parametrize("exec_version, expected", [(None, 1700000100), (1700000050, 1700000050), (0, 0)])
def test_executor_copies_the_drivers_version_or_looks_itself(served, tmp_path, exec_version, expected):
    """The driver's version (LocalDagRunner) is what the cache key saw, so it is the one copied;
    without a driver (Kubeflow) the executor looks at the directory itself."""
    baseline = _model_artifact(tmp_path / "baseline")
    os.makedirs(baseline.uri)
    properties = {served_baseline.MODEL_DIR_KEY: served}
    if exec_version is not None:
        properties[served_baseline.SERVED_VERSION_KEY] = exec_version
    served_baseline.Executor().Do({}, {served_baseline.BASELINE_KEY: [baseline]}, properties)
    assert baseline.get_int_custom_property(served_baseline.SERVED_VERSION_KEY) == expected
    payload = {1700000100: b"newest", 1700000050: b"older"}.get(expected)
    assert _files(baseline.uri) == ({} if not expected else {
        os.path.join("Format-Serving", "saved_model.pb"): payload,
        os.path.join("Format-Serving", "variables", "variables.index"): payload + b"-index"})
    assert evaluator.holds_saved_model(baseline) == bool(expected)


def test_driver_records_the_newest_version(served, tmp_path):
    from tfx.orchestration.portable import data_types

    driver = served_baseline.Driver(None)
    for model_dir, expected in ((served, 1700000100), (str(tmp_path / "empty"), 0)):
        output = driver.run(data_types.ExecutionInfo(exec_properties={served_baseline.MODEL_DIR_KEY: model_dir}))
        assert output.exec_properties[served_baseline.SERVED_VERSION_KEY].int_value == expected


@pytest.mark.parametrize("baseline_files, kept", [(None, False), ([], False), (["saved_model.pb"], True)])
def test_evaluator_drops_a_baseline_without_a_model(tmp_path, monkeypatch, baseline_files, kept):
    """No artifact (the resolver found nothing) and an empty one (nothing served) both reach TFX's
    Evaluator as no baseline; a real model passes through."""
    seen = {}
    monkeypatch.setattr(evaluator.evaluator_executor.Executor, "Do",
                        lambda self, inputs, outputs, properties: seen.update(inputs))
    key = standard_component_specs.BASELINE_MODEL_KEY
    inputs = {standard_component_specs.MODEL_KEY: [_model_artifact(tmp_path / "candidate")]}
    if baseline_files is not None:
        baseline = _model_artifact(tmp_path / "baseline")
        os.makedirs(os.path.join(baseline.uri, "Format-Serving"))
        for name in baseline_files:
            open(os.path.join(baseline.uri, "Format-Serving", name), "wb").close()
        inputs[key] = [baseline]
    evaluator.Executor().Do(dict(inputs), {}, {})
    assert (key in seen and seen[key] == inputs[key]) == kept
    assert seen[standard_component_specs.MODEL_KEY] == inputs[standard_component_specs.MODEL_KEY]
