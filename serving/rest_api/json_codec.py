"""TF Serving 2.16 REST JSON <-> tensor codec: a Python port of tensorflow_serving/util/json_tensor.cc
(requests; json_responses writes the answers).

Function docstrings name the C++ function each one mirrors. Error texts are TF Serving's, because
REST clients see them verbatim; the library-level text details (rapidjson, absl) live in json_text.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Union

import numpy as np
import orjson

from serving.errors import JsonCodecError
from serving.rest_api.json_text import (body_text, decode_b64, dtype_name, is_b64, is_element_object,
                               json_type, parse_json, to_bytes,
                               value_to_string)
from serving.rest_api.rapidjson_numbers import may_round_differently, to_double

__all__ = ["JsonCodecError", "PredictRequest", "parse_predict_request", "DEFAULT_SIGNATURE"]

DEFAULT_SIGNATURE = "serving_default"
_INT_RANGES = {"int32": (-2**31, 2**31), "int16": (-2**31, 2**31), "int8": (-2**31, 2**31),
               "uint8": (-2**31, 2**31), "int64": (-2**63, 2**63), "uint32": (0, 2**32), "uint64": (0, 2**64)}
NUMPY_TYPES = {"float": np.float32, "double": np.float64, "int32": np.int32, "int16": np.int16, "int8": np.int8,
       "uint8": np.uint8, "int64": np.int64, "uint32": np.uint32, "uint64": np.uint64, "bool": np.bool_,
       "string": object, "half": np.float16, "complex64": np.complex64, "complex128": np.complex128}
# dtypes AddValueToTensor()/AddSingleValueAndAdvance() handle; others are UNIMPLEMENTED / rejected
WRITABLE_DTYPES = {"float", "double", "int32", "int16", "int8", "uint8", "int64", "uint32", "uint64", "bool", "string"}


@dataclass
class PredictRequest:
    """What FillPredictRequestFromJson() puts in a PredictRequest, as numpy arrays (DT_STRING -> object
    arrays of bytes); `format` decides the response layout, as JsonPredictRequestFormat does."""
    signature_name: str
    format: str  # "row" (instances) or "columnar" (inputs)
    inputs: dict[str, np.ndarray]


InputSpecs = Union[Mapping[str, Any], Callable[[str], Mapping[str, Any]]]


class _NeedExact(Exception):
    """The quick parse cannot prove it matches rapidjson's numbers; parse again with the emulation."""


class _Mode:
    """How the body was parsed. The quick parse rounds floats correctly; rapidjson may be a few ulps
    off for long literals, so results that could show the difference are redone exactly."""

    strict = False  # the orjson pass: whatever it cannot do in C, the quick pass redoes

    def __init__(self, text: str, exact: bool):
        self.text, self.exact, self._risky = text, exact, None
        self.fast_ok = "true" not in text and "false" not in text  # np.array() turns bools into 1/0

    def need_exact(self) -> None:
        if not self.exact:
            if self._risky is None:
                self._risky = may_round_differently(self.text)
            if self._risky:
                raise _NeedExact


class _StrictMode(_Mode):
    """The orjson pass (see _parse_strict): anything that is not plain numbers converted in C, or that
    could need rapidjson's rounding, goes back to the quick pass, which then decides as before."""

    strict = True

    def __init__(self, body: bytes):
        self.text, self.exact, self._risky, self._body = None, False, None, body

    @property
    def fast_ok(self) -> bool:  # looked at only for a numeric input, once
        return b"true" not in self._body and b"false" not in self._body

    def need_exact(self) -> None:
        raise _NeedExact


def _to_float32(a64: np.ndarray, mode: _Mode, amax=None) -> np.ndarray:
    """static_cast<float>(GetDouble()). After the quick parse, rapidjson's double can only round to
    another float if a value lies within 2^-48 (about 16 ulps) of a float32 rounding boundary. A
    double that is exactly a float32 (pixel values, say) is ~2^-25 relative away from any boundary, so
    those arrays skip the boundary test (same result, a few numpy calls instead of a dozen)."""
    if not mode.exact and a64.size:
        if amax is None:
            amax = np.abs(a64).max()
        if amax <= 1e35:  # finite (NaN fails this too), and no overflow in the cast
            f = a64.astype(np.float32)
            if (f.astype(np.float64) == a64).all():
                return f
    with np.errstate(over="ignore", invalid="ignore"):
        f = a64.astype(np.float32)
        if not mode.exact and a64.size:
            f64, margin = f.astype(np.float64), np.abs(a64) * 2.0**-48
            lo = (f64 + np.nextafter(f, np.float32(-np.inf)).astype(np.float64)) / 2
            hi = (f64 + np.nextafter(f, np.float32(np.inf)).astype(np.float64)) / 2
            near = (np.abs(a64 - lo) <= margin) | (np.abs(hi - a64) <= margin)
            if (near | ~np.isfinite(a64) | (np.abs(a64) > 1e35)).any():
                mode.need_exact()
    return f


def _spec_dtype(spec) -> str:
    """Only the dtype matters here; accepts a dtype, (dtype, shape) or a TensorSpec."""
    if isinstance(spec, (tuple, list)):
        spec = spec[0]
    elif not isinstance(spec, (str, type, np.dtype)) and hasattr(spec, "shape") and hasattr(spec, "dtype"):
        spec = spec.dtype
    return dtype_name(spec)


# ---- request parsing -----------------------------------------------------------------------

def request_signature(doc: dict) -> str:
    sig = doc.get("signature_name", "")
    if not isinstance(sig, str):
        raise JsonCodecError(f"JSON Value: {value_to_string(doc)} not formatted correctly. "
                             "'signature_name' key must be a string value.")
    return sig


def format_error(doc, *parts: str) -> JsonCodecError:
    return JsonCodecError(f"JSON Value: {value_to_string(doc)} " + "".join(parts))


def _leaf(v, dt: str):
    """AddValueToTensor() / base64 branch of FillTensorProto() for one scalar."""
    if isinstance(v, dict):
        if dt == "string":
            return decode_b64(v)
    elif dt in ("float", "double"):
        if v is not None and not isinstance(v, (bool, str)):
            return to_double(v)
    elif dt in _INT_RANGES:
        if type(v) is int and _INT_RANGES[dt][0] <= v < _INT_RANGES[dt][1]:
            return v
    elif dt == "string":
        if isinstance(v, str):
            return to_bytes(v)
    elif dt == "bool":
        if isinstance(v, bool):
            return v
    else:
        raise JsonCodecError(f"Conversion of JSON Value: {value_to_string(v)} to type: {dt}", "UNIMPLEMENTED")
    raise JsonCodecError(f"JSON Value: {value_to_string(v)} Type: {json_type(v)} is not of expected type: {dt}")


def _dense_shape(v) -> list:
    """GetDenseTensorShape(): follows the first element at each level."""
    dims = []
    while isinstance(v, list):
        dims.append(len(v))
        if not v:
            break
        v = v[0]
    return dims


def _fill(v, level: int, shape: list, dt: str, out: list) -> None:
    """FillTensorProto(): every leaf must sit at depth len(shape), every list match the shape."""
    rank = len(shape)
    if not isinstance(v, list):
        if level != rank:
            raise JsonCodecError(f"JSON Value: {value_to_string(v)} found at incorrect level: {level + 1} "
                                 f"in the JSON DOM. Expected at level: {rank}")
        out.append(_leaf(v, dt))
        return
    if level >= rank:
        raise JsonCodecError(f"Encountered list at unexpected level: {level} expected < {rank}")
    if len(v) != shape[level]:
        raise JsonCodecError(f"Encountered list at unexpected size: {len(v)} at level: {level} "
                             f"expected size: {shape[level]}")
    for x in v:
        _fill(x, level + 1, shape, dt, out)


def _make_array(vals: list, dt: str, shape: list, mode: _Mode) -> np.ndarray:
    """Tensor::FromProto() of the collected values."""
    npdt = NUMPY_TYPES.get(dt, object)
    if npdt is object:
        arr = np.empty(len(vals), dtype=object)
        arr[:] = vals
        return arr.reshape(shape)
    if dt == "float":
        return _to_float32(np.array(vals, np.float64), mode).reshape(shape)
    if dt == "double":
        mode.need_exact()
    if dt in _INT_RANGES and _INT_RANGES[dt][0] == -2**31:  # int_val wraps like static_cast
        return np.array(vals, np.int32).astype(npdt).reshape(shape)
    return np.array(vals, dtype=npdt).reshape(shape)


def _fast(v, dt: str, mode: _Mode):
    """Whole-tensor conversion in C for rectangular lists of plain numbers; None means 'use _fill'."""
    if not isinstance(v, list) or dt not in WRITABLE_DTYPES or dt == "string":
        return None
    try:
        a = np.array(v)
    except (ValueError, TypeError, OverflowError):
        return None
    kind = a.dtype.kind
    if dt == "bool":
        return a if kind == "b" else None
    if not mode.fast_ok or kind not in "if" or a.dtype.itemsize != 8:
        return None
    amax = np.abs(a).max() if kind == "f" and a.size else None  # NaN if any NaN: then no test below holds
    if amax is not None and amax >= (2.0**63 if mode.strict else 2.0**64):
        # may hold integers past uint64, which rapidjson parses its own way; orjson also turns
        # integers outside int64/uint64 into floats, where the json module keeps them int
        return None
    if dt == "float":
        return _to_float32(a, mode, amax) if kind == "f" else a.astype(np.float64).astype(np.float32)
    if dt == "double":
        if kind == "f":
            mode.need_exact()
        return a.astype(np.float64)
    if kind != "i":
        return None
    lo, hi = _INT_RANGES[dt]
    if a.size and (a.min() < lo or a.max() >= hi):
        return None
    return a.astype(np.int32).astype(NUMPY_TYPES[dt]) if lo == -2**31 else a.astype(NUMPY_TYPES[dt])


def _tensor(v, dt: str, mode: _Mode) -> np.ndarray:
    a = _fast(v, dt, mode)
    if a is not None:
        return a
    if mode.strict:
        raise _NeedExact
    shape, vals = _dense_shape(v), []
    _fill(v, 0, shape, dt, vals)
    return _make_array(vals, dt, shape, mode)


def _from_instances(inst: list, types: dict, mode: _Mode) -> dict:
    """FillTensorMapFromInstancesList(): stack per-instance tensors that must agree in shape."""
    names = sorted(types)
    if not isinstance(inst[0], dict) and len(names) > 1:
        raise JsonCodecError("instances is a plain list, but expecting list of objects as multiple "
                             "input tensors required as per tensorinfo_map")
    objects = is_element_object(inst[0])
    done: dict = {}
    if not objects:
        done[names[0]] = _fast(inst, types[names[0]], mode)
    elif all(is_element_object(e) and e.keys() == types.keys() for e in inst):
        done = {n: _fast([e[n] for e in inst], types[n], mode) for n in names}
    done = {n: a for n, a in done.items() if a is not None}
    if done and (not objects or len(done) == len(names)):
        return done
    if mode.strict:
        raise _NeedExact
    state: dict = {}

    def add(item, name: str) -> None:  # AddInstanceItem()
        if name not in types:
            raise JsonCodecError(f"JSON object: does not have named input: {name}")
        if name in done:
            return
        shape, vals = _dense_shape(item), []
        _fill(item, 0, shape, types[name], vals)
        if name not in state:
            state[name] = (shape, len(vals), vals)
            return
        first_shape, first_size, acc = state[name]
        if first_size != len(vals):
            raise JsonCodecError(f"Expecting tensor size: {first_size} but got: {len(vals)}")
        if first_shape != shape:
            raise JsonCodecError(f"Expecting shape [{','.join(map(str, first_shape))}] but got: "
                                 f"[{','.join(map(str, shape))}]")
        acc.extend(vals)

    for i, elem in enumerate(inst):
        if objects:
            if not is_element_object(elem):
                raise JsonCodecError(f"Expecting object but got list at item {i} of input list")
            for name, item in elem.items():
                try:
                    add(item, name)
                except JsonCodecError as e:
                    raise JsonCodecError(f"Failed to process element: {i} key: {name} of 'instances' "
                                         f"list. Error: {e.status()}") from None
            if set(elem) != set(names):
                raise JsonCodecError(f"Failed to process element: {i} of 'instances' list. JSON object: "
                                     f"{value_to_string(elem)} keys must be equal to: {','.join(names)}")
        else:
            if is_element_object(elem):
                raise JsonCodecError(f"Expecting value/list but got object at item {i} of input list")
            try:
                add(elem, names[0])
            except JsonCodecError as e:
                raise JsonCodecError(f"Failed to process element: {i} of 'instances' list. "
                                     f"Error: {e.status()}") from None
    out = {n: _make_array(vals, types[n], [len(inst)] + shape, mode) for n, (shape, _, vals) in state.items()}
    return {**out, **done}


def _from_inputs(val, types: dict, mode: _Mode) -> dict:
    """FillTensorMapFromInputsMap(): one bare value, or an object holding every named input."""
    names = sorted(types)
    if not isinstance(val, dict) or is_b64(val):
        if len(names) > 1:
            raise JsonCodecError("inputs is a plain value/list, but expecting an object as multiple "
                                 "input tensors required as per tensorinfo_map")
        return {names[0]: _tensor(val, types[names[0]], mode)}
    out = {}
    for name in names:
        if name not in val:
            raise JsonCodecError(f"Missing named input: {name} in 'inputs' object.")
        out[name] = _tensor(val[name], types[name], mode)
    return out


def parse_predict_request(body: Union[bytes, str], input_specs: InputSpecs) -> PredictRequest:
    """FillPredictRequestFromJson(). `input_specs` maps input name -> dtype, (dtype, shape) or
    TensorSpec, or is a callable taking the signature name (like TF Serving's get_tensorinfo_map).
    Shapes are not checked here: TF Serving leaves that to the session run."""
    try:  # orjson pass: plain numeric requests, parsed and converted in C
        return _parse_strict(body, input_specs)
    except _NeedExact:
        pass
    try:  # quick pass: correctly rounded floats; exact rapidjson emulation only when it could matter
        return _parse_predict(body, input_specs, exact=False)
    except _NeedExact:
        return _parse_predict(body, input_specs, exact=True)


_STRICT_KEYS = frozenset(("signature_name", "instances", "inputs"))


def _parse_strict(body, input_specs: InputSpecs) -> PredictRequest:
    """The quick pass's result for the requests that make up the traffic, or _NeedExact.

    Why it equals the quick pass: without a backslash, and when orjson accepts the bytes, orjson's
    document equals the json module's (same correctly rounded doubles, same last-wins keys), except
    that integers outside int64/uint64 become floats (caught in _fast). Only documents whose every
    value is used are taken (no other keys, every named input present), so anything the json module
    would reject (depth) surfaces here as a nesting numpy refuses; every other case (strings, b64,
    bools, errors, rounding doubts) goes back to the quick pass. tests/unit/test_json_fast.py checks it."""
    if type(body) is not bytes or b"\\" in body:
        raise _NeedExact
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise _NeedExact from None
    if type(doc) is not dict or not doc.keys() <= _STRICT_KEYS or ("instances" in doc) == ("inputs" in doc):
        raise _NeedExact
    raw_sig = doc.get("signature_name", "")
    if type(raw_sig) is not str:
        raise _NeedExact
    sig = raw_sig or DEFAULT_SIGNATURE
    specs = input_specs(sig) if callable(input_specs) else input_specs
    types = {name: _spec_dtype(spec) for name, spec in specs.items()}
    mode = _StrictMode(body)
    try:
        if "instances" in doc:
            inst = doc["instances"]
            if type(inst) is not list or not inst or not types:
                raise _NeedExact
            return PredictRequest(sig, "row", _from_instances(inst, types, mode))
        val = doc["inputs"]
        if not types or (isinstance(val, dict) and not is_b64(val) and val.keys() != types.keys()):
            raise _NeedExact
        return PredictRequest(sig, "columnar", _from_inputs(val, types, mode))
    except JsonCodecError:
        raise _NeedExact from None


def _parse_predict(body, input_specs: InputSpecs, exact: bool) -> PredictRequest:
    text = body_text(body)
    mode = _Mode(text, exact)
    try:
        doc = parse_json(text, exact)
        raw_sig = request_signature(doc)
        sig = raw_sig or DEFAULT_SIGNATURE
        specs = input_specs(sig) if callable(input_specs) else input_specs
        types = {name: _spec_dtype(spec) for name, spec in specs.items()}
        if not types:
            raise JsonCodecError(f"Failed to get input map for signature: {raw_sig or 'DEFAULT'}")
        if "instances" in doc:
            if "inputs" in doc:
                raise format_error(doc, "Not formatted correctly expecting only one of 'inputs' or "
                                         "'instances' keys to exist ")
            inst = doc["instances"]
            if not isinstance(inst, list):
                raise format_error(doc, "Expecting 'instances' to be an list/array")
            if not inst:
                raise format_error(doc, "No values in 'instances' array")
            return PredictRequest(sig, "row", _from_instances(inst, types, mode))
        if "inputs" in doc:
            return PredictRequest(sig, "columnar", _from_inputs(doc["inputs"], types, mode))
        raise JsonCodecError("Missing 'inputs' or 'instances' key")
    except JsonCodecError:
        mode.need_exact()  # messages print parsed numbers: take them from rapidjson's values
        raise
