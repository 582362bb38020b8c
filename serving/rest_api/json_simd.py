"""The REST hot path: a predict body that is one uniform float/double tensor of plain numbers, read
by simdjson straight into a float64 buffer (no Python object per value), then cast as json_arrays
does. Any other body, and any it cannot prove it reads as the other passes do, raises _NeedExact:
json_codec's orjson pass then decides, as before. tests/unit/test_json_simd.py checks it.

Why the array equals TF Serving's: simdjson reads correctly rounded doubles (as orjson and the json
module do) and int64/uint64 integers cast to double (rapidjson's GetDouble()); json_arrays'
rounding-risk test then sends any body where rapidjson 1.1.0 could read another value to the exact
pass. Array.as_buffer() flattens nested arrays whatever their shape ([[1, 2], [3]] -> [1, 2, 3]), so
the shape is proven apart (_uniform_shape): as_buffer succeeding means the tensor holds only arrays
and numbers; the first-element path gives the dims; walking every array of levels 0..rank-1 shows
each has dims[level] elements, arrays above the last level; and the body's '[' count equals the
number of arrays that shape has (plus the '[' inside the document's few strings, whose raw bytes are
their text as the body has no backslash), so no element of the last level is an array either.
"""
from __future__ import annotations

import math
from itertools import chain
from typing import Callable

import numpy as np
import simdjson

from serving.rest_api.json_arrays import MAX_RANK, _NeedExact, _StrictMode, _to_float32

_KEYS = frozenset(("signature_name", "instances", "inputs"))
_BOM = b"\xef\xbb\xbf"  # simdjson skips one; rapidjson and the json module refuse it
_OPEN = 91  # '['


def parse_plain(body, input_types: Callable[[str], tuple]) -> tuple:
    """(signature, "row"/"columnar", {name: array}) for {"instances": T}, {"inputs": T} or
    {"inputs": {name: T}} (with "signature_name" or not) when the signature has one float/double
    input; else _NeedExact. input_types(raw signature_name) -> (signature, {name: dtype name}) is
    called where the other passes call it: once the body is known to be valid JSON."""
    if type(body) is not bytes or b"\\" in body or body.startswith(_BOM):
        raise _NeedExact
    try:  # a parser per call (cheap): proxies pin their parser, and threads share none
        doc = simdjson.Parser().parse(body)
    except Exception:  # noqa: BLE001 - invalid JSON or UTF-8, integers past 64 bits, numbers past double
        raise _NeedExact from None
    if type(doc) is not simdjson.Object:
        raise _NeedExact
    keys = list(doc.keys())
    if len(set(keys)) != len(keys) or not _KEYS.issuperset(keys) or ("instances" in keys) == ("inputs" in keys):
        raise _NeedExact  # (duplicate keys: simdjson finds the first, the other passes keep the last)
    raw_sig = doc.get("signature_name", "")
    if type(raw_sig) is not str:
        raise _NeedExact
    sig, types = input_types(raw_sig)
    if len(types) != 1:
        raise _NeedExact
    (name, dt), = types.items()
    if dt not in ("float", "double"):
        raise _NeedExact
    key = "instances" if "instances" in keys else "inputs"
    tensor, strings = doc[key], raw_sig
    if type(tensor) is simdjson.Object:  # {"inputs": {name: T}}
        if key != "inputs" or list(tensor.keys()) != [name]:
            raise _NeedExact
        tensor, strings = tensor[name], raw_sig + name
    flat, dims = _uniform_shape(tensor, body, strings.count("["))
    return sig, "row" if key == "instances" else "columnar", {name: _cast(flat, dt, body).reshape(dims)}


def _uniform_shape(tensor, body: bytes, brackets_in_strings: int) -> tuple:
    """(flat float64 values, dims) of a uniform array of numbers, else _NeedExact (see the module
    docstring for why the checks suffice). Empty dimensions and over MAX_RANK go to the other
    passes, which give those their answers."""
    dims, v = [], tensor
    while type(v) is simdjson.Array:
        n = len(v)
        if not n or len(dims) == MAX_RANK:
            raise _NeedExact
        dims.append(n)
        v = v[0]
    if not dims or type(v) not in (float, int):  # a scalar tensor; a bool (not int here), a string...
        raise _NeedExact
    try:
        flat = np.frombuffer(tensor.as_buffer(of_type="d"), np.float64)
        level = [tensor]  # the arrays at depth k - 1 (the root's length is dims[0])
        for k in range(1, len(dims)):
            elements = chain.from_iterable(level)  # not kept for the last level: ~2x quicker
            if k + 1 < len(dims):
                elements = level = list(elements)
            if not all(map(dims[k].__eq__, map(len, elements))):  # len() of a number: TypeError
                raise _NeedExact
    except TypeError:  # as_buffer(): a leaf that is not a number
        raise _NeedExact from None
    arrays = sum(math.prod(dims[:k]) for k in range(len(dims)))  # 1 + d0 + d0*d1 + ...
    if int(np.count_nonzero(np.frombuffer(body, np.uint8) == _OPEN)) != arrays + brackets_in_strings:
        raise _NeedExact
    return flat, dims


def _cast(flat: np.ndarray, dt: str, body: bytes) -> np.ndarray:
    """json_arrays._fast()'s decisions for the orjson pass's float64 array, on simdjson's doubles."""
    amax = np.abs(flat).max()
    if not amax < 2.0**63:  # integers that far out are read differently by each library
        raise _NeedExact
    mode = _StrictMode(body, None)
    if dt == "float":
        return _to_float32(flat, mode, amax)
    if mode.rounding_can_differ():
        raise _NeedExact
    return flat.copy()  # writable, like the other passes' arrays
