"""TF Serving 2.16 REST responses as JSON text (json_tensor.cc: MakeJsonFromTensors,
MakeJsonFromClassificationResult, MakeJsonFromRegressionResult, the error body)."""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from serving.errors import JsonCodecError
from serving.rest_api.json_arrays import NUMPY_TYPES, WRITABLE_DTYPES
from serving.rest_api.json_floats import float_tokens
from serving.rest_api.json_text import IND, dtype_name, nest, pretty_tensor, quote, string_tokens


def _tokens(a: np.ndarray, dt: str, name: str, depth: int) -> list:
    """Leaf JSON texts; `depth` counts the containers around a leaf (indents b64 objects)."""
    flat = a.ravel()
    if not flat.size:
        return []
    if dt in ("float", "double"):
        return float_tokens(flat.astype(NUMPY_TYPES[dt]), dt == "float")
    if dt == "bool":
        return ["true" if b else "false" for b in flat.astype(bool).tolist()]
    if dt == "string":
        return string_tokens(flat.tolist(), name.endswith("_bytes"), depth)
    return list(map(str, flat.astype(NUMPY_TYPES[dt]).tolist()))


def format_predict_response(outputs: Mapping[str, Any], request_format: str,
                            output_dtypes: Mapping[str, Any] | None = None) -> str:
    """MakeJsonFromTensors(). Names are written sorted (TF Serving uses proto-map order, which is
    unspecified). Missing `output_dtypes` entries are inferred from the arrays."""
    if not outputs:
        raise JsonCodecError("Cannot convert empty tensor map to JSON")
    if request_format not in ("row", "columnar"):
        raise JsonCodecError("Invalid request format")
    names = sorted(outputs)
    arrs = {n: np.asarray(outputs[n]) for n in names}
    dts = {n: dtype_name(output_dtypes[n] if output_dtypes and n in output_dtypes else arrs[n].dtype)
           for n in names}
    row, multi = request_format == "row", len(names) > 1
    if row:
        batch = -1
        for n in names:
            if arrs[n].ndim == 0:
                raise JsonCodecError(f"Tensor name: {n} has no shape information ")
            if batch >= 0 and arrs[n].shape[0] != batch:
                raise JsonCodecError(f"Tensor name: {n} has inconsistent batch size: {arrs[n].shape[0]} "
                                     f"expecting: {batch}")
            batch = arrs[n].shape[0]
    for n in names:
        if dts[n] not in WRITABLE_DTYPES and arrs[n].size:
            raise JsonCodecError(f"Failed to write JSON value for tensor type: {dts[n]}")
    base = (2 if row else 1) + multi  # containers around each tensor's outermost array
    toks = {n: _tokens(arrs[n], dts[n], n, base + arrs[n].ndim - row) for n in names}
    if not row:
        if not multi:
            return '{\n    "outputs": ' + pretty_tensor(toks[names[0]], arrs[names[0]].shape, 1) + "\n}"
        fields = ("\n" + IND * 2 + quote(n) + ": " + pretty_tensor(toks[n], arrs[n].shape, 2) for n in names)
        return '{\n    "outputs": {' + ",".join(fields) + "\n    }\n}"
    rows = {n: nest(toks[n], arrs[n].shape, None) for n in names}
    if not multi:
        items = rows[names[0]]
        return '{\n    "predictions": ' + ("[" + ", ".join(items) + "\n    ]" if items else "[]") + "\n}"
    keys = [(n, "\n" + IND * 3 + quote(n) + ": ") for n in names]
    objs = ["{" + ",".join(key + rows[n][b] for n, key in keys) + "\n" + IND * 2 + "}" for b in range(batch)]
    sep = "\n" + IND * 2
    return '{\n    "predictions": ' + ("[" + sep + ("," + sep).join(objs) + "\n    ]" if objs else "[]") + "\n}"


def format_classify_response(classes, scores) -> str:
    """MakeJsonFromClassificationResult(): [batch, k] labels (bytes/str) and/or float scores; a
    missing side is written as TF Serving's proto defaults ("" and 0.0)."""
    if classes is None and scores is None:
        raise ValueError("need classes or scores")
    lab = None if classes is None else np.asarray(classes, dtype=object)
    val = None if scores is None else np.asarray(scores, dtype=np.float32)
    batch = len(lab if lab is not None else val)
    if batch == 0:
        raise JsonCodecError("Cannot convert empty ClassificationResults to JSON")
    k = (lab if lab is not None else val).reshape(batch, -1).shape[1]
    labels = ['""'] * (batch * k) if lab is None else _tokens(lab, "string", "", 0)
    vals = ["0.0"] * (batch * k) if val is None else _tokens(val, "float", "", 0)
    rows = ("[" + ", ".join(f"[{labels[b * k + c]}, {vals[b * k + c]}]" for c in range(k)) + "]"
            for b in range(batch))
    return '{\n    "results": [' + ", ".join(rows) + "\n    ]\n}"


def format_regress_response(values) -> str:
    """MakeJsonFromRegressionResult(): one float per example ([batch] or [batch, 1])."""
    flat = np.asarray(values).ravel()
    if not flat.size:
        raise JsonCodecError("Cannot convert empty RegressionResults to JSON")
    return '{\n    "results": [' + ", ".join(_tokens(flat, "float", "", 0)) + "]\n}"


def format_error_response(message: str) -> str:
    """MakeJsonFromStatus(): the body TF Serving sends with every error status."""
    return '{\n    "error": ' + quote(message) + "\n}"
