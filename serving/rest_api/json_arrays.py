"""Numeric JSON lists -> numpy arrays for json_codec, and when a pass must be redone exactly.

json_codec parses a predict body up to four ways: simdjson (json_simd) and orjson (C, correctly
rounded doubles), the json module (the same doubles), and rapidjson 1.1.0's reading (TF Serving's
doubles: the emulation in rapidjson_numbers, ~20x slower). A Mode says
which one produced the lists; a fast result that could differ from rapidjson's raises _NeedExact so
the body is parsed again exactly. tests/unit/test_json_fast.py checks every shortcut against that.
"""
from __future__ import annotations

import numpy as np

from serving.rest_api.rapidjson_numbers import may_round_differently

_INT_RANGES = {"int32": (-2**31, 2**31), "int16": (-2**31, 2**31), "int8": (-2**31, 2**31),
               "uint8": (-2**31, 2**31), "int64": (-2**63, 2**63), "uint32": (0, 2**32), "uint64": (0, 2**64)}
NUMPY_TYPES = {"float": np.float32, "double": np.float64, "int32": np.int32, "int16": np.int16, "int8": np.int8,
       "uint8": np.uint8, "int64": np.int64, "uint32": np.uint32, "uint64": np.uint64, "bool": np.bool_,
       "string": object, "half": np.float16, "complex64": np.complex64, "complex128": np.complex128}
MAX_RANK = 32  # numpy's NPY_MAXDIMS
# dtypes AddValueToTensor()/AddSingleValueAndAdvance() handle; others are UNIMPLEMENTED / rejected
WRITABLE_DTYPES = {"float", "double", "int32", "int16", "int8", "uint8", "int64", "uint32", "uint64", "bool", "string"}


class _NeedExact(Exception):
    """The quick parse cannot prove it matches rapidjson's numbers; parse again with the emulation."""


class _Mode:
    """How the body was parsed. The quick parse rounds floats correctly; rapidjson may be a few ulps
    off for long literals, so results that could show the difference are redone exactly."""

    strict = False  # the orjson pass: whatever it cannot do in C, the quick pass redoes

    def rounding_can_differ(self) -> bool:
        """False when no literal is one rapidjson may round differently (so no test is needed)."""
        return True

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

    def __init__(self, body: bytes, doc: dict):
        self.text, self.exact, self._risky, self._body, self._doc = None, False, None, body, doc

    @property
    def fast_ok(self) -> bool:  # looked at only for a numeric input, once
        """No true/false: with no backslash in the body, a 't' or 'f' outside the document's keys and
        signature can only come from one (np.array() would turn it into 1/0)."""
        doc, u = self._doc, np.frombuffer(self._body, np.uint8)
        strings = list(doc) + [v for v in (doc.get("signature_name"),) if isinstance(v, str)]
        if isinstance(doc.get("inputs"), dict):
            strings += list(doc["inputs"])
        rows = doc.get("instances")
        if isinstance(rows, list) and rows and isinstance(rows[0], dict):  # [{"name": ...}, ...]
            strings += [key for row in rows if isinstance(row, dict) for key in row]
        expected = sum(map(str.count, strings, "t" * len(strings))) + sum(map(str.count, strings, "f" * len(strings)))
        return int(np.count_nonzero(u == 116)) + int(np.count_nonzero(u == 102)) == expected

    def rounding_can_differ(self) -> bool:
        if self._risky is None:
            self._risky = may_round_differently(self._body)
        return self._risky

    def need_exact(self) -> None:
        raise _NeedExact


def _to_float32(a64: np.ndarray, mode: _Mode, amax=None) -> np.ndarray:
    """static_cast<float>(GetDouble()). After the quick parse, rapidjson's double can only round to
    another float if a value lies within 2^-48 (about 16 ulps) of a float32 rounding boundary. So the
    boundary test is skipped, cheapest first, for arrays of doubles that are exactly float32s (pixel
    values, say: ~2^-25 relative away from any boundary), for bodies whose literals are all short
    (rapidjson then reads the same doubles), and when a cheap superset of the test finds nothing."""
    if not mode.exact and a64.size:
        if amax is None:
            amax = np.abs(a64).max()
        if amax <= 1e35:  # finite (NaN fails this too), and no overflow in the cast
            f = a64.astype(np.float32)
            if (f.astype(np.float64) == a64).all() or not mode.rounding_can_differ() or \
                    not _may_be_near_boundary(a64):
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


def _may_be_near_boundary(a64: np.ndarray) -> bool:
    """A cheap superset of the test below for finite doubles in float32's normal range: there, a
    float32 rounding boundary is a double whose low 29 mantissa bits are 2^28, and 2^-48 relative is
    at most 32 ulps of a double. Values in float32's subnormal range are left to the full test."""
    low = (a64.view(np.uint64) & np.uint64(0x1FFFFFFF)).view(np.int64)
    if (np.abs(low - 2**28) <= 64).any():
        return True
    return bool(((np.abs(a64) < 2.0**-126) & (a64 != 0)).any())


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
        if kind == "f" and mode.rounding_can_differ():
            mode.need_exact()
        return a.astype(np.float64)
    if kind != "i":
        return None
    lo, hi = _INT_RANGES[dt]
    if a.size and (a.min() < lo or a.max() >= hi):
        return None
    return a.astype(np.int32).astype(NUMPY_TYPES[dt]) if lo == -2**31 else a.astype(NUMPY_TYPES[dt])
