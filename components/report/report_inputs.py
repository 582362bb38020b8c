"""What the run report reads from other components' artifacts, beyond the Evaluator's overall verdict.

Each reader returns plain dicts and lists (JSON-ready, for summary.json too) and ``None`` or an
empty result when its artifact lacks the file, so that the page can say what is missing instead of
the component failing after a run whose model is already pushed.
"""
from __future__ import annotations

import os
from typing import Any, Dict, List, Optional

import tensorflow as tf
import tensorflow_model_analysis as tfma
from tensorflow_model_analysis.writers import eval_config_writer
from tfx.types import artifact_utils

from components.artifact_files import read_json
from components.evaluation.eval_config import ACCURACY_METRIC
from components.data.features import LABEL_KEY
from components.training.model import HISTORY_FILE, HPARAMS_FILE
from components.pusher import NEW_VERSION_PROPERTY


def training_history(model_run_uri: str) -> Optional[Dict[str, Any]]:
    """The Trainer's Keras History (``{"epoch": [...], "history": {name: [...]}}``), or None if absent."""
    return read_json(model_run_uri, HISTORY_FILE)


def training_hparams(model_run_uri: str) -> Optional[Dict[str, Any]]:
    """The Trainer's hparams.json: {field: {"value", "source"}} (default, tuned, config, or the flag or
    variable that set it), or None for a model trained before it was written."""
    return read_json(model_run_uri, HPARAMS_FILE)


def split_sizes(statistics) -> Dict[str, int]:
    """Examples per split, as StatisticsGen counted them; a split without statistics is left out."""
    import tensorflow_data_validation as tfdv  # heavy; only when the component runs

    sizes = {}
    for split in artifact_utils.decode_split_names(statistics.split_names):
        path = os.path.join(statistics.uri, f"Split-{split}", "FeatureStats.pb")
        if tf.io.gfile.exists(path):
            sizes[split] = int(tfdv.load_stats_binary(path).datasets[0].num_examples)
    return sizes


def push_outcome(pushed_model) -> Dict[str, Any]:
    """What our Pusher recorded: pushed or not, the version, and whether that version is new."""
    def string(name):
        return pushed_model.get_string_custom_property(name) if pushed_model.has_custom_property(name) else None

    pushed = pushed_model.has_custom_property("pushed") and bool(pushed_model.get_int_custom_property("pushed"))
    new = (not pushed_model.has_custom_property(NEW_VERSION_PROPERTY)
           or bool(pushed_model.get_int_custom_property(NEW_VERSION_PROPERTY)))
    return {"pushed": pushed, "version": string("pushed_version") if pushed else None,
            "destination": string("pushed_destination") if pushed else None, "new_version": pushed and new}


def _slice_digit(slice_key) -> Optional[int]:
    """The digit of a ``label`` slice, None for the overall slice (which has no keys)."""
    for single in slice_key.single_slice_keys:
        if single.column == LABEL_KEY:
            kind = single.WhichOneof("kind")
            value = getattr(single, kind)
            return int(value.decode() if isinstance(value, bytes) else value)
    return None


def accuracy_by_model(evaluation_uri: str) -> Dict[str, Dict[str, float]]:
    """TFMA's accuracy per model (``candidate``, and ``baseline`` when there was one) and per slice:
    ``{"candidate": {"overall": a, "0": a0, ...}, "baseline": {...}}``."""
    result: Dict[str, Dict[str, float]] = {"candidate": {}, "baseline": {}}
    for slice_metrics in tfma.load_metrics(evaluation_uri):
        digit = _slice_digit(slice_metrics.slice_key)
        if digit is None and slice_metrics.slice_key.single_slice_keys:
            continue  # a source slice (components/evaluation/eval_config.py)
        name = "overall" if digit is None else str(digit)
        for entry in slice_metrics.metric_keys_and_values:
            key = entry.key
            if key.is_diff or key.name != ACCURACY_METRIC:
                continue
            model = "baseline" if key.model_name == "baseline" else "candidate"
            result[model][name] = entry.value.double_value.value
    return result


def accuracy_thresholds(evaluation_uri: str) -> Dict[str, Optional[float]]:
    """The gate's accuracy floor and allowed drop, from the eval config the Evaluator wrote."""
    thresholds: Dict[str, Optional[float]] = {"floor": None, "max_drop": None}
    try:
        eval_config = eval_config_writer.load_eval_run(evaluation_uri)[0]
    except (IOError, OSError, ValueError, tf.errors.NotFoundError):
        return thresholds
    if eval_config is None:
        return thresholds
    for spec in eval_config.metrics_specs:
        for metric in spec.metrics:
            if metric.class_name != "SparseCategoricalAccuracy":
                continue
            for per_slice in metric.per_slice_thresholds:
                if any(spec.ListFields() for spec in per_slice.slicing_specs):
                    continue  # a source slice's threshold; these are the overall slice's
                threshold = per_slice.threshold
                if threshold.value_threshold.HasField("lower_bound"):
                    thresholds["floor"] = threshold.value_threshold.lower_bound.value
                if threshold.change_threshold.HasField("absolute"):
                    thresholds["max_drop"] = -threshold.change_threshold.absolute.value
    return thresholds


def deciding_threshold(accuracy: Optional[float], baseline: Optional[float], thresholds: Dict[str, Optional[float]],
                       blessed: bool) -> str:
    """Which threshold decided: the one that failed, or when both passed the stricter one."""
    floor, max_drop = thresholds.get("floor"), thresholds.get("max_drop")
    if baseline is None or max_drop is None:
        return "floor"
    change_bound = baseline - max_drop
    if not blessed and accuracy is not None:
        below_floor = floor is not None and accuracy < floor
        dropped = accuracy < change_bound
        if below_floor and dropped:
            return "both"
        return "floor" if below_floor else "change"
    return "floor" if floor is not None and floor >= change_bound else "change"


def comparison(evaluation_uri: str, blessed: bool) -> Dict[str, Any]:
    """Candidate against baseline, overall and per digit, with the thresholds and the one that decided."""
    accuracy = accuracy_by_model(evaluation_uri)
    thresholds = accuracy_thresholds(evaluation_uri)
    candidate, baseline = accuracy["candidate"], accuracy["baseline"]
    rows: List[Dict[str, Any]] = []
    for name in ["overall"] + sorted((k for k in candidate if k != "overall"), key=int):
        rows.append({"slice": name, "candidate": candidate.get(name), "baseline": baseline.get(name)})
    return {"rows": rows, "has_baseline": bool(baseline), **thresholds,
            "decided_by": deciding_threshold(candidate.get("overall"), baseline.get("overall"), thresholds, blessed)}
