"""TF Serving's WriteDecimal() float text for whole response tensors (json_responses), bit for bit.

WriteDecimal(): "%.6g" when that text reads back as the same value (compared as float for DT_FLOAT),
else "%.9g" (float) / "%.17g" (double); "NaN", "Infinity", "-Infinity"; a text with neither '.' nor
'e' gets ".0". Small arrays go value by value; large ones do each step once for the whole array in C
(one '%' formatting per variant, simdjson reading the texts back, numpy choosing), which is what
keeps a 100-image answer cheap. tests/unit/test_json_fast.py checks that both give the same text.
"""
from __future__ import annotations

import ctypes

import numpy as np
import simdjson

_SMALL = 40  # up to here value by value is quicker (the vectorised path costs ~20 us fixed)
_c_float = ctypes.c_float  # c_float(d).value: static_cast<float>(d) as a Python float (inf on overflow)
_FORMATS: dict = {}  # (spec, n) -> "spec,spec,...": one C-level '%' formats n values
# |v - rint(v)| <= _NEAR_WHOLE * |v| holds for every value whose %.6g/%.9g/%.17g text is a whole
# number (rounding to p significant digits moves v by at most 0.5e(1-p) * |v| <= 5e-6 * |v|), so
# only those few values need their text looked at for the ".0" suffix.
_NEAR_WHOLE = 1e-5


def float_tokens(flat: np.ndarray, single: bool) -> list:
    """WriteDecimal() text of each value of a 1-d float32 (single) / float64 array."""
    n = flat.size
    if n <= _SMALL:
        return _float_tokens_small(flat.tolist(), single)
    with np.errstate(all="ignore"):
        finite = np.isfinite(flat)
        all_finite = bool(finite.all())
        work = flat if all_finite else np.where(finite, flat, 0).astype(flat.dtype)
        vals = work.tolist()
        text = _format("%.6g", n) % tuple(vals)
        back = _read_back(text, n)
        redo = back.astype(np.float32) != work if single else back != work
        k = int(np.count_nonzero(redo))
        fmt = "%.9g" if single else "%.17g"
        if 2 * k > n:  # mostly the longer text (float32 probabilities): format all, patch the few
            toks = (_format(fmt, n) % tuple(vals)).split(",")
            for i in np.flatnonzero(~redo).tolist():
                toks[i] = "%.6g" % vals[i]
        else:
            toks = text.split(",")
            if k:
                at = np.flatnonzero(redo)
                for i, t in zip(at.tolist(), (_format(fmt, k) % tuple(work[at].tolist())).split(",")):
                    toks[i] = t
        w = work.astype(np.float64, copy=False)
        whole = np.flatnonzero(np.abs(w - np.rint(w)) <= _NEAR_WHOLE * np.abs(w))
    for i in whole.tolist():
        t = toks[i]
        if "." not in t and "e" not in t:
            toks[i] = t + ".0"
    if not all_finite:
        for i in np.flatnonzero(~finite).tolist():
            v = flat[i]
            toks[i] = "NaN" if v != v else ("Infinity" if v > 0 else "-Infinity")
    return toks


def _format(spec: str, n: int) -> str:
    fmt = _FORMATS.get((spec, n))
    if fmt is None:
        fmt = ",".join([spec] * n)
        if n <= 8192 and len(_FORMATS) < 64:
            _FORMATS[spec, n] = fmt
    return fmt


def _read_back(text: str, n: int) -> np.ndarray:
    """float(t) of every comma-separated text: simdjson's doubles are correctly rounded, as float()'s."""
    try:  # a parser per call: threads share none, and it costs well under a microsecond
        buf = simdjson.Parser().parse(("[" + text + "]").encode()).as_buffer(of_type="d")
        back = np.frombuffer(buf, np.float64)
        if back.size == n:
            return back
    except Exception:  # noqa: BLE001 - not expected for %g text; the slow reading below is exact too
        pass
    return np.array(text.split(","), dtype=np.float64)


def _float_tokens_small(vals: list, single: bool) -> list:
    fmt = "%.9g" if single else "%.17g"
    toks = []
    for v in vals:
        if v - v != 0.0:  # inf or nan
            toks.append("NaN" if v != v else ("Infinity" if v > 0 else "-Infinity"))
            continue
        t = "%.6g" % v
        back = float(t)
        if (_c_float(back).value if single else back) != v:
            t = fmt % v
        toks.append(t if ("." in t or "e" in t) else t + ".0")
    return toks
