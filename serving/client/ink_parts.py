"""Measurements of the ink that mnist_image decides on: connected parts, how far apart they lie, and how
rough an image is from one pixel to the next. Plain NumPy: the client side does not need SciPy."""
from __future__ import annotations

import math
from typing import List

import numpy as np


def pool(array: np.ndarray, factor: int, reduce) -> np.ndarray:
    """``reduce`` (np.max, np.sum) over factor×factor blocks, the edge padded with zeros."""
    if factor == 1:
        return array
    height, width = array.shape
    padded = np.zeros((-(-height // factor) * factor, -(-width // factor) * factor), array.dtype)
    padded[:height, :width] = array
    return reduce(padded.reshape(padded.shape[0] // factor, factor, -1, factor), axis=(1, 3))


def components(mask: np.ndarray) -> np.ndarray:
    """8-connected labels: each pixel takes its neighbourhood's smallest index until nothing changes."""
    height, width = mask.shape
    none = height * width
    labels = np.where(mask, np.arange(none).reshape(height, width), none)
    while True:
        padded = np.pad(labels, 1, constant_values=none)
        smallest = labels.copy()
        for dy in range(3):
            for dx in range(3):
                np.minimum(smallest, padded[dy:dy + height, dx:dx + width], out=smallest)
        smallest = np.where(mask, smallest, none)
        flat = np.append(smallest.ravel(), none)
        smallest = np.where(mask, flat[smallest], none)  # pointer jumping: far fewer rounds
        if np.array_equal(smallest, labels):
            return labels
        labels = smallest


def part_boxes(labels: np.ndarray, parts: np.ndarray) -> np.ndarray:
    """[len(parts), 4]: top, bottom, left, right (inclusive) of each labelled part; ``parts`` sorted."""
    ys, xs = np.nonzero(np.isin(labels, parts))
    index = np.searchsorted(parts, labels[ys, xs])
    boxes = np.empty((len(parts), 4), np.int64)
    boxes[:, [0, 2]] = np.iinfo(np.int64).max
    boxes[:, [1, 3]] = -1
    for column, values, reduce in ((0, ys, np.minimum), (1, ys, np.maximum), (2, xs, np.minimum),
                                   (3, xs, np.maximum)):
        reduce.at(boxes[:, column], index, values)
    return boxes


def side_by_side(boxes: np.ndarray, weights: np.ndarray, share: float) -> int:
    """How many marks lie side by side: parts whose columns overlap are one mark (a 5's separate bar,
    a 4 drawn in two strokes); marks lighter than ``share`` of the heaviest (a stray dot) do not count."""
    groups: List[List[float]] = []  # [right edge, weight], left to right
    for i in np.argsort(boxes[:, 2], kind="stable"):
        left, right = boxes[i, 2], boxes[i, 3]
        if groups and left <= groups[-1][0]:
            groups[-1][0] = max(groups[-1][0], right)
            groups[-1][1] += weights[i]
        else:
            groups.append([right, weights[i]])
    heaviest = max(weight for _, weight in groups)
    return sum(weight >= share * heaviest for _, weight in groups)


def roughness(gray: np.ndarray) -> float:
    """Robust standard deviation of one pixel's noise, from neighbour differences: grain and noise are
    rough, paper and gentle shading are smooth (differences of independent noise have √2 its spread)."""
    steps = np.concatenate([np.abs(np.diff(gray, axis=0)).ravel(), np.abs(np.diff(gray, axis=1)).ravel()])
    return 1.4826 * float(np.median(steps)) / math.sqrt(2) if steps.size else 0.0
