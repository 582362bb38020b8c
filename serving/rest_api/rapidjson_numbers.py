"""rapidjson 1.1.0's number handling, as TF Serving 2.16's REST API exhibits it.

Its default-precision reader is not correctly rounded (past 15 digits or |exponent| > 22) and its
Grisu2 writer prints doubles in error messages; clients see both, so json_text uses these instead
of Python's float() and repr() where the difference can show.
"""
from __future__ import annotations

import json
import math
import re
import struct

import numpy as np

from serving.errors import JsonCodecError

FLOAT_MAX = 3.4028234e38  # rapidjson Value::IsFloat() bound
_POW10 = [float("1e%d" % i) for i in range(309)]


# ---- numbers: rapidjson 1.1.0 Reader, default precision -----------------------------------

class NumberTooBig(JsonCodecError):
    """kParseErrorNumberTooBig, raised while numbers are converted; the caller adds the offset."""


def _rj_number(lit: str) -> float:
    """rapidjson 1.1.0 default-precision parse: not correctly rounded past 15 digits or |exp| > 22."""
    minus = lit.startswith("-")
    m = re.fullmatch(r"(\d+)(?:\.(\d+))?(?:[eE]([+-]?)(\d+))?", lit[minus:])
    ip, fp, esign, edigits = m.group(1), m.group(2), m.group(3), m.group(4)
    limit, exact, sig, d = (2**63 if minus else 2**64 - 1), int(ip[0]), 0, None
    for ch in ip[1:]:
        if d is not None:
            if d >= 1.7976931348623157e307:
                raise NumberTooBig("JSON Parse error: Number too big to be stored in double.")
            d = d * 10 + int(ch)
        elif exact * 10 + int(ch) > limit:
            d = float(exact) * 10 + int(ch)
        else:
            exact, sig = exact * 10 + int(ch), sig + 1
    exp_frac = 0
    if fp is not None:
        rest = fp
        if d is None:
            for pos, ch in enumerate(fp):
                if exact > 0x1FFFFFFFFFFFFF:
                    rest = fp[pos:]
                    break
                exact, exp_frac = exact * 10 + int(ch), exp_frac - 1
                sig += exact != 0
            else:
                rest = ""
            d = float(exact)
        for ch in rest:
            if sig < 17:
                d, exp_frac = d * 10.0 + int(ch), exp_frac - 1
                sig += d > 0.0
    if d is None:
        d = float(exact)
    exp = 0
    if edigits is not None:
        exp = int(edigits)
        if esign != "-" and exp > 308 - exp_frac:
            raise NumberTooBig("JSON Parse error: Number too big to be stored in double.")
        exp = -exp if esign == "-" else exp
    p = exp + exp_frac
    if p < -308:
        d, p = d / _POW10[308], p + 308
    d = 0.0 if p < -308 else (d * _POW10[p] if p >= 0 else d / _POW10[-p])
    return -d if minus else d


def _rj_float_hook(lit: str) -> float:
    """Fast form of _rj_number() for literals whose digits all fit rapidjson's exact 2^53 loop."""
    mant, _, e = lit.replace("E", "e").partition("e")
    ip, _, fp = mant.partition(".")
    n, p = abs(int(ip + fp)), (int(e) if e else 0) - len(fp)
    if n // 10 <= 0x1FFFFFFFFFFFFF and -308 <= p <= 308:
        d = float(n) * _POW10[p] if p >= 0 else float(n) / _POW10[-p]
        return -d if lit.startswith("-") else d
    return _rj_number(lit)


def _rj_int_hook(lit: str) -> int:
    """Integers stay exact; only past the double range does rapidjson reject them."""
    if len(lit) > 308:
        _rj_number(lit)  # raises "Number too big" past the double range, like rapidjson
    return int(lit)


PYTHON_DECODER = json.JSONDecoder()
RAPIDJSON_DECODER = json.JSONDecoder(parse_float=_rj_float_hook, parse_int=_rj_int_hook)

def may_round_differently(text) -> bool:
    """Whether some number literal has over 14 digits or an exponent: only those can parse to a
    double other than the correctly rounded one under rapidjson's default precision. (Any run of 16
    characters from [0-9./], or a digit followed by e/E, anywhere, strings included: a cheap,
    conservative test, vectorised because a regex takes ~10 ms on a 1 MB body.)"""
    if isinstance(text, str):
        text = text.encode("utf-8", "surrogatepass")
    u = np.frombuffer(text, np.uint8)
    run = (u - np.uint8(46)) < 12  # . / 0-9
    for step in (1, 2, 4, 8):  # run[i]: u[i:i + 2*step] all in the class
        run = run[step:] & run[:-step]
    if run.any():
        return True
    return bool((((u[:-1] - np.uint8(48)) < 10) & ((u[1:] | np.uint8(32)) == 101)).any())


def to_double(v) -> float:
    """rapidjson GetDouble(); integers outside int64/uint64 were parsed as doubles."""
    if isinstance(v, float):
        return v
    return float(v) if -2**63 <= v < 2**64 else _rj_number(str(v))


# ---- writing doubles: rapidjson Grisu2 (dtoa) ----------------------------------------------

def _cached_power(i: int) -> tuple:
    """rapidjson's kCachedPowers: 10^(8i-348) as a rounded 64-bit significand and binary exponent."""
    k = 8 * i - 348
    if k >= 0:
        e = (10**k).bit_length() - 64
        return ((10**k + (1 << (e - 1))) >> e if e > 0 else 10**k << -e), e
    d = 10**-k
    s = d.bit_length() + 63 - (((1 << (d.bit_length() + 63)) + d // 2) // d >= 1 << 64)
    return ((1 << s) + d // 2) // d, -s


_CACHED_POWERS = [_cached_power(i) for i in range(87)]
_M64 = (1 << 64) - 1


def _mul(a: tuple, b: tuple) -> tuple:
    """DiyFp::operator*: the high 64 bits of the product, rounded."""
    p = a[0] * b[0]
    return (p >> 64) + ((p >> 63) & 1), a[1] + b[1] + 64


def _grisu2(v: float) -> tuple:
    """rapidjson internal::Grisu2() for v > 0: (digits, K) with v ~ digits * 10^K. Its digits
    round-trip but are not always the shortest or closest, so repr() would differ."""
    bits = struct.unpack("<Q", struct.pack("<d", v))[0]
    be, f = bits >> 52, bits & ((1 << 52) - 1)
    f, e = (f | 1 << 52, be - 1075) if be else (f, -1074)
    pf, pe = (f << 1) + 1, e - 1
    while not pf & (1 << 53):
        pf, pe = pf << 1, pe - 1
    pf, pe = pf << 10, pe - 10
    mf, me = ((f << 2) - 1, e - 2) if f == 1 << 52 else ((f << 1) - 1, e - 1)
    mf <<= me - pe
    dk = (-61 - pe) * 0.30102999566398114 + 347
    index = ((int(dk) + (dk - int(dk) > 0.0)) >> 3) + 1
    c, K = _CACHED_POWERS[index], 348 - 8 * index
    shift = 64 - f.bit_length()
    w, wp, wm = _mul((f << shift, e - shift), c), _mul((pf, pe), c), _mul((mf, pe), c)
    mp_f, delta, neg_e = wp[0] - 1, wp[0] - 1 - (wm[0] + 1), -wp[1]
    wp_w, one = mp_f - w[0], 1 << neg_e
    p1, p2, digits = mp_f >> neg_e, mp_f & (one - 1), []
    kappa = min(len(str(p1)), 9)
    while kappa > 0:
        d, p1 = divmod(p1, 10 ** (kappa - 1))
        if d or digits:
            digits.append(d)
        kappa -= 1
        rest = (p1 << neg_e) + p2
        if rest <= delta:
            return _grisu_round(digits, delta, rest, 10**kappa << neg_e, wp_w), K + kappa
    while True:
        p2, delta = (p2 * 10) & _M64, (delta * 10) & _M64
        if (p2 >> neg_e) or digits:
            digits.append(p2 >> neg_e)
        p2 &= one - 1
        kappa -= 1
        if p2 < delta:
            unit = wp_w * 10**-kappa & _M64 if -kappa < 9 else 0
            return _grisu_round(digits, delta, p2, one, unit), K + kappa


def _grisu_round(digits: list, delta: int, rest: int, ten_kappa: int, wp_w: int) -> str:
    """GrisuRound(): moves the last digit towards the value while it stays inside the interval."""
    while rest < wp_w and delta - rest >= ten_kappa and (
            rest + ten_kappa < wp_w or wp_w - rest > rest + ten_kappa - wp_w):
        digits[-1] -= 1
        rest += ten_kappa
    return "".join(map(str, digits))


def rapidjson_dtoa(d: float) -> str:
    """rapidjson Writer::Double(): Grisu2 digits laid out by internal::Prettify()."""
    if d == 0:
        return "-0.0" if math.copysign(1.0, d) < 0 else "0.0"
    digits, k = _grisu2(abs(d))
    n = len(digits)
    kk = n + k
    if 0 <= k and kk <= 21:
        s = digits + "0" * k + ".0"
    elif 0 < kk <= 21:
        s = digits[:kk] + "." + digits[kk:]
    elif -6 < kk <= 0:
        s = "0." + "0" * -kk + digits
    else:
        s = digits[0] + ("." + digits[1:] if n > 1 else "") + "e" + str(kk - 1)
    return ("-" if d < 0 else "") + s
