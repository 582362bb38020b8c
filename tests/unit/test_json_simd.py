"""The simdjson pass (serving/rest_api/json_simd.py) gives exactly what the exact (rapidjson 1.1.0)
pass gives, takes the plain bodies that make up the traffic, and refuses every body whose shape or
numbers it cannot prove: ragged arrays with a uniform shape's element count, deeper leaves, strings,
bools, escapes, duplicate keys, a BOM, risky literals."""
import concurrent.futures
import json
import random
import struct

import numpy as np
import pytest
import simdjson

from serving.rest_api.json_arrays import _NeedExact
from serving.rest_api.json_codec import _input_types, parse_predict_request
from tests.unit.test_json_fast import _assert_same, _exact, _full, _layout, _literals, _long_literal, _short_literal


def _plain(body, specs):
    """parse_plain's answer as a PredictRequest-like tuple, or None when it hands over."""
    from serving.rest_api.json_simd import parse_plain
    try:
        return parse_plain(body, lambda raw_sig: _input_types(specs, raw_sig))
    except _NeedExact:
        return None


def _check_plain(body, specs, want):
    """parse_plain took the body and its arrays are the exact pass's, bit for bit."""
    got = _plain(body, specs)
    assert got is not None, body[:120]
    assert not isinstance(want, Exception), (body[:120], want)
    sig, fmt, inputs = got
    assert (sig, fmt, sorted(inputs)) == (want.signature_name, want.format, sorted(want.inputs)), body[:120]
    for k, a in inputs.items():
        assert (a.dtype, a.shape, a.tobytes()) == (want.inputs[k].dtype, want.inputs[k].shape,
                                                   want.inputs[k].tobytes()), body[:120]
        assert a.flags.writeable and a.flags.c_contiguous


def test_simdjson_numbers_equal_the_json_modules():
    """The premise: simdjson's doubles are the correctly rounded ones (orjson's and the json module's),
    and an integer's double is float(int) (rapidjson's GetDouble() of an int64/uint64)."""
    rng = random.Random(41)
    literals = list(_literals(rng, 40000)) + ["0", "-0", "0.0", "-0.0", "1e-400", "4.9e-324", "9007199254740993",
                                               "18446744073709551615", "-9223372036854775808", "2.2250738585072011e-308"]
    read = 0
    for lit in literals:
        try:
            buf = simdjson.Parser().parse(("[%s]" % lit).encode()).as_buffer(of_type="d")
        except (ValueError, RuntimeError):
            continue  # simdjson refuses (1e400, integers past 64 bits): the parse hands over
        want = json.loads(lit)
        assert bytes(buf) == struct.pack("d", float(want)), lit
        read += 1
    assert read > 30000


@pytest.mark.parametrize("dtype", ["float", "double"])
def test_plain_bodies_take_the_simdjson_pass_bit_identical_to_the_exact_pass(dtype):
    rng, specs, taken = random.Random(43), {"x": dtype}, 0
    for i in range(300):
        shape = rng.choice([(1,), (7,), (3, 4), (2, 28, 28), (4, 1, 3), (1, 2, 2, 2), (2, 3, 1, 2)])
        count = int(np.prod(shape))
        long_share = 0.0 if i % 2 else rng.choice([0.01, 0.3, 1.0])
        literals = [_long_literal(rng) if rng.random() < long_share else _short_literal(rng) for _ in range(count)]
        body = _layout(rng, literals, shape, rng.choice(["instances", "inputs"]))
        want = _exact(body, specs)
        _assert_same(_full(body, specs), want, body)
        if not long_share:  # short literals: the pass must take it
            _check_plain(body, specs, want)
        elif _plain(body, specs) is not None:
            _check_plain(body, specs, want)
        taken += _plain(body, specs) is not None
    assert taken >= 150


def _mnist_texts(rng):
    """(name, literal array) for the ways clients write 3 MNIST images: integer pixels, pixels/255 as
    Python floats (17 digits), float32 values as numpy prints them (shortest, <= 9 digits), "12.0"."""
    pixels = rng.integers(0, 256, (3, 28, 28))
    yield "ints", pixels.astype(str)
    yield "div255", np.vectorize(repr)((pixels / 255).tolist())
    f32 = (pixels / 255).astype(np.float32)
    yield "float32", np.array([str(v) for v in f32.ravel()]).reshape(f32.shape)  # np.float32's str
    yield "float", np.vectorize(repr)(pixels.astype(float).tolist())


def test_the_mnist_bodies_clients_send_take_the_simdjson_pass():
    from serving.rest_api.rapidjson_numbers import may_round_differently
    for kind, texts in _mnist_texts(np.random.default_rng(47)):
        nested = "[" + ", ".join("[" + ", ".join("[" + ",".join(row) + "]" for row in img) + "]" for img in texts) + "]"
        for body in ('{"instances": %s}' % nested, '{"inputs": %s}' % nested,
                     '{"signature_name": "serving_default", "inputs": {"x": %s}}' % nested,
                     '{\n  "instances": %s\n}' % nested.replace("[", "[\n    ")):
            body = body.encode()
            for dtype in ("float", "double"):
                want = _exact(body, {"x": dtype})
                if dtype == "double" and may_round_differently(body):
                    assert kind == "div255" and _plain(body, {"x": dtype}) is None
                else:
                    _check_plain(body, {"x": dtype}, want)
                _assert_same(_full(body, {"x": dtype}), want, body)


@pytest.mark.parametrize("body", [
    b'{"instances": [[1.0, 2.0], [3.0, 4.0, 5.0], [6.0]]}',  # 6 values, as (3, 2) would have
    b'{"instances": [[1.0, 2.0], [3.0], [4.0, 5.0, 6.0]]}',
    b'{"instances": [[1, [2]], [3, 4]]}',  # a deeper leaf: same count, same lengths
    b'{"instances": [[[1], 2], [3, 4]]}',
    b'{"instances": [[1, 2], 3, [4, 5, 6]]}',
    b'{"instances": [[1], []]}', b'{"instances": [[1], [[]]]}', b'{"instances": [[[1, 2]], [[3], [4]]]}',
    b'{"instances": [[[1, 2], [3, 4]], [[5, 6], [7, 8], [9, 0]], [[1, 2]]]}',  # only the middle level is ragged
    b'{"instances": [[1, 2], [3, [4]]], "signature_name": "["}',  # a '[' in a string does not pay for it
    b'{"signature_name": "[[", "inputs": [[1, 2], [[3], 4]]}',
    b'{"inputs": {"x": [[1, 2], [3, [4]]]}}', b'{"inputs": {"x[": [[1, 2], [3, [4]]]}}',
    b'{"instances": [1.0, true]}', b'{"instances": [1.0, null]}', b'{"instances": [1.0, "2.0"]}',
    b'{"instances": [1.0, {"x": 2}]}', b'{"instances": [{"x": [1.0]}, {"x": [2.0]}]}',
    b'{"instances": [[]]}', b'{"instances": []}', b'{"inputs": 1.5}', b'{"inputs": {"x": 1.5}}',
    b'{"instances": [NaN]}', b'{"instances": [1e400]}', b'{"instances": [18446744073709551616]}',
    b'{"instances": [9223372036854775808]}', b'{"instances": [-9223372036854775809]}',
    b'\xef\xbb\xbf{"instances": [1.0]}',  # simdjson skips a BOM; rapidjson does not
    b'{"instances": [1.0], "instances": [2.0]}', b'{"inputs": {"x": [1.0], "x": [2.0]}}',
    b'{"instances": [1.0], "instances": 2.0}', b'{"inputs": {"x": [1.0], "x": 2.0}}',  # simdjson: the first
    b'{"signature_name": "a", "instances": [1.0], "signature_name": "b"}',
    b'{"instances": [1.0], "signature_name": "\\u005b"}',
    b'{"signature_name": "\\u005b", "instances": [[1, 2], [3, [4]]]}',  # an escaped '[' pays for none
    b'{"instances": [1.0], "other": 1}',
    b'{"instances": [[1, 2, 3], [4]], "signature_name": ",[,]"}',  # nor a string's brackets
    b'{"signature_name": "[[,],[,]]", "instances": [[1, [2]], [3, 4]]}',
    b'{"signature_name": "]", "instances": [[1, 2], [3, 4], [5]]}', b'{"inputs": {"x": [[1], []]}}',
    b'{"instances": [[1, 2, 3], [4]], "signature_name": "], ["}', b'{"instances": [[1, 2], [3, 1e]]}',
    b'{"instances": [[1, 2], [true, 4]]}', b'{"instances": [[1, 2], [3, 4], []]}', b'{"instances": [[1, 2], [3, 4]],}',
    b'{"instances": [1.0], "inputs": [1.0]}', b'{"instances": [1.0], "signature_name": 5}',
    b'{"inputs": {"x": [1.0], "y": [2.0]}}', b'{"inputs": {"y": [1.0]}}', b'{"inputs": {"b64": "AAAA"}}',
    b'{"instances": [1.0]} 5', b'{"instances": [1.0]}\xff', b'{"instances": [01.5]}', b'[1.0]', b'',
    b'{"instances": ' + b"[" * 33 + b"1.0" + b"]" * 33 + b"}",
    b'{"instances": [0.30000000000000004, 1.0000000596046448]}',  # on a float32 rounding boundary
    b'{"instances": [1.00000005960464477539062500000001]}',
])
@pytest.mark.parametrize("dtype", ["float", "double"])
def test_bodies_it_cannot_prove_go_to_the_other_passes(body, dtype):
    specs = {"x[": dtype} if b'"x["' in body else {"x": dtype}
    assert _plain(body, specs) is None, body
    _assert_same(_full(body, specs), _exact(body, specs), body)


@pytest.mark.parametrize("body", [
    b'{"signature_name": "[0, 1e5] [[", "instances": [[1.5, 2], [3, -0.0]]}',
    b'{"instances":[[1.5,2],[3,-0.0]],"signature_name":"sig [with] 1.5e3 \xc3\xa9"}',
    b'{"instances": [[1.5, 2], [3, -0.0]], "signature_name": "], [5, 6"}',
    b' \n\t{ "inputs" :\r\n [ [ 1.5 ,2 ] ,\n\t[3 , -0.0 ] ] }\n ',
    b'{"inputs": {"x": [[1.5, 2], [3, -0.0]]}, "signature_name": ""}',
    b'{"inputs": {"x": [[15e-1, 2E0], [3, -0]]}}',
    b'{"instances": [[1.5, 2.0], [3.0, 0.0]]}',
])
def test_layouts_strings_and_signed_zeros_keep_every_bit(body):
    from serving.rest_api.rapidjson_numbers import may_round_differently
    for dtype in ("float", "double"):
        specs = {"x": dtype}
        want = _exact(body, specs)
        if dtype == "double" and may_round_differently(body):
            assert _plain(body, specs) is None  # exponents are rounding risks for doubles
        else:
            _check_plain(body, specs, want)
        _assert_same(_full(body, specs), want, body)


def test_names_and_signatures_made_of_number_and_bracket_bytes_are_taken():
    """Names and signatures made of number, bracket and comma bytes neither fool the bracket count nor
    stop a uniform tensor from being taken. (As float: for double, a string's "9e9" is a rounding risk
    the other passes decide.)"""
    name = "e 1,[E-]."
    for body in (b'{"inputs": {"e 1,[E-].": [[1.5, 2], [3, -0.0]]}, "signature_name": "9e9 [,] "}',
                 b'{"signature_name":"[[,],[,]]","inputs":{"e 1,[E-].":[[1.5,2],[3,-0.0]]}}'):
        _check_plain(body, {name: "float"}, _exact(body, {name: "float"}))
    ragged = b'{"inputs": {"e 1,[E-].": [[1.5, 2, 3], [-0.0]]}, "signature_name": "9e9 [,]"}'
    assert _plain(ragged, {name: "float"}) is None


def test_other_dtypes_and_several_inputs_keep_the_current_passes():
    body = b'{"instances": [[1, 2], [3, 4]]}'
    for specs in ({"x": "int32"}, {"x": "int64"}, {"x": "bool"}, {"x": "string"}, {"x": "half"},
                  {"x": "float", "y": "float"}, {}):
        assert _plain(body, specs) is None, specs
        _assert_same(_full(body, specs), _exact(body, specs), body)


def test_the_signature_is_looked_up_only_for_valid_json():
    asked = []

    def specs(sig):
        asked.append(sig)
        raise KeyError(sig)

    for body in (b'{"instances": [1.0', b'{"signature_name": 1, "instances": [1.0]}'):
        assert isinstance(_full(body, specs), Exception) and not asked
    with pytest.raises(KeyError):
        parse_predict_request(b'{"signature_name": "s", "instances": [1.0]}', specs)
    assert asked == ["s"]


def test_threads_parse_at_once():
    rng = np.random.default_rng(53)
    bodies = [json.dumps({"instances": rng.integers(0, 256, (4, 28, 28)).tolist()}).encode() for _ in range(8)]
    want = [np.array(json.loads(b)["instances"], np.float32).tobytes() for b in bodies]

    def run(i):
        return _plain(bodies[i % 8], {"x": "float"})[2]["x"].tobytes() == want[i % 8]

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        assert all(pool.map(run, range(200)))


def _perturbed(rng: random.Random, shape: tuple):
    """A uniform nested list of numbers with one random change that keeps it valid JSON: a leaf moved
    to another list, wrapped in a list, a list unwrapped, an empty list added, or nothing."""
    counter = iter(range(10**6))

    def build(dims):
        return [build(dims[1:]) for _ in range(dims[0])] if dims else next(counter) / 4

    tree = build(shape)
    lists = []

    def collect(v):
        if isinstance(v, list):
            lists.append(v)
            for x in v:
                collect(x)

    collect(tree)
    src, dst = rng.choice(lists), rng.choice(lists)
    change = rng.randrange(5)
    if change == 0 and len(src) > 1:
        dst.append(src.pop(rng.randrange(len(src))))
    elif change == 1:
        i = rng.randrange(len(src))
        src[i] = [src[i]]
    elif change == 2 and src is not tree:
        i = rng.randrange(len(src))
        if isinstance(src[i], list) and src[i]:
            src[i:i + 1] = src[i]
    elif change == 3:
        dst.insert(rng.randrange(len(dst) + 1), [])
    return tree


def test_random_near_uniform_arrays_are_taken_only_when_uniform():
    rng, taken, refused = random.Random(59), 0, 0
    for _ in range(1500):
        shape = tuple(rng.randint(1, 3) for _ in range(rng.randint(1, 4)))
        tree = _perturbed(rng, shape)
        dims, v = [], tree
        while isinstance(v, list) and v:
            dims.append(len(v))
            v = v[0]
        uniform = not isinstance(v, list) and _is_uniform(tree, dims)  # under the first-element path's shape
        body = json.dumps({"signature_name": rng.choice(["", "[", "[[ 1,"]), "instances": tree}).encode()
        want = _exact(body, SPECS)
        if uniform:
            _check_plain(body, SPECS, want)
            taken += 1
        else:
            assert _plain(body, SPECS) is None, body
            refused += 1
        _assert_same(_full(body, SPECS), want, body)
    assert taken > 300 and refused > 300


SPECS = {"x": "float"}


def _is_uniform(v, dims) -> bool:
    if not dims:
        return not isinstance(v, list)
    return isinstance(v, list) and len(v) == dims[0] and all(_is_uniform(x, dims[1:]) for x in v)
