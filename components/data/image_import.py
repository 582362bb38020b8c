"""Labelled digits from the user's files, in MNIST form, for ``digits data add``.

Two layouts are read:

* a folder as Keras' ``image_dataset_from_directory`` reads it: ``PATH/<label>/.../<name>.png`` (also
  .jpg, .jpeg, .bmp, .gif), one folder per digit 0..9;
* IDX files as MNIST is released: ``PATH`` is an images file (``*-images-idx3-ubyte[.gz]``, its labels
  file ``*-labels-idx1-ubyte[.gz]`` beside it) or a folder holding such pairs.

Every image goes through ``serving.client.mnist_image``, the preparation ``digits predict`` uses, so a
span holds exactly what the model would see. What cannot become a digit is rejected with the reason, and
so is what the model would likely misread (a digit far smaller than MNIST's, several marks in one image):
a training label must be sure.
"""
from __future__ import annotations

import os
from typing import List, NamedTuple, Tuple

import numpy as np

from components.data.mnist_source import DataSourceError, read_idx
from serving.client.mnist_image import ImageError, load_checked, to_mnist_checked

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif")  # Keras' image_dataset_from_directory's
_IMAGES_IDX, _LABELS_IDX = "images-idx3-ubyte", "labels-idx1-ubyte"


class Imported(NamedTuple):
    images: np.ndarray            # uint8 [N, 28, 28], MNIST form
    labels: np.ndarray            # int64 [N]
    rejects: List[Tuple[str, str]]  # (file, reason)
    files: List[str]              # where each accepted digit came from: a path, or path[i] in an IDX file


def import_path(path: str) -> Imported:
    """The digits under ``path`` (a label-folder tree, an IDX images file, or a folder of IDX pairs)."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise DataSourceError(f"{path} does not exist: give a folder of label folders 0..9 holding images, "
                              f"or an MNIST IDX images file with its labels file beside it")
    if os.path.isfile(path):
        return _collect(_idx_pair(path))
    idx = sorted(name for name in os.listdir(path) if _IMAGES_IDX in name)
    if idx:
        return _collect([item for name in idx for item in _idx_pair(os.path.join(path, name))])
    return _collect(_folder(path))


def _collect(items) -> Imported:
    """``items``: (file, label, float image or None, reason or None)."""
    images, labels, files, rejects = [], [], [], []
    for name, label, image, reason in items:
        if reason is not None:
            rejects.append((name, reason))
        else:
            images.append(np.rint(np.clip(image, 0, 255)).astype(np.uint8))
            labels.append(label)
            files.append(name)
    stacked = np.stack(images) if images else np.zeros((0, 28, 28), np.uint8)
    return Imported(stacked, np.asarray(labels, np.int64), rejects, files)


def _prepared(name: str, label: int, item) -> tuple:
    """One prepared image (mnist_image.Prepared) as an item; a warning rejects it too."""
    if item.error is not None:
        return name, label, None, str(item.error)
    if item.warnings:
        return name, label, None, "; ".join(item.warnings)
    return name, label, item.image, None


def _folder(root: str):
    found = False
    for entry in sorted(os.listdir(root)):
        path = os.path.join(root, entry)
        if entry.startswith("."):
            continue
        if not os.path.isdir(path):
            yield path, -1, None, (f"not in a label folder: put it in {os.path.join(root, '<digit>')}/ "
                                   f"(folders 0..9 name the label)")
            continue
        for directory, subdirs, names in os.walk(path, followlinks=True):
            subdirs[:] = sorted(d for d in subdirs if not d.startswith("."))
            for name in sorted(n for n in names if not n.startswith(".")):
                found = True
                file = os.path.join(directory, name)
                if not (len(entry) == 1 and entry.isdigit()):
                    yield file, -1, None, f"label folder {entry!r} is not a digit 0..9: rename it to the digit it holds"
                elif not name.lower().endswith(IMAGE_EXTENSIONS):
                    yield file, -1, None, f"not an image file: expected {', '.join(IMAGE_EXTENSIONS)}"
                else:
                    for item in load_checked(file):
                        yield _prepared(file, int(entry), item)
    if not found:
        raise DataSourceError(f"{root} holds no label folders with files: lay it out as {root}/<digit>/<name>.png "
                              f"(folders 0..9), or give MNIST IDX files")


def _idx_pair(images_path: str) -> list:
    base = os.path.basename(images_path)
    if _IMAGES_IDX not in base:
        raise DataSourceError(f"{images_path} is neither a folder nor an IDX images file (*-{_IMAGES_IDX}[.gz]); "
                              f"give a folder of label folders 0..9, or an MNIST IDX images file")
    labels_path = os.path.join(os.path.dirname(images_path), base.replace(_IMAGES_IDX, _LABELS_IDX))
    if not os.path.exists(labels_path):
        other = labels_path[:-3] if labels_path.endswith(".gz") else labels_path + ".gz"
        if not os.path.exists(other):
            raise DataSourceError(f"{images_path} has no labels file beside it: expected {labels_path} "
                                  f"(or {os.path.basename(other)})")
        labels_path = other
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim != 3:
        raise DataSourceError(f"{images_path}: expected 3 dimensions (count, rows, columns), header gives {images.ndim}")
    if labels.ndim != 1 or len(labels) != len(images):
        raise DataSourceError(f"{images_path} holds {len(images)} images but {labels_path} holds "
                              f"{len(labels) if labels.ndim == 1 else labels.shape} labels: they must be a pair")
    items = []
    for i, (image, label) in enumerate(zip(images, labels)):
        name = f"{images_path}[{i}]"
        if label > 9:
            items.append((name, -1, None, f"label {label} in {labels_path} is not a digit 0..9"))
            continue
        try:
            prepared, warnings = to_mnist_checked(image, name)
        except ImageError as error:
            items.append((name, int(label), None, str(error)))
            continue
        items.append((name, int(label), None, "; ".join(warnings)) if warnings else (name, int(label), prepared, None))
    return items
