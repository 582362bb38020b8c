"""The REST hot path's fast forms give exactly what the exact forms give: orjson against the json
module, the orjson predict pass against the quick/exact passes, element-wise float text against the
vectorised one, and the float32 shortcut against the rounding-boundary test."""
import json
import random
import struct

import numpy as np
import orjson
import pytest

from serving.rest_api.json_arrays import _Mode, _NeedExact, _to_float32
from serving.rest_api.json_codec import _parse_predict, _parse_strict, parse_predict_request
from serving.rest_api.json_floats import _SMALL, _float_tokens_small, float_tokens

SPECS = {"x": "float"}


def _literals(rng: random.Random, n: int):
    """Number literals of every shape a client sends: Python reprs of doubles and float32s, %.9g/%.17g,
    long and short digit strings with and without exponents, halfway cases, subnormals, big integers."""
    for _ in range(n):
        kind = rng.randrange(8)
        if kind == 0:
            yield repr(struct.unpack("d", struct.pack("Q", rng.getrandbits(64)))[0])
        elif kind == 1:
            yield repr(float(np.float32(rng.uniform(-1e6, 1e6))))
        elif kind == 2:
            yield "%.9g" % float(np.float32(rng.gauss(0, 1)))
        elif kind == 3:
            yield "%.17g" % rng.uniform(-1, 1)
        elif kind == 4:
            digits = "".join(rng.choice("0123456789") for _ in range(rng.randint(1, 30))).lstrip("0") or "0"
            yield ("-" if rng.random() < 0.5 else "") + digits + ("." + str(rng.randint(0, 10**rng.randint(1, 20))))
        elif kind == 5:
            yield f"{rng.randint(1, 10**rng.randint(1, 20))}e{rng.randint(-330, 310)}"
        elif kind == 6:  # halfway between two doubles, and near subnormals
            m = rng.getrandbits(53) | 1
            yield repr(m * 2.0 ** rng.randint(-1074, -1000)) if rng.random() < 0.5 else f"{2 * m + 1}e-{rng.randint(1, 25)}"
        else:
            yield str(rng.randint(-2**70, 2**70))


def test_orjson_numbers_equal_the_json_modules():
    rng = random.Random(7)
    literals = list(_literals(rng, 40000)) + ["0.0", "-0.0", "1e-400", "-1e-400", "4.9e-324", "2.2250738585072011e-308",
                                               "1.7976931348623157e308", "9007199254740993", "0.1", "255.0"]
    same = 0
    for lit in literals:
        try:
            fast = orjson.loads(lit)
        except orjson.JSONDecodeError:
            continue  # orjson refuses (e.g. 1e400): the quick pass takes over
        exact = json.loads(lit)
        if isinstance(exact, int) and not -2**63 <= exact < 2**64:
            assert isinstance(fast, float)  # the one difference, which _fast guards against
            continue
        assert type(fast) is type(exact), lit
        if isinstance(exact, float):
            assert struct.pack("d", fast) == struct.pack("d", exact), lit
        else:
            assert fast == exact, lit
        same += 1
    assert same > 30000


def _bodies(rng: random.Random):
    shapes = [(1,), (3,), (2, 2), (1, 28, 28), (2, 3, 4)]
    for _ in range(300):
        shape = rng.choice(shapes)
        kind = rng.randrange(5)
        if kind == 0:
            values = np.round(np.array([rng.uniform(0, 255) for _ in range(int(np.prod(shape)))]))
        elif kind == 1:
            values = np.array([float(np.float32(rng.gauss(0, 1))) for _ in range(int(np.prod(shape)))])
        elif kind == 2:
            values = np.array([rng.uniform(-1, 1) for _ in range(int(np.prod(shape)))])
        elif kind == 3:
            values = np.array([rng.randint(-300, 300) for _ in range(int(np.prod(shape)))])
        else:  # values right at float32 rounding boundaries: the quick pass must decide exactly
            f = np.float32(rng.uniform(0.5, 2))
            values = np.array([(float(f) + float(np.nextafter(f, np.float32(3)))) / 2] * int(np.prod(shape)))
        nested = values.reshape(shape).tolist()
        yield json.dumps({"instances": nested}).encode()
        yield json.dumps({"signature_name": "", "inputs": {"x": nested}}).encode()
        yield json.dumps({"inputs": nested}, separators=(",", ":")).encode()
    yield b'{"instances": [1.0, 2]}'
    yield b'{"instances": [[1.0], [2.0, 3.0]]}'  # ragged
    yield b'{"instances": [1.0, true]}'  # a bool numpy would turn into 1.0
    yield b'{"instances": [NaN, 1.0]}'
    yield b'{"instances": [1e400]}'
    yield b'{"instances": [-9223372036854775809, 1.5]}'  # orjson makes the integer a float
    yield b'{"instances": [18446744073709551616]}'
    yield b'{"instances": [1.0], "instances": [2.0]}'  # duplicate keys: the last wins in both
    yield b'{"instances": [1.0], "other": ' + b"[" * 1000 + b"]" * 1000 + b"}"  # deeper than json allows
    yield b'{"instances": ' + b"[" * 40 + b"1.0" + b"]" * 40 + b"}"
    yield b'{"instances": ["1.5"]}'
    yield b'{"instances": [1.0], "signature_name": 5}'
    yield b'{"instances": [{"b64": "AAAA"}]}'
    yield b'{"inputs": {"x": [1.0], "y": [2.0]}}'
    yield b'{"instances": [1.0]}\xff'
    yield b'{"instances": ["\\u00e9"]}'
    yield b'{"instances": []}'
    yield b'{"instances": [1.0], "inputs": [1.0]}'
    yield b''


def _reference(body, specs):
    """parse_predict_request without the orjson pass, or the error it raises."""
    try:
        try:
            return _parse_predict(body, specs, exact=False)
        except _NeedExact:
            return _parse_predict(body, specs, exact=True)
    except Exception as e:  # noqa: BLE001
        return e


def _same(got, want) -> bool:
    if isinstance(want, Exception):
        return type(got) is type(want) and str(got) == str(want)
    return (got.signature_name, got.format, sorted(got.inputs)) == (want.signature_name, want.format, sorted(want.inputs)) \
        and all(got.inputs[k].dtype == want.inputs[k].dtype and got.inputs[k].shape == want.inputs[k].shape
                and got.inputs[k].tobytes() == want.inputs[k].tobytes() for k in got.inputs)


@pytest.mark.parametrize("specs", [{"x": "float"}, {"x": "double"}, {"x": "int32"}, {"x": "int64"}, {"x": "bool"}])
def test_the_orjson_pass_gives_the_quick_or_exact_passes_result(specs):
    strict_used = 0
    for body in _bodies(random.Random(3)):
        want = _reference(body, specs)
        try:
            got = _parse_strict(body, specs)
            strict_used += 1
        except _NeedExact:
            got = None
        if got is not None:
            assert not isinstance(want, Exception), body[:80]
            assert _same(got, want), body[:80]
        try:
            full = parse_predict_request(body, specs)
        except Exception as e:  # noqa: BLE001
            full = e
        assert _same(full, want), body[:80]
    if specs["x"] in ("float", "int32"):
        assert strict_used > 100  # the fast pass does carry the ordinary requests


def test_the_orjson_pass_refuses_what_it_cannot_prove():
    for body in (b'{"instances": [1.0, true]}', b'{"instances": [-9223372036854775809, 1.5]}',
                 b'{"instances": [1.0], "other": 1}', b'{"instances": ["\\u00e9"]}', b'{"instances": [NaN]}',
                 b'{"instances": ' + b"[" * 40 + b"1.0" + b"]" * 40 + b"}", b'{"instances": [1.0]}\xff'):
        with pytest.raises(_NeedExact):
            _parse_strict(body, SPECS)


def _needs_exact_by_boundary_test(a64: np.ndarray) -> bool:
    """The test _to_float32 made for every array before the shortcut."""
    with np.errstate(over="ignore", invalid="ignore"):
        f = a64.astype(np.float32)
        f64, margin = f.astype(np.float64), np.abs(a64) * 2.0**-48
        lo = (f64 + np.nextafter(f, np.float32(-np.inf)).astype(np.float64)) / 2
        hi = (f64 + np.nextafter(f, np.float32(np.inf)).astype(np.float64)) / 2
        near = (np.abs(a64 - lo) <= margin) | (np.abs(hi - a64) <= margin)
        return bool((near | ~np.isfinite(a64) | (np.abs(a64) > 1e35)).any())


class _Recording(_Mode):
    def __init__(self):
        super().__init__("", False)
        self.asked = False

    def need_exact(self):
        self.asked = True


def test_float32_shortcut_equals_the_boundary_test():
    rng = np.random.default_rng(5)
    f32 = rng.standard_normal(20000).astype(np.float32)
    cases = [f32.astype(np.float64), np.arange(0, 256, dtype=np.float64), np.array([0.0, -0.0, 1e-45, 3.4e38, 1e35]),
             np.array([1.4e-45, 2.0**-149, 2.0**127]), f32.astype(np.float64) + 1e-12, rng.uniform(-1, 1, 1000),
             np.array([np.inf]), np.array([np.nan, 1.0]), np.array([3.4028235e38 * 2])]
    cases += [np.array([v]) for v in f32[:2000].astype(np.float64)]
    for a64 in cases:
        mode = _Recording()
        with np.errstate(over="ignore", invalid="ignore"):
            assert _to_float32(a64, mode).tobytes() == a64.astype(np.float32).tobytes()
        assert mode.asked == _needs_exact_by_boundary_test(a64), a64[:4]


def test_small_and_vectorised_float_text_agree():
    rng = np.random.default_rng(11)
    bits = rng.integers(0, 2**32, 200000, dtype=np.uint64).astype(np.uint32)
    f32 = bits.view(np.float32)
    specials = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 1.0, 0.1, 3.4028235e38, 1.4e-45, 1.17549435e-38,
                         16777216.0, 0.999987841, 9.01202046e-09], np.float32)
    for single, values in ((True, np.concatenate([specials, f32])),
                           (False, np.concatenate([specials.astype(np.float64), rng.standard_normal(50000),
                                                   f32[:50000].astype(np.float64)]))):
        values = values.astype(np.float32 if single else np.float64)
        small = _float_tokens_small(values.tolist(), single)
        vectorised = float_tokens(values, single)  # > _SMALL values: the vectorised branch
        assert len(values) > _SMALL and small == vectorised



def _awkward_values(rng: np.random.Generator, n: int) -> np.ndarray:
    """Doubles where WriteDecimal's choices turn: whole numbers (with and without ".0"), the 1e6 / 1e9 /
    1e16 / 1e17 edges of %g's fixed notation, halfway and near-whole values, -0.0, subnormals, the
    float32 and double extremes, NaN and infinities."""
    edges = np.array([0.0, -0.0, 1.0, -1.0, 0.5, 99999.95, 999999.0, 999999.4, 999999.5, 999999.94, 1e6, 1e6 + 0.5,
                      -1e6, 1234567.0, 123456.4, 16777215.0, 16777216.0, 16777217.0, 999999999.0, 1e9, 1e9 + 1,
                      4294967296.0, 1e15 + 0.875, 1e15 + 0.125, 2.0**52 + 1, 2.0**53 - 1, 9999999999999998.0, 1e16,
                      1e17, 1e17 + 16, 12345678901234567.0, 1e-5, 1e-4, 0.0001, 1e-45, 1.4e-45, 1.17549435e-38,
                      3.4028235e38, 3.4028234e38, 5e-324, 2.2250738585072014e-308, 1.7976931348623157e308, 1e308,
                      1e-310, 1e38, 1e39, np.nan, -np.nan, np.inf, -np.inf])
    whole = np.rint(rng.standard_normal(n) * 10.0 ** rng.integers(0, 18, n))
    near = whole + rng.choice([-0.5, 0.5, 1e-7, -1e-7, 0.49, 1e-3], n)
    bits = rng.integers(0, 2**64, n, dtype=np.uint64).view(np.float64)
    bits32 = rng.integers(0, 2**32, n, dtype=np.uint64).astype(np.uint32).view(np.float32).astype(np.float64)
    scaled = rng.standard_normal(n) * 10.0 ** rng.integers(-320, 308, n)
    pool = np.concatenate([edges, whole, near, bits, bits32, scaled, rng.random(n), np.round(rng.random(n), 3)])
    return pool[rng.integers(0, pool.size, n)]


@pytest.mark.parametrize("seed", range(6))
def test_vectorised_float_text_equals_value_by_value_on_awkward_mixes(seed):
    """Arrays mixing every kind of value, in proportions that take each branch of the vectorised path
    (mostly %.6g, mostly the longer text, some non-finite, all non-finite)."""
    rng = np.random.default_rng(seed)
    for _ in range(60):
        n = int(rng.integers(_SMALL + 1, 3000))
        with np.errstate(invalid="ignore"):  # NaN bit patterns cast
            values = _awkward_values(rng, n)
        if rng.random() < 0.3:  # mostly short texts: only a few values keep all their digits
            values = np.where(rng.random(n) < 0.9, np.round(rng.random(n), int(rng.integers(0, 6))), values)
        if rng.random() < 0.05:
            values = np.full(n, rng.choice([np.nan, np.inf, -np.inf]))
        for dtype in (np.float32, np.float64):
            with np.errstate(over="ignore", invalid="ignore"):
                a = values.astype(dtype)
            single = dtype == np.float32
            assert float_tokens(a, single) == _float_tokens_small(a.tolist(), single), (dtype, a[:8])


def test_vectorised_float_text_on_whole_numbers_and_long_arrays():
    """Whole-number tensors (every text gets ".0" or not) and an MNIST-image-sized one."""
    rng = np.random.default_rng(5)
    for a64 in (np.arange(-5000, 5000, dtype=np.float64), np.arange(0, 3e9, 1e6 - 1), rng.random(78400),
                np.linspace(-1e7, 1e7, 30001), -np.zeros(100)):
        for dtype in (np.float32, np.float64):
            a = a64.astype(dtype)
            single = dtype == np.float32
            assert float_tokens(a, single) == _float_tokens_small(a.tolist(), single)
    assert float_tokens(-np.zeros(100, np.float32), True) == ["-0.0"] * 100
    assert float_tokens(np.full(100, 1e6), False) == ["1e+06"] * 100

# ---- plain-number bodies: the orjson pass's shortcuts against the exact (rapidjson) pass -----------

def _exact(body, specs):
    """The rapidjson emulation alone, or the error it raises: the reference every pass must equal."""
    try:
        return _parse_predict(body, specs, exact=True)
    except Exception as e:  # noqa: BLE001
        return e


def _full(body, specs):
    """parse_predict_request with every pass (what the server runs), or the error it raises."""
    try:
        return parse_predict_request(body, specs)
    except Exception as e:  # noqa: BLE001
        return e


def _short_literal(rng: random.Random) -> str:
    """Literals of at most 15 digits and no exponent: rapidjson reads them correctly rounded, so the
    orjson pass casts them without a rounding test."""
    kind = rng.randrange(7)
    if kind == 0:
        return str(rng.randint(0, 255))
    if kind == 1:
        return "%.1f" % rng.randint(0, 255)
    if kind == 2:
        return ("-" if rng.random() < 0.3 else "") + "0." + "".join(rng.choice("0123456789") for _ in range(rng.randint(1, 13)))
    if kind == 3:
        return rng.choice(["0", "-0", "0.0", "-0.0", "1", "-1", "0.5", "0.1234567", "255", "255.0"])
    if kind == 4:
        return repr(round(rng.uniform(-1000, 1000), rng.randint(0, 10)))[:15].rstrip(".")
    if kind == 5:  # a float32 value's shortest text when it is short, else a random 7-digit decimal
        t = repr(float(np.float32(rng.uniform(-1, 1))))
        return t if len(t) <= 15 and "e" not in t else "%.7f" % rng.uniform(-1, 1)
    return str(rng.randint(-10**14, 10**14))


def _long_literal(rng: random.Random) -> str:
    """Literals where rapidjson's default precision can differ from correct rounding."""
    kind = rng.randrange(5)
    if kind == 0:
        return repr(rng.uniform(-1, 1))  # 16-17 significant digits
    if kind == 1:
        return repr(float(np.float32(rng.uniform(0, 1))))
    if kind == 2:
        return f"{rng.randint(1, 10**rng.randint(1, 19))}e{rng.randint(-60, 40)}"
    if kind == 3:  # on a float32 rounding boundary, written with 17+ digits
        f = np.float32(rng.uniform(0.5, 2))
        return "%.20g" % ((float(f) + float(np.nextafter(f, np.float32(3)))) / 2)
    return "0." + "".join(rng.choice("0123456789") for _ in range(rng.randint(16, 30)))


def _layout(rng: random.Random, literals: list, shape: tuple, key: str) -> bytes:
    """A body in one of the layouts clients use (compact, json.dumps' spaces, named input, signature)."""
    flat = iter(literals)

    def nested(dims):
        return "[" + sep.join(nested(dims[1:]) for _ in range(dims[0])) + "]" if dims else next(flat)

    sep = rng.choice([",", ", ", " , ", ",\n  "])
    array = nested(shape)
    value = '{"x": %s}' % array if key == "inputs" and rng.random() < 0.3 else array
    sig = '"signature_name": "%s", ' % rng.choice(["", "serving_default", "tf_fast"]) if rng.random() < 0.3 else ""
    return ('{%s"%s": %s}' % (sig, key, value)).encode()


def _assert_same(got, want, body):
    if isinstance(want, Exception):
        assert type(got) is type(want) and str(got) == str(want), body[:120]
    else:
        assert not isinstance(got, Exception), (body[:120], got)
        assert _same(got, want), body[:120]


@pytest.mark.parametrize("dtype", ["float", "double"])
def test_plain_number_bodies_are_bit_identical_to_the_exact_pass(dtype):
    rng, specs, fast = random.Random(17), {"x": dtype}, 0
    for i in range(400):
        shape = rng.choice([(1,), (5,), (3, 4), (2, 28, 28), (4, 1, 3), (1, 2, 2, 2)])
        count = int(np.prod(shape))
        long_share = 0.0 if i % 2 else rng.choice([0.01, 0.3, 1.0])
        literals = [_long_literal(rng) if rng.random() < long_share else _short_literal(rng) for _ in range(count)]
        body = _layout(rng, literals, shape, rng.choice(["instances", "inputs"]))
        want = _exact(body, specs)
        got = _full(body, specs)
        _assert_same(got, want, body)
        try:
            _parse_strict(body, specs)
            fast += 1
        except _NeedExact:
            pass
    assert fast > 200  # the short-literal bodies do take the C pass


@pytest.mark.parametrize("body", [
    b'{"instances": [[1.0, 2.0], [3.0]]}',  # ragged
    b'{"instances": [[1.0, 2.0], 3.0]}',
    b'{"instances": [1.0, [2.0]]}',
    b'{"instances": [1.0, true]}', b'{"instances": [false, 0.5]}', b'{"inputs": [[true]]}',
    b'{"signature_name": "tf", "instances": [1.0, true]}',
    b'{"signature_name": "ft", "inputs": {"tf": [1.0, false]}}',
    b'{"instances": [1.0, null]}', b'{"instances": [1.0, "2.0"]}', b'{"instances": [-0, -0.0, 0]}',
    b'{"instances": [1.0, 2.0e0]}', b'{"instances": [0.30000000000000004, 1E-7]}',
    b'{"instances": [1.0, 2.0]', b'{"instances": [1.0, 2.0,]}', b'{"instances": [01.5]}',
    b'{"instances": [1.5], "signature_name": 7}', b'{"instances": [], "inputs": [1]}',
    b'{"instances": [1.0]}  ', b'{"instances": [[]]}', b'{"inputs": []}',
])
@pytest.mark.parametrize("dtype", ["float", "double", "int32", "bool"])
def test_plain_number_shortcuts_fall_back_or_fail_exactly_as_before(body, dtype):
    specs = {"x": dtype} if b'"tf"' not in body else {"tf": dtype}
    want = _exact(body, specs)
    got = _full(body, specs)
    _assert_same(got, want, body)


def test_bool_guard_counts_only_letters_outside_the_documents_names():
    specs = {"input_t": "float", "f": "float"}
    plain = b'{"signature_name": "tf", "instances": [{"input_t": [1.0, 2.5], "f": 0}, {"input_t": [3, 4], "f": 1}]}'
    assert _same(_parse_strict(plain, specs), _exact(plain, specs))  # names with t/f: still the C pass
    for body in (plain.replace(b"2.5", b"true"), plain.replace(b'"f": 0', b'"f": false'),
                 b'{"inputs": {"input_t": [1.0, 2.5], "f": [true]}}', b'{"inputs": {"input_t": [1.0], "f": 1, "f": 0}}'):
        with pytest.raises(_NeedExact):
            _parse_strict(body, specs)
        _assert_same(_exact(body, specs), _reference(body, specs), body)
        got = _full(body, specs)
        _assert_same(got, _exact(body, specs), body)


def test_short_literals_parse_the_same_in_orjson_and_rapidjson():
    """The premise of the no-test cast: without an exponent and with at most 15 characters of
    digits and point, rapidjson 1.1.0's double is the correctly rounded one."""
    from serving.rest_api.rapidjson_numbers import _rj_number, may_round_differently
    rng = random.Random(23)
    for _ in range(30000):
        digits = "".join(rng.choice("0123456789") for _ in range(rng.randint(1, 15))).lstrip("0") or "0"
        point = rng.randint(1, len(digits))
        lit = digits if point == len(digits) else digits[:point] + "." + digits[point:]
        lit = lit if len(lit) <= 15 else lit[:15].rstrip(".")
        assert not may_round_differently(lit.encode()), lit
        fast = orjson.loads(lit)
        assert struct.pack("d", float(fast)) == struct.pack("d", _rj_number(lit)), lit


def test_vectorised_risky_literal_test_matches_its_definition():
    import re

    from serving.rest_api.rapidjson_numbers import may_round_differently
    pattern = re.compile(r"[0-9./]{16}|[0-9][eE]")
    rng = random.Random(29)
    for _ in range(20000):
        text = "".join(rng.choice('0123456789.eE,[]-+ ab/"\u00e9') for _ in range(rng.randint(0, 40)))
        assert may_round_differently(text) == (pattern.search(text) is not None), text
        assert may_round_differently(text.encode()) == (pattern.search(text) is not None), text


def test_cheap_boundary_pretest_flags_whatever_the_full_test_flags():
    from serving.rest_api.json_arrays import _may_be_near_boundary
    rng = np.random.default_rng(31)
    f = rng.standard_normal(20000).astype(np.float32) * np.float32(1000)
    mid = (f.astype(np.float64) + np.nextafter(f, np.float32(np.inf)).astype(np.float64)) / 2
    ulp = np.spacing(mid)
    cases = [mid + ulp * k for k in range(-40, 41, 3)]
    cases += [rng.uniform(-1, 1, 20000), f.astype(np.float64), np.array([1e-39, -1e-40, 1.2e-38, 0.0, -0.0])]
    flagged = 0
    for a64 in cases:
        for v in np.array_split(a64, 200):
            full = _needs_exact_by_boundary_test(v)
            flagged += full
            assert not full or _may_be_near_boundary(v), v[:3]
    assert flagged > 100

