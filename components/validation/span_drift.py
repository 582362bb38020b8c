"""Drift of each span against the data before it, measured by TFDV's drift comparators.

Feedback is naturally skewed toward the digits the model gets wrong, so a shifted label
distribution can be legitimate: it is measured and shown, and stops a run only when configured.
In TFX 1.16 ExampleValidator runs no drift comparison (it sees one statistics artifact), so this
computes statistics per span with TFDV and compares each span with everything before it: the
L-infinity distance of the label distributions (gated by ``drift_threshold``) and, for the record,
the Jensen-Shannon divergence of the per-image ink.
"""
from __future__ import annotations

from typing import Dict

import pandas as pd
import tensorflow_data_validation as tfdv
from tensorflow_metadata.proto.v0 import anomalies_pb2, schema_pb2

from components.data import features
from components.validation.span_validation import Batch, split_by_span

INK = "ink"  # share of ink pixels per image, a derived feature for the comparison only


def drift_schema(threshold: float) -> schema_pb2.Schema:
    """Labels as categories (so TFDV counts each digit) with an L-infinity comparator; ink with a
    Jensen-Shannon one (its threshold only decides TFDV's anomaly, which nothing acts on)."""
    schema = schema_pb2.Schema()
    label = schema.feature.add(name=features.LABEL_KEY, type=schema_pb2.INT)
    label.int_domain.is_categorical = True
    label.drift_comparator.infinity_norm.threshold = threshold
    ink = schema.feature.add(name=INK, type=schema_pb2.FLOAT)
    ink.drift_comparator.jensen_shannon_divergence.threshold = 1.0
    return schema


def _statistics(batch: Batch, schema: schema_pb2.Schema):
    frame = pd.DataFrame({features.LABEL_KEY: batch.label, INK: batch.mean_ink.astype(float)})
    return tfdv.generate_statistics_from_dataframe(frame, tfdv.StatsOptions(schema=schema), n_jobs=1)


def _measurement(anomalies: anomalies_pb2.Anomalies, feature: str, kind) -> float:
    for info in anomalies.drift_skew_info:
        if list(info.path.step) == [feature]:
            for measurement in info.drift_measurements:
                if measurement.type == kind:
                    return float(measurement.value)
    raise LookupError(f"TFDV measured no drift of feature '{feature}'")


def compare(earlier: Batch, current: Batch, threshold: float) -> Dict:
    """The drift of ``current`` against ``earlier``: label L-infinity (TFDV), whether it exceeds
    ``threshold``, the digit whose share moved most, and the ink's Jensen-Shannon divergence."""
    schema = drift_schema(threshold)
    anomalies = tfdv.validate_statistics(_statistics(current, schema), schema,
                                         previous_statistics=_statistics(earlier, schema))
    linf = _measurement(anomalies, features.LABEL_KEY, anomalies_pb2.DriftSkewInfo.Measurement.L_INFTY)
    shares = {}
    for name, batch in (("earlier", earlier), ("current", current)):
        counts = pd.Series(batch.label).value_counts()
        shares[name] = counts / max(counts.sum(), 1)
    moved = (shares["current"].sub(shares["earlier"], fill_value=0)).abs()
    return {
        "label_linf": linf,
        "threshold": threshold,
        "exceeds": linf > threshold,
        "label_most_changed": int(moved.idxmax()) if len(moved) else None,
        "ink_jsd": _measurement(anomalies, INK, anomalies_pb2.DriftSkewInfo.Measurement.JENSEN_SHANNON_DIVERGENCE),
        "earlier_mean_ink": float(earlier.mean_ink.mean()),
    }


def span_drifts(batch: Batch, threshold: float) -> Dict[int, Dict]:
    """The drift of every span after the first against all spans before it."""
    return {span: compare(earlier, current, threshold) for span, earlier, current in split_by_span(batch)}
