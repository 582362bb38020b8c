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
from serving.rest_api.json_arrays import (_INT_RANGES, MAX_RANK, _fast, _make_array, _Mode, _NeedExact,
                                         _StrictMode)
from serving.rest_api.json_text import (TOO_DEEP, body_text, decode_b64, dtype_name, is_b64, is_element_object,
                                        json_type, parse_json, to_bytes, value_to_string)
from serving.rest_api.json_simd import parse_plain
from serving.rest_api.rapidjson_numbers import to_double

__all__ = ["JsonCodecError", "PredictRequest", "parse_predict_request", "DEFAULT_SIGNATURE"]

DEFAULT_SIGNATURE = "serving_default"


@dataclass
class PredictRequest:
    """What FillPredictRequestFromJson() puts in a PredictRequest, as numpy arrays (DT_STRING -> object
    arrays of bytes); `format` decides the response layout, as JsonPredictRequestFormat does."""
    signature_name: str
    format: str  # "row" (instances) or "columnar" (inputs)
    inputs: dict[str, np.ndarray]


InputSpecs = Union[Mapping[str, Any], Callable[[str], Mapping[str, Any]]]


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


def _input_types(input_specs: InputSpecs, raw_sig: str) -> tuple:
    """GetInfoMap(): (signature, {input name: dtype name}) for the request's signature_name."""
    sig = raw_sig or DEFAULT_SIGNATURE
    specs = input_specs(sig) if callable(input_specs) else input_specs
    return sig, {name: _spec_dtype(spec) for name, spec in specs.items()}


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


def _dense_shape(v, what: str, batched: bool = False) -> list:
    """GetDenseTensorShape(): follows the first element at each level. TF Serving builds tensors of
    any rank; numpy (and so this server) stops at 32 dimensions, which is checked here, before the
    recursive walk of _fill, so a deep nesting is a clear 400 rather than a numpy error or a
    RecursionError."""
    dims = []
    while isinstance(v, list):
        dims.append(len(v))
        if len(dims) + batched > MAX_RANK:
            rank = len(dims) + batched + _dense_depth(v[0] if v else None)
            raise JsonCodecError(f"{what} has {rank} dimensions; this server supports at most {MAX_RANK} "
                                 "(numpy's limit)")
        if not v:
            break
        v = v[0]
    return dims


def _dense_depth(v) -> int:
    depth = 0
    while isinstance(v, list):
        depth += 1
        v = v[0] if v else None
    return depth


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


def _tensor(v, dt: str, mode: _Mode, name: str = "") -> np.ndarray:
    a = _fast(v, dt, mode)
    if a is not None:
        return a
    if mode.strict:
        raise _NeedExact
    shape, vals = _dense_shape(v, f"Input tensor {name}" if name else "The 'inputs' tensor"), []
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
        shape, vals = _dense_shape(item, f"Input tensor {name}" if objects else "The 'instances' tensor",
                                   batched=True), []
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
        out[name] = _tensor(val[name], types[name], mode, name)
    return out


def parse_predict_request(body: Union[bytes, str], input_specs: InputSpecs) -> PredictRequest:
    """FillPredictRequestFromJson(). `input_specs` maps input name -> dtype, (dtype, shape) or
    TensorSpec, or is a callable taking the signature name (like TF Serving's get_tensorinfo_map).
    Shapes are not checked here: TF Serving leaves that to the session run."""
    try:  # simdjson pass: one uniform float tensor of plain numbers, read into an array in C
        return PredictRequest(*parse_plain(body, lambda raw_sig: _input_types(input_specs, raw_sig)))
    except _NeedExact:
        pass
    try:  # orjson pass: plain numeric requests, parsed and converted in C
        return _parse_strict(body, input_specs)
    except _NeedExact:
        pass
    try:  # quick pass: correctly rounded floats; exact rapidjson emulation only when it could matter
        try:
            return _parse_predict(body, input_specs, exact=False)
        except _NeedExact:
            return _parse_predict(body, input_specs, exact=True)
    except RecursionError:  # a nesting the json module decoded but printing it in a message did not
        raise JsonCodecError(TOO_DEEP) from None


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
    sig, types = _input_types(input_specs, raw_sig)
    mode = _StrictMode(body, doc)
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
        sig, types = _input_types(input_specs, raw_sig)
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
