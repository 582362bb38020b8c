"""The whole pipeline in a temp directory on a small subset: every component, ML Metadata, the
pushed version, the cache, and the gates that keep a bad model or bad data from being served."""
import dataclasses
import hashlib
import html
import json
import os
import re

import numpy as np
import pytest
import tensorflow as tf
from ml_metadata import metadata_store
from ml_metadata.proto import metadata_store_pb2

from components.validation.example_validator import DataAnomaliesError
from pipeline.runs import local_runner, outcomes
from pipeline.config import PipelineConfig
from tests.conftest import SMALL_RUN, make_idx_dir

COMPONENTS = {"ImportSchemaGen", "MnistExampleGen", "StatisticsGen", "SpanValidator", "ExampleValidator", "Transform",
              "Trainer", "latest_blessed_model_resolver", "latest_hyperparameters_resolver", "Evaluator",
              "InfraValidator", "Pusher", "RunReport"}
UPSTREAM_OF_EVALUATOR = {"ImportSchemaGen", "MnistExampleGen", "StatisticsGen", "SpanValidator", "ExampleValidator",
                         "Transform", "Trainer"}


def snapshot(directory):
    """Every file under ``directory`` with a hash of its bytes: 'byte-for-byte unchanged' made testable."""
    files = {}
    for root, _, names in os.walk(directory):
        for name in names:
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                files[os.path.relpath(path, directory)] = hashlib.sha256(f.read()).hexdigest()
    return files


def mlmd_executions(config):
    connection = metadata_store_pb2.ConnectionConfig()
    connection.sqlite.filename_uri = config.metadata_path
    store = metadata_store.MetadataStore(connection)
    result = {}
    for context in store.get_contexts_by_type("node"):
        executions = store.get_executions_by_context(context.id)
        result[context.name.split(".", 1)[1]] = sorted(executions, key=lambda e: e.id)
    return result


def test_every_component_ran_and_is_recorded_in_ml_metadata(pipeline_run):
    config, summary = pipeline_run
    assert {c.node_id: c.state for c in summary.components} == {name: "COMPLETE" for name in COMPONENTS}
    executions = mlmd_executions(config)
    assert set(executions) == COMPONENTS
    for name, runs in executions.items():
        assert [e.last_known_state for e in runs] == [metadata_store_pb2.Execution.COMPLETE], name


def test_the_infra_validator_served_the_model_before_it_was_pushed(pipeline_run):
    """The real digits-model-server loaded the candidate and answered canaries on its three signatures over
    gRPC and REST as the model itself does; only then did the Pusher push it."""
    _, summary = pipeline_run
    assert summary.infra == {"blessed": True, "reason": "", "canary_calls": 6}
    assert "InfraValidator: served by the model server; 6 canary calls" in summary.render() and summary.pushed


def test_the_pushed_version_loads_and_reads_digits(pipeline_run, package_splits):
    config, summary = pipeline_run
    assert summary.pushed and summary.verdict["blessed"] and not summary.verdict["has_baseline"]
    versions = os.listdir(config.model_serving_dir)
    assert versions == [summary.pushed_version] and summary.pushed_version.isdigit()  # no staging left
    model = tf.saved_model.load(os.path.join(config.model_serving_dir, summary.pushed_version))
    images = package_splits["test"].images[:100].reshape(100, 28, 28).astype(np.float32)
    classes = model.signatures["serving_default"](images=tf.constant(images))["classes"].numpy()
    assert (classes == package_splits["test"].labels[:100]).mean() > 0.6


def test_the_pushed_version_carries_warmup_requests_for_every_signature(pipeline_run):
    """Trainer's run_fn writes TF Serving's warmup file (components/training/warmup_requests.py) from
    training digits."""
    from tensorflow_serving.apis import prediction_log_pb2

    config, summary = pipeline_run
    path = os.path.join(config.model_serving_dir, summary.pushed_version, "assets.extra", "tf_serving_warmup_requests")
    logs = [prediction_log_pb2.PredictionLog.FromString(r) for r in tf.data.TFRecordDataset(path).as_numpy_iterator()]
    names = [getattr(log, log.WhichOneof("log_type")).request.model_spec.signature_name for log in logs]
    assert sorted(names) == sorted(["classify", "serving_default", "serving_examples"] * 2)


def test_run_report_and_summary(pipeline_run):
    _, summary = pipeline_run
    with open(summary.report_path) as f:
        report = f.read()
    assert report.count("data:image/png;base64,") == 4  # training curves, confusion, per digit, wrong digits
    assert "Confusion matrix" in report and "most confidently wrong" in report
    assert "Hyper-parameters and code version" in report
    for field in ("epochs", "batch_size", "hidden_units", "learning_rate", "seed", "train_splits", "code_version"):
        assert f"<th>{field}</th>" in report, field
    with open(os.path.join(os.path.dirname(summary.report_path), "summary.json")) as f:
        figures = json.load(f)
    assert figures["example_count"] == 500
    # TFMA's accuracy and the report's own count over all predictions agree
    assert abs(figures["accuracy"] - figures["report_accuracy"]) < 1e-6
    text = summary.render()
    assert f"pushed: version {summary.pushed_version}" in text and "no blessed model existed yet" in text


def test_run_report_shows_curves_sizes_push_comparison_and_component_times(pipeline_run):
    config, summary = pipeline_run
    with open(summary.report_path) as f:
        report = f.read()
    with open(os.path.join(os.path.dirname(summary.report_path), "summary.json")) as f:
        figures = json.load(f)
    assert report.count("data:image/png;base64,") == 4  # + training curves; no baseline, so no grouped bars
    assert "alt='training curves'" in report and "No training history" not in report
    assert "No validation series" in report  # the default trains on train + eval: nothing held out
    assert not re.search(r"src=['\"]https?:", report)
    # StatisticsGen's counts: what ExampleGen kept of each split; the Trainer fits on train + eval
    assert figures["split_sizes"] == {"train": 2000, "eval": 500, "test": 500}
    assert figures["train_splits"] == ["train", "eval"] and figures["train_examples"] == config.train_examples
    for split, count in figures["split_sizes"].items():
        assert f"<td>{split}</td><td>{count:,}</td><td>{'no' if split == 'test' else 'yes'}</td>" in report
    assert f"Training set: <b>{config.train_examples:,}</b> examples (train + eval)" in report
    (served,) = os.listdir(config.model_serving_dir)
    assert served == summary.pushed_version and f"pushed as version {served}" in report
    assert "no baseline model: the floor alone decided" in report and "accuracy floor 0.5000" in report
    assert "<td>digit 9</td>" in report and figures["thresholds"]["floor"] == 0.5
    assert "Component times are added when the run ends" in report

    completed = outcomes.complete_report(config.pipeline_root, summary)
    assert completed.report_path == os.path.join(config.pipeline_root, "runs", summary.run_id, "report.html")
    with open(completed.report_path) as f:
        page = f.read()
    assert "Component times are added" not in page and "<th>component</th><th>state</th><th>seconds</th>" in page
    for component in summary.components:
        assert f"<td>{component.node_id}</td><td>{component.state.lower()}</td>" in page, component.node_id
    assert html.escape(summary.run_id) in page and f"report: {completed.report_path}" in completed.render()
    with open(outcomes.write(config.pipeline_root, summary.run_id, "pushed", completed)) as f:
        record = json.load(f)
    assert record["report"] == completed.report_path
    assert record["split_sizes"] == figures["split_sizes"] and record["train_examples"] == config.train_examples


def test_second_identical_run_hits_the_cache_and_pushes_nothing_new(pipeline_run):
    config, first = pipeline_run
    before = snapshot(config.serving_dir)
    second = local_runner.run(config)
    states = {c.node_id: c.state for c in second.components}
    assert {name: states[name] for name in UPSTREAM_OF_EVALUATOR} == {name: "CACHED" for name in UPSTREAM_OF_EVALUATOR}
    # The Evaluator now has a baseline (the first run's model, which is this same model): it runs,
    # blesses, and the Pusher sees the newest version already serves it.
    assert second.verdict["has_baseline"] and second.verdict["blessed"]
    assert second.pushed_version == first.pushed_version and snapshot(config.serving_dir) == before
    assert first.pushed_new and not second.pushed_new
    assert f"pushed: nothing new; version {first.pushed_version}" in second.render()


def test_a_model_below_the_floor_is_not_pushed(pipeline_run):
    config, _ = pipeline_run
    before = snapshot(config.serving_dir)
    summary = local_runner.run(dataclasses.replace(config, accuracy_floor=0.999))
    assert not summary.verdict["blessed"] and not summary.pushed
    assert any("below the floor 0.9990" in reason for reason in summary.verdict["reasons"])
    assert snapshot(config.serving_dir) == before


def test_a_model_much_worse_than_the_blessed_one_is_not_pushed(pipeline_run):
    config, _ = pipeline_run
    before = snapshot(config.serving_dir)
    worse = dataclasses.replace(config, hidden_units=(1,), epochs=1, accuracy_floor=0.0)
    summary = local_runner.run(worse)
    assert not summary.verdict["blessed"] and not summary.pushed
    assert any("a significant drop (McNemar p = " in reason for reason in summary.verdict["reasons"]), summary.verdict
    assert snapshot(config.serving_dir) == before


@pytest.mark.parametrize("corruption, feature", [("label_of_10", "label"), ("image_of_783_values", "image")])
def test_corrupt_data_stops_the_run_at_validation_naming_the_span(pipeline_run, small_images, tmp_path, corruption, feature):
    config, _ = pipeline_run
    train_images, train_labels, test_images, test_labels = (np.array(a) for a in small_images)
    if corruption == "label_of_10":
        test_labels[3] = 10
    else:  # 27 x 29 = 783 pixels per image
        train_images = train_images.reshape(-1, 784)[:, :783].reshape(-1, 27, 29)
    data_dir = make_idx_dir(tmp_path / corruption, train_images, train_labels, test_images, test_labels)
    serving_before, executions_before = snapshot(config.serving_dir), mlmd_executions(config)

    with pytest.raises(Exception) as raised:
        local_runner.run(dataclasses.replace(config, data_source=data_dir))
    error = raised.value
    while not isinstance(error, DataAnomaliesError) and (error.__cause__ or error.__context__):
        error = error.__cause__ or error.__context__
    assert isinstance(error, DataAnomaliesError)
    assert "span 0 (mnist): " in str(error) and f"feature '{feature}'" in str(error)

    executions_after = mlmd_executions(config)  # SpanValidator runs first: ExampleValidator waits on it
    assert executions_after["SpanValidator"][-1].last_known_state == metadata_store_pb2.Execution.FAILED
    assert len(executions_after["Transform"]) == len(executions_before["Transform"])  # stopped before it
    for name, runs in executions_before.items():  # earlier metadata intact
        assert [e.id for e in executions_after[name][:len(runs)]] == [e.id for e in runs]
    assert snapshot(config.serving_dir) == serving_before


@pytest.fixture(scope="module")
def served_baseline_runs(tmp_path_factory):
    """Two runs with the served model as baseline (baseline=serving-dir), in a temp dir of their
    own: the first finds nothing served and pushes; the second trains a much worse model (one hidden
    unit, one epoch) and may drop no accuracy at all against the served version."""
    root = tmp_path_factory.mktemp("served_baseline")
    config = PipelineConfig(pipeline_root=str(root / "root"), serving_dir=str(root / "serving"),
                            data_root=str(root / "data"), baseline="serving-dir", **SMALL_RUN)
    first = local_runner.run(config)
    served_after_first = snapshot(config.serving_dir)
    worse = dataclasses.replace(config, hidden_units=(1,), epochs=1, accuracy_floor=0.0, max_accuracy_drop=0.0)
    second = local_runner.run(worse)
    return config, first, served_after_first, second


def test_served_baseline_replaces_the_resolver_and_the_first_run_gates_on_the_floor(served_baseline_runs):
    config, first, _, _ = served_baseline_runs
    assert {c.node_id: c.state for c in first.components} == {
        name: "COMPLETE" for name in COMPONENTS - {"latest_blessed_model_resolver"} | {"served_model_baseline"}}
    assert first.served_version == 0 and not first.verdict["has_baseline"]
    assert first.verdict["blessed"] and first.pushed and os.listdir(config.model_serving_dir) == [first.pushed_version]
    assert f"no model was served yet from {os.path.abspath(config.model_serving_dir)}" in first.render()


def test_a_model_much_worse_than_the_served_one_is_not_pushed(served_baseline_runs):
    config, first, served_after_first, second = served_baseline_runs
    # The Evaluator compared against the served version: the same model on the same test images,
    # so the baseline's accuracy is exactly the first run's.
    assert second.served_version == int(first.pushed_version)
    # Caching is on (the data components are reused), yet the baseline node ran again: its driver put the
    # newly served version into the cache key. A stale cached baseline would be the first run's empty one.
    states = {c.node_id: c.state for c in second.components}
    assert states["MnistExampleGen"] == "CACHED" and states["served_model_baseline"] == "COMPLETE"
    assert second.verdict["has_baseline"] and second.verdict["baseline_accuracy"] == first.verdict["accuracy"]
    assert second.verdict["accuracy"] < first.verdict["accuracy"] - 0.1
    assert not second.verdict["blessed"] and not second.pushed
    assert [reason for reason in second.verdict["reasons"]
            if "a significant drop (McNemar p = " in reason], second.verdict
    assert f"served model's accuracy (version {first.pushed_version})" in second.render()
    assert snapshot(config.serving_dir) == served_after_first


def test_served_baseline_is_cached_while_nothing_new_is_served(served_baseline_runs):
    config, first, served_after_first, second = served_baseline_runs
    third = local_runner.run(config)  # the first run's config again; nothing was pushed since the second
    states = {c.node_id: c.state for c in third.components}
    assert states["served_model_baseline"] == "CACHED" and states["Trainer"] == "CACHED"
    # The candidate is the served model itself: no drop, blessed, and no new version for the same model.
    assert third.served_version == int(first.pushed_version) and third.verdict["has_baseline"]
    assert third.verdict["baseline_accuracy"] == third.verdict["accuracy"] and third.verdict["blessed"]
    assert third.pushed_version == first.pushed_version and snapshot(config.serving_dir) == served_after_first
    assert not third.pushed_new and "pushed: nothing new" in third.render()


def test_digits_runs_lists_each_run_from_ml_metadata(pipeline_run, capsys):
    from pipeline import cli

    from pipeline.runs import run_history
    config, summary = pipeline_run
    runs = run_history.history(config)
    assert [run["run_id"] for run in runs] == sorted(run["run_id"] for run in runs)  # oldest first
    (first,) = [run for run in runs if run["run_id"] == summary.run_id]
    assert first["accuracy"] == summary.verdict["accuracy"] and first["blessed"] is True and not first["failed"]
    assert first["pushed"] and first["pushed_new"] and first["pushed_version"] == int(summary.pushed_version)
    assert first["split_sizes"] == {"train": 2000, "eval": 500, "test": 500} and first["test_examples"] == 500
    assert not [s for s in first["spans"] or [] if s["span"]]  # no span was sealed: MNIST only
    assert first["accuracy_by_source"] == run_history.by_source(summary.verdict)
    assert first["sources"] == summary.verdict.get("sources")
    components = sum(c.seconds for c in summary.components)
    assert 0 < first["seconds"] and first["started"].startswith(summary.run_id[:16])
    assert components * 0.5 <= first["seconds"], (components, first["seconds"])

    assert cli.main(["runs", f"--pipeline-root={config.pipeline_root}"]) == 0
    header, *rows = capsys.readouterr().out.splitlines()
    assert header.split()[:3] == ["run", "id", "started"] and len(rows) == len(runs)
    (row,) = [row for row in rows if row.startswith(summary.run_id + " ")]
    assert "MNIST only" in row and "2,000/500/500" in row and f"{first['accuracy']:.4f}" in row, row
    assert f"version {summary.pushed_version}" in row and " yes " in row, row
    assert header.index("spans") == row.index("MNIST only")  # aligned columns

    assert cli.main(["runs", f"--pipeline-root={config.pipeline_root}", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == runs


def test_a_model_the_server_refuses_is_not_pushed_and_the_summary_says_why(pipeline_run, monkeypatch):
    """A model that trains and evaluates as well as the served one but does not serve: its warmup file (which
    TFMA never reads) is not TFRecord, so the model server refuses to load it, as TF Serving does."""
    from components.training import warmup_requests

    write = warmup_requests.write_warmup_requests

    def corrupt_warmup(export_dir, images, model_name=warmup_requests.WARMUP_MODEL_NAME):
        path = write(export_dir, images, model_name)
        with open(path, "wb") as f:
            f.write(b"these are not warmup records")
        return path
    monkeypatch.setattr(warmup_requests, "write_warmup_requests", corrupt_warmup)

    config, _ = pipeline_run
    before = snapshot(config.serving_dir)
    summary = local_runner.run(dataclasses.replace(config, enable_cache=False))  # retrains the same model
    states = {c.node_id: c.state for c in summary.components}
    assert states["Trainer"] == states["InfraValidator"] == "COMPLETE" and summary.verdict["blessed"]
    assert not summary.infra["blessed"] and not summary.pushed
    assert summary.infra["reason"].startswith("the model server refused the model"), summary.infra
    assert "Please verify your warmup data is in TFRecord format" in summary.infra["reason"]
    assert snapshot(config.serving_dir) == before  # byte for byte
    assert outcomes.of_summary(summary) == "not_servable"
    assert f"InfraValidator: {summary.infra['reason']}" in summary.render()
    assert f"pushed: no; {config.model_serving_dir} is unchanged" in summary.render(), summary.render()
