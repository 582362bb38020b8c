import gzip
import os

import numpy as np
import pytest

from components.data import mnist_source
from components.data.mnist_source import DataSourceError
from tests.conftest import make_idx_dir, write_idx


def test_package_gives_the_three_splits_with_original_bytes(package_splits):
    sizes = {name: len(split.labels) for name, split in package_splits.items()}
    assert sizes == {"train": 50_000, "eval": 10_000, "test": 10_000}
    for split in package_splits.values():
        assert split.images.dtype == np.uint8 and split.images.shape[1] == 784
        assert split.labels.dtype == np.int64 and set(np.unique(split.labels)) == set(range(10))
    # pixels are k/256 in the pickle: rescaling must land exactly on integers, the original bytes
    with gzip.open(os.path.join(mnist_source.package_data_dir(), mnist_source.PACKAGE_DATA_FILE)) as f:
        import pickle
        floats = pickle.load(f, encoding="latin1")[2][0][:100]
    assert np.array_equal(floats * 256.0, package_splits["test"].images[:100].astype(np.float32))
    assert package_splits["train"].images.max() == 255


@pytest.mark.parametrize("gz", [True, False])
def test_idx_directory_round_trips(tmp_path, small_images, gz):
    train_images, train_labels, test_images, test_labels = small_images
    directory = make_idx_dir(tmp_path / "idx", *small_images, gz=gz)
    splits = mnist_source.load_splits(directory, False)
    # the last sixth of the training file is the eval split, as 10,000 of the official 60,000
    assert {k: len(v.labels) for k, v in splits.items()} == {"train": 500, "eval": 100, "test": 100}
    assert np.array_equal(splits["train"].images, train_images[:500].reshape(500, 784))
    assert np.array_equal(splits["eval"].labels, train_labels[500:])
    assert np.array_equal(splits["test"].images, test_images.reshape(100, 784))


def test_subset_takes_the_leading_rows(package_splits):
    part = mnist_source.subset(package_splits["eval"], 7)
    assert np.array_equal(part.labels, package_splits["eval"].labels[:7])
    assert mnist_source.subset(package_splits["eval"], 0) is package_splits["eval"]


def _corrupt(idx_dir, name, data: bytes):
    path = os.path.join(idx_dir, name + ".gz")
    with gzip.open(path, "wb") as f:
        f.write(data)
    return path


def test_wrong_magic_number_names_the_file(idx_dir):
    path = _corrupt(idx_dir, "train-images-idx3-ubyte", b"\x00\x00\x0d\x03" + bytes(12))
    with pytest.raises(DataSourceError, match="wrong magic number 0x00000d03") as error:
        mnist_source.load_splits.__wrapped__(idx_dir, False)
    assert path in str(error.value)


def test_truncated_file_names_the_file_and_sizes(idx_dir, small_images):
    with gzip.open(os.path.join(idx_dir, "t10k-images-idx3-ubyte.gz")) as f:
        data = f.read()
    path = _corrupt(idx_dir, "t10k-images-idx3-ubyte", data[:-10])
    with pytest.raises(DataSourceError, match="truncated") as error:
        mnist_source.load_splits.__wrapped__(idx_dir, False)
    assert path in str(error.value) and str(len(data) - 10) in str(error.value)


def test_header_shorter_than_its_dimensions(idx_dir):
    _corrupt(idx_dir, "train-labels-idx1-ubyte", b"\x00\x00\x08\x01\x00")
    with pytest.raises(DataSourceError, match="truncated: the header"):
        mnist_source.load_splits.__wrapped__(idx_dir, False)


def test_image_and_label_counts_must_agree(idx_dir, small_images):
    write_idx(os.path.join(idx_dir, "t10k-labels-idx1-ubyte.gz"), small_images[3][:99])
    with pytest.raises(DataSourceError, match="holds 100 images but .* holds 99 labels"):
        mnist_source.load_splits.__wrapped__(idx_dir, False)


def test_missing_file_lists_what_is_needed(idx_dir):
    os.remove(os.path.join(idx_dir, "t10k-labels-idx1-ubyte.gz"))
    with pytest.raises(DataSourceError, match="t10k-labels-idx1-ubyte\\[.gz\\] is missing"):
        mnist_source.load_splits.__wrapped__(idx_dir, False)
