"""Per-span checks of the raw tf.Examples: what cannot be right in a span stops the run.

The curated schema checks each feature's type and range over a whole split, and statistics over a
split cannot see one bad span hidden among 70,000 MNIST digits: a data set of all-zero images
passes ExampleValidator. These checks group the examples by their ``span`` feature (MNIST is span
0) and look at each image itself: blank (no ink), saturated (mostly full ink), pixels or labels out
of range or of the wrong size, one label dominating. Each problem names the span, the feature and
the figures.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Dict, Iterable, Iterator, List, Optional, Tuple

import numpy as np
import tensorflow as tf

from components.data import features

SPAN_KEY = "span"  # int64: 0 for MNIST, else the span number (the tf.Example contract of issue 14)
SOURCE_KEY = "source"  # bytes: "mnist" for the base, else the span's source
MNIST_SOURCE = "mnist"
INK_LEVEL = 64  # a pixel at or above this is ink
BLANK_INK_PIXELS = 10  # fewer ink pixels than this is a blank image (MNIST's fewest: 26)
SATURATED_LEVEL = 192
SATURATED_SHARE = 0.5  # more pixels than this at SATURATED_LEVEL is saturated (MNIST's most: 0.375;
#                        an MNIST-form digit fits in a 20x20 box, at most 51% of the 28x28)
MIN_DOMINANCE_COUNT = 100  # one label's share is judged only in spans of at least this many digits
_BATCH = 1000


@dataclasses.dataclass(frozen=True)
class Thresholds:
    max_blank_share: float = 0.01
    max_saturated_share: float = 0.01
    max_label_share: float = 0.6
    drift_threshold: float = 0.3
    drift_stops_run: bool = False


@dataclasses.dataclass
class Batch:
    """Per-example figures of a block of examples: what the checks need, without the pixels."""

    span: np.ndarray  # int64
    source: List[str]
    label: np.ndarray  # int64; -1 where malformed
    ink_pixels: np.ndarray  # pixels at or above INK_LEVEL
    saturated_share: np.ndarray  # share of pixels at or above SATURATED_LEVEL
    pixels_out_of_range: np.ndarray  # bool: some pixel outside 0..255
    malformed_image: np.ndarray  # bool: not exactly 784 pixels (no figures: ink 0, not counted blank)
    malformed_label: np.ndarray  # bool: not exactly one label

    @property
    def mean_ink(self) -> np.ndarray:
        return self.ink_pixels / features.NUM_PIXELS


def summarize_images(images: np.ndarray, labels: np.ndarray, spans: np.ndarray, sources: Iterable[str],
                     malformed_image=None, malformed_label=None) -> Batch:
    """``images``: [N, 784] (or [N, 28, 28]) integers, any range."""
    pixels = np.asarray(images, dtype=np.int64).reshape(len(labels), -1)
    no = np.zeros(len(labels), dtype=bool)
    return Batch(span=np.asarray(spans, dtype=np.int64), source=list(sources),
                 label=np.asarray(labels, dtype=np.int64),
                 ink_pixels=(pixels >= INK_LEVEL).sum(axis=1),
                 saturated_share=(pixels >= SATURATED_LEVEL).mean(axis=1),
                 pixels_out_of_range=((pixels < 0) | (pixels > 255)).any(axis=1),
                 malformed_image=no if malformed_image is None else np.asarray(malformed_image, dtype=bool),
                 malformed_label=no if malformed_label is None else np.asarray(malformed_label, dtype=bool))


def _dense(ragged: tf.RaggedTensor, width: int, fill: int) -> Tuple[np.ndarray, np.ndarray]:
    """Rows of exactly ``width`` values as an [N, width] array (others all ``fill``), and which were not."""
    lengths = ragged.row_lengths().numpy()
    well_formed = lengths == width
    dense = np.full((len(lengths), width), fill, dtype=np.int64)
    if well_formed.any():
        kept = tf.ragged.boolean_mask(ragged, tf.constant(well_formed))
        dense[well_formed] = kept.flat_values.numpy().reshape(-1, width)
    return dense, ~well_formed


def read_examples(examples_uri: str, split_names: Iterable[str]) -> Iterator[Batch]:
    """Every example of the splits, in blocks. Images or labels of the wrong size are counted, not
    fatal. Examples written before spans existed (no ``span`` or ``source`` feature) are MNIST's."""
    spec = {
        features.IMAGE_KEY: tf.io.RaggedFeature(tf.int64),
        features.LABEL_KEY: tf.io.RaggedFeature(tf.int64),
        SPAN_KEY: tf.io.FixedLenFeature([], tf.int64, default_value=0),
        SOURCE_KEY: tf.io.FixedLenFeature([], tf.string, default_value=MNIST_SOURCE.encode()),
    }
    for split in split_names:
        files = tf.io.gfile.glob(os.path.join(examples_uri, f"Split-{split}", "*"))
        if not files:
            continue
        for serialized in tf.data.TFRecordDataset(sorted(files), compression_type="GZIP").batch(_BATCH):
            parsed = tf.io.parse_example(serialized, spec)
            images, bad_images = _dense(parsed[features.IMAGE_KEY], features.NUM_PIXELS, 0)
            labels, bad_labels = _dense(parsed[features.LABEL_KEY], 1, -1)
            yield summarize_images(images, labels.reshape(-1), parsed[SPAN_KEY].numpy(),
                                   [s.decode() for s in parsed[SOURCE_KEY].numpy()], bad_images, bad_labels)


def concatenate(batches: Iterable[Batch]) -> Batch:
    batches = list(batches)
    if not batches:
        return summarize_images(np.zeros((0, features.NUM_PIXELS)), np.zeros(0), np.zeros(0), [])
    return Batch(*(np.concatenate([getattr(b, f.name) for b in batches]) if f.name != "source"
                   else [s for b in batches for s in b.source] for f in dataclasses.fields(Batch)))


def span_name(span: int, source: str) -> str:
    return f"span {span} ({source})"


def percent(share: float) -> str:
    return f"{share * 100:.3g}%"


def span_figures(batch: Batch) -> List[Dict]:
    """One dict per span, ascending: counts of each kind of bad image, labels, mean ink."""
    result = []
    for span in sorted(set(batch.span.tolist())):
        rows = batch.span == span
        sources = sorted({s for s, r in zip(batch.source, rows) if r})
        labels = batch.label[rows & ~batch.malformed_label]
        in_range = labels[(labels >= 0) & (labels < features.NUM_CLASSES)]
        per_label = np.bincount(in_range, minlength=features.NUM_CLASSES)
        result.append({
            "span": int(span),
            "source": ",".join(sources),
            "count": int(rows.sum()),
            "blank": int((rows & ~batch.malformed_image & (batch.ink_pixels < BLANK_INK_PIXELS)).sum()),
            "saturated": int((rows & (batch.saturated_share > SATURATED_SHARE)).sum()),
            "pixels_out_of_range": int(batch.pixels_out_of_range[rows].sum()),
            "malformed_images": int(batch.malformed_image[rows].sum()),
            "labels_out_of_range": int(len(labels) - len(in_range)),
            "malformed_labels": int(batch.malformed_label[rows].sum()),
            "per_label": {str(d): int(n) for d, n in enumerate(per_label)},
            "mean_ink": float(batch.mean_ink[rows].mean()),
        })
    return result


def problems_of(figures: Dict, thresholds: Thresholds) -> List[str]:
    """What cannot be right in one span, one sentence each (empty: the span passes)."""
    name, count = span_name(figures["span"], figures["source"]), figures["count"]
    image, label = features.IMAGE_KEY, features.LABEL_KEY
    problems = []

    def share_check(key: str, what: str, allowed: float) -> None:
        n = figures[key]
        if count and n / count > allowed:
            problems.append(f"{name}: {n} of {count} images are {what} ({percent(n / count)}, allowed "
                            f"{percent(allowed)}) — feature '{image}'")

    share_check("blank", "blank", thresholds.max_blank_share)
    share_check("saturated", "saturated", thresholds.max_saturated_share)
    if figures["malformed_images"]:
        problems.append(f"{name}: {figures['malformed_images']} of {count} images do not hold exactly "
                        f"{features.NUM_PIXELS} pixels — feature '{image}'")
    if figures["pixels_out_of_range"]:
        problems.append(f"{name}: {figures['pixels_out_of_range']} of {count} images have pixel values outside "
                        f"0..255 — feature '{image}'")
    if figures["malformed_labels"]:
        problems.append(f"{name}: {figures['malformed_labels']} of {count} examples do not hold exactly one "
                        f"label — feature '{label}'")
    if figures["labels_out_of_range"]:
        problems.append(f"{name}: {figures['labels_out_of_range']} of {count} labels are outside "
                        f"0..{features.NUM_CLASSES - 1} — feature '{label}'")
    labelled = sum(figures["per_label"].values())
    if labelled >= MIN_DOMINANCE_COUNT:
        top, n = max(figures["per_label"].items(), key=lambda item: (item[1], -int(item[0])))
        if n / labelled > thresholds.max_label_share:
            problems.append(f"{name}: label {top} is {n} of {labelled} digits ({percent(n / labelled)}, allowed "
                            f"{percent(thresholds.max_label_share)}) — feature '{label}'")
    drift = figures.get("drift")
    if thresholds.drift_stops_run and drift and drift["exceeds"]:
        problems.append(f"{name}: the label distribution drifted from the earlier data by L∞ "
                        f"{drift['label_linf']:.2f} (threshold {drift['threshold']:.2f}; --drift-stops-run is on)"
                        f" — feature '{label}'")
    return problems


def split_by_span(batch: Batch) -> Iterator[Tuple[int, Optional[Batch], Batch]]:
    """(span, everything before it, the span) for every span after the first; malformed labels left out."""
    batch = _rows(batch, ~batch.malformed_label)
    spans = sorted(set(batch.span.tolist()))
    for span in spans[1:]:
        yield span, _rows(batch, batch.span < span), _rows(batch, batch.span == span)


def _rows(batch: Batch, rows: np.ndarray) -> Batch:
    return Batch(*(getattr(batch, f.name)[rows] if f.name != "source"
                   else [s for s, r in zip(batch.source, rows) if r] for f in dataclasses.fields(Batch)))


def drift_lines(checks: Dict) -> List[str]:
    """The run summary's drift lines from span_checks.json: one per span beyond the threshold,
    else one saying the largest."""
    drifted = [s for s in checks.get("spans", []) if s.get("drift")]
    if not drifted:
        return []
    stops = checks.get("thresholds", {}).get("drift_stops_run")
    over = [s for s in drifted if s["drift"]["exceeds"]]
    if not over:
        top = max(drifted, key=lambda s: s["drift"]["label_linf"])
        return [f"drift: label distributions within L∞ {top['drift']['threshold']:.2f} of earlier data "
                f"(largest: span {top['span']}, {top['drift']['label_linf']:.2f})"]
    return [f"drift: span {s['span']} label distribution L∞ {s['drift']['label_linf']:.2f} vs earlier data "
            f"(threshold {s['drift']['threshold']:.2f}; {'stopping' if stops else 'not stopping'})" for s in over]
