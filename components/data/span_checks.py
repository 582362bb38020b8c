"""What the span store accepts, checked before anything is written, and the split of a digit.

Every refusal is a ValueError whose message says what was wrong and how to fix it: the page's feedback
API turns them into 400s, ``digits data add`` into one line.
"""
from __future__ import annotations

import datetime
import hashlib
import io
import re
from typing import Dict, Sequence

import numpy as np

SOURCE_MNIST = "mnist"
SIZE = 28
_SOURCE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,39}$")


class SpanError(ValueError):
    """A span that cannot be read or changed; the message says which and what to do."""


class SpanInUseError(SpanError):
    """Dropping a span that runs trained on; ``runs`` names them."""

    def __init__(self, span: int, runs: Sequence[str]) -> None:
        super().__init__(f"span {span} was used by runs {', '.join(runs)}; --force removes it anyway; "
                         f"those runs' models keep what they learned")
        self.span, self.runs = span, list(runs)


def split_of(image: np.ndarray) -> str:
    """'train', 'eval' or 'test' from the sha256 of the 784 pixel bytes alone (80/10/10): the same image
    lands in the same split whatever span, label or metadata it comes with."""
    pixels = np.asarray(image)
    if pixels.dtype != np.uint8 or pixels.size != SIZE * SIZE:
        raise ValueError(f"split_of takes the 28x28 uint8 pixels of one digit, got dtype {pixels.dtype} and "
                         f"shape {list(pixels.shape)}")
    bucket = int.from_bytes(hashlib.sha256(np.ascontiguousarray(pixels).tobytes()).digest()[:8], "big") % 100
    return "train" if bucket < 80 else "eval" if bucket < 90 else "test"


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def check_image(image, what: str = "image") -> np.ndarray:
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.shape != (SIZE, SIZE):
        got = (f"dtype {image.dtype} and shape {list(image.shape)}" if isinstance(image, np.ndarray)
               else type(image).__name__)
        raise ValueError(f"{what} must be a uint8 array of shape [28, 28] (a digit in MNIST form, as "
                         f"serving.client.mnist_image prepares it), got {got}; round and cast with "
                         f"np.rint(x).astype(np.uint8)")
    return image


def check_label(label, what: str = "label", allow_none: bool = False) -> int:
    """The label as an int (-1 for None when allowed)."""
    if label is None and allow_none:
        return -1
    if isinstance(label, (bool, np.bool_)) or not isinstance(label, (int, np.integer)) or not 0 <= label <= 9:
        raise ValueError(f"{what} must be a digit 0..9, got {label!r}")
    return int(label)


def check_version(model_version) -> None:
    if model_version is not None and (isinstance(model_version, (bool, np.bool_)) or not isinstance(
            model_version, (int, np.integer)) or model_version < 0):
        raise ValueError(f"model_version must be a version number (0 or more) or None, got {model_version!r}")


def check_source(source: str) -> str:
    """``source`` if it can name a span's data (a tf.Example feature and an Evaluator slice), else ValueError."""
    if not isinstance(source, str) or not _SOURCE.match(source) or source == SOURCE_MNIST:
        raise ValueError(f"source must be a short name of letters, digits, '.', '_' or '-' (up to 40, not "
                         f"{SOURCE_MNIST!r}, which is the base data set), such as 'feedback' or 'scans', got {source!r}")
    return source


def check_batch(images, labels) -> np.ndarray:
    """Images uint8 [N, 28, 28] (N >= 1) and N labels 0..9; returns the labels as int64."""
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.ndim != 3 \
            or images.shape[1:] != (SIZE, SIZE) or len(images) == 0:
        got = (f"dtype {images.dtype} and shape {list(images.shape)}" if isinstance(images, np.ndarray)
               else type(images).__name__)
        raise ValueError(f"images must be a non-empty uint8 array [N, 28, 28] of digits in MNIST form, got {got}")
    labels = np.asarray(labels)
    if labels.shape != (len(images),) or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be {len(images)} integers, one per image, got dtype {labels.dtype} and "
                         f"shape {list(labels.shape)}")
    bad = np.nonzero((labels < 0) | (labels > 9))[0]
    if bad.size:
        raise ValueError(f"labels must be digits 0..9; label {labels[bad[0]]} at index {bad[0]} is not "
                         f"({bad.size} such)")
    return labels.astype(np.int64)


def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def per_label(labels: np.ndarray) -> Dict[int, int]:
    counts = np.bincount(np.asarray(labels, np.int64), minlength=10)
    return {digit: int(counts[digit]) for digit in range(10)}
