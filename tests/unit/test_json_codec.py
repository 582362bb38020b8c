"""serving.rest_api.json_codec against TF Serving 2.16's REST JSON behaviour.

Expected texts come from tensorflow_serving/util/json_tensor.cc and json_tensor_test.cc; numbers,
layouts and parse errors marked "(rapidjson 1.1.0)" / "(absl)" were produced by compiling those
libraries (the versions TF Serving 2.16 builds against) and feeding them the same input.
"""
import base64
import json
import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from serving.rest_api import json_codec as jc  # noqa: E402
from serving.rest_api import json_examples  # noqa: E402
from serving.rest_api import json_responses as jr  # noqa: E402
from serving.rest_api.json_codec import JsonCodecError  # noqa: E402

INT = {"default": "int32"}


def parse(body, specs=INT):
    return jc.parse_predict_request(body, specs)


def error(body, specs=INT) -> JsonCodecError:
    with pytest.raises(JsonCodecError) as info:
        jc.parse_predict_request(body, specs)
    return info.value


def f32(hex_text: str) -> np.float32:
    return np.float32(float.fromhex(hex_text))


# ---- predict request: row format ("instances") -------------------------------------------

def test_row_single_unnamed_tensor():
    req = parse('{"instances": [[1,2],[3,4],[5,6]]}')
    assert (req.signature_name, req.format) == ("serving_default", "row")
    assert req.inputs["default"].dtype == np.int32
    assert req.inputs["default"].tolist() == [[1, 2], [3, 4], [5, 6]]


def test_row_accepts_str_bytes_and_non_null_terminated_buffers():
    body = b'{"instances": [[1,2],[3,4],[5,6]]}X'
    assert parse(memoryview(body)[:-1]).inputs["default"].shape == (3, 2)
    assert parse(bytearray(body[:-1])).inputs["default"].shape == (3, 2)


def test_ints_and_floats_mix_in_float_and_double_tensors():
    f = parse('{"instances": [1, 2.0, 3, 4, 5.003, 0.007, 0.0]}', {"x": "float"}).inputs["x"]
    assert f.dtype == np.float32
    assert f.tolist() == np.array([1, 2, 3, 4, 5.003, 0.007, 0], np.float32).tolist()
    d = parse('{"instances": [1.0, 2, 3, 4, 0.662, 0, 0.0]}', {"x": "double"}).inputs["x"]
    assert d.dtype == np.float64 and d.tolist() == [1, 2, 3, 4, 0.662, 0, 0]


def test_float_precision_loss_is_accepted_like_tf_serving():
    for body in ('{"instances": [1435774380]}', '{"instances": [1435774380.0]}'):
        assert parse(body, {"x": "float"}).inputs["x"][0] == np.float32(1435774380)


def test_float_overflow_gives_inf_and_underflow_zero():
    body = ('{"instances": [1.7976931348623157e308, -1.7976931348623157e308, '
            '2.2250738585072014e-308, -2.2250738585072014e-308]}')
    x = parse(body, {"x": "float"}).inputs["x"]
    assert x[0] == np.inf and x[1] == -np.inf and x[2] == 0 and x[3] == 0 and np.signbit(x[3])


def test_signature_name_is_passed_through():
    assert parse('{"signature_name": "predict_images", "instances": [[1,2]]}').signature_name == "predict_images"
    assert parse('{"signature_name": "", "instances": [[1,2]]}').signature_name == "serving_default"


def test_b64_scalars_lists_and_named():
    s = {"default": "string"}
    scalars = parse('{"instances": [{"b64": "aGVsbG8="}, {"b64": "d29ybGQ="}]}', s).inputs["default"]
    assert scalars.tolist() == [b"hello", b"world"]
    lists = parse('{"instances": [[{"b64": "aGVsbG8="}], [{"b64": "d29ybGQ="}]]}', s).inputs["default"]
    assert lists.shape == (2, 1) and lists.dtype == object
    named = parse('{"instances": [{"default": [[{"b64": "aGVsbG8="}], [{"b64": "d29ybGQ="}]]}]}', s).inputs["default"]
    assert named.shape == (1, 2, 1) and named.ravel().tolist() == [b"hello", b"world"]


def test_b64_follows_absl_rules_whitespace_and_missing_padding_allowed():
    s = {"default": "string"}
    body = '{"instances": [{"b64": "aGVs bG8"}, {"b64": "aGVsbG8."}, {"b64": ""}]}'
    assert parse(body, s).inputs["default"].tolist() == [b"hello", b"hello", b""]


def test_multiple_named_tensors_with_nan_and_infinity():
    specs = {"int_tensor": "int32", "str_tensor": "string", "float_tensor": "float", "dbl_tensor": "double"}
    req = parse('''{"instances": [
        {"int_tensor": [[1,2],[3,4],[5,6]], "str_tensor": ["foo", "bar"], "float_tensor": [1.0, NaN],
         "dbl_tensor": [NaN]},
        {"int_tensor": [[7,8],[9,0],[1,2]], "str_tensor": ["baz", "bat"], "float_tensor": [2.0, Infinity],
         "dbl_tensor": [2.0]}]}''', specs)
    assert req.inputs["int_tensor"].shape == (2, 3, 2)
    assert req.inputs["str_tensor"].tolist() == [[b"foo", b"bar"], [b"baz", b"bat"]]
    ft = req.inputs["float_tensor"]
    assert ft.dtype == np.float32 and ft[0, 0] == 1 and np.isnan(ft[0, 1]) and ft[1, 1] == np.inf
    assert req.inputs["dbl_tensor"].dtype == np.float64 and np.isnan(req.inputs["dbl_tensor"][0, 0])


def test_bool_string_and_narrow_int_inputs():
    req = parse('{"inputs": {"b": [true, false], "s": ["h\\u00e9", "x"], "u": [300, -1], "i": [9223372036854775807]}}',
                {"b": "bool", "s": "string", "u": "uint8", "i": "int64"})
    assert req.inputs["b"].dtype == np.bool_ and req.inputs["b"].tolist() == [True, False]
    assert req.inputs["s"].tolist() == ["hé".encode(), b"x"]
    assert req.inputs["u"].dtype == np.uint8 and req.inputs["u"].tolist() == [44, 255]  # int_val wraps
    assert req.inputs["i"].tolist() == [2**63 - 1]


def test_bools_are_not_numbers_even_next_to_numbers():
    assert error('{"instances": [1.5, true]}', {"x": "float"}).message.endswith(
        "JSON Value: true Type: True is not of expected type: float")
    assert error('{"instances": [true, 1]}', {"x": "bool"}).message.endswith(
        "JSON Value: 1 Type: Number is not of expected type: bool")


def test_empty_inner_lists_keep_their_shape():
    assert parse('{"instances": [[], []]}', {"x": "float"}).inputs["x"].shape == (2, 0)
    assert parse('{"inputs": []}', {"x": "int32"}).inputs["x"].shape == (0,)


def test_specs_accept_tf_dtypes_tensor_specs_tuples_and_a_callable():
    import tensorflow as tf

    seen = []

    def specs(signature):
        seen.append(signature)
        return {"a": (tf.float32, [None, 2]), "b": tf.TensorSpec([None], tf.string), "c": tf.int64}

    req = parse('{"signature_name": "sig", "instances": [{"a": [1, 2], "b": "x", "c": 3}]}', specs)
    assert seen == ["sig"]
    assert (req.inputs["a"].dtype, req.inputs["b"].dtype, req.inputs["c"].dtype) == (np.float32, object, np.int64)
    req = parse('{"instances": [1]}', lambda sig: seen.append(sig) or {"x": np.float64})
    assert req.inputs["x"].dtype == np.float64
    assert seen[-1] == "serving_default"


# ---- predict request: columnar format ("inputs") -----------------------------------------

def test_columnar_named_and_bare():
    for body in ('{"inputs": {"int_tensor": [[[1,2],[3,4],[5,6]]]}}', '{"inputs": [[[1,2],[3,4],[5,6]]]}'):
        req = parse(body, {"int_tensor": "int32"})
        assert req.format == "columnar" and req.inputs["int_tensor"].shape == (1, 3, 2)


def test_columnar_multiple_named_with_scalar_b64_and_extra_keys_ignored():
    req = parse('{"inputs": {"int_tensor": [[[1,2],[3,4],[5,6]]], "str_tensor": ["foo", "bar"], '
                '"bin_tensor": {"b64": "aGVsbG8="}, "ignored": {"x": 1}}}',
                {"int_tensor": "int32", "str_tensor": "string", "bin_tensor": "string"})
    assert sorted(req.inputs) == ["bin_tensor", "int_tensor", "str_tensor"]
    assert req.inputs["bin_tensor"].shape == () and req.inputs["bin_tensor"].item() == b"hello"
    assert parse('{"inputs": {"b64": "aGk="}}', {"x": "string"}).inputs["x"].item() == b"hi"


def test_columnar_inputs_need_not_share_a_batch_size():
    req = parse('{"inputs": {"a": [1, 2, 3], "b": [[1.5]]}}', {"a": "int32", "b": "float"})
    assert req.inputs["a"].shape == (3,) and req.inputs["b"].shape == (1, 1)


# ---- predict request: errors ---------------------------------------------------------------

@pytest.mark.parametrize("body, message", [
    ("", "JSON Parse error: The document is empty"),
    ("  ", "JSON Parse error: The document is empty. at offset: 2"),  # rapidjson 1.1.0
    ('{"a": [1 2]}', "JSON Parse error: Missing a comma or ']' after an array element. at offset: 9"),
    ('{"a": {"b": 1 "c": 2}}', "JSON Parse error: Missing a comma or '}' after an object member. at offset: 14"),
    ('{"a" 1}', "JSON Parse error: Missing a colon after a name of object member. at offset: 5"),
    ('{"a": tru}', "JSON Parse error: Invalid value. at offset: 9"),
    ('{"a": 1}}', "JSON Parse error: The document root must not be followed by other values. at offset: 8"),
    ('{"a": "\\q"}', "JSON Parse error: Invalid escape character in string. at offset: 7"),
    ('{"a": "\\u12G4"}', "JSON Parse error: Incorrect hex digit after \\u escape in string. at offset: 7"),
    ('{"a": "\\ud800"}', "JSON Parse error: The surrogate pair in string is invalid. at offset: 7"),
    ('{"a": "abc', "JSON Parse error: Missing a closing quotation mark in string. at offset: 10"),
    ('{"a": 1,}', "JSON Parse error: Missing a name for object member. at offset: 8"),
    ('{"a": 1.}', "JSON Parse error: Miss fraction part in number. at offset: 8"),
    ('{"a": 1e400}', "JSON Parse error: Number too big to be stored in double. at offset: 6"),
    ('{"\u00e9": [1 2]}', "JSON Parse error: Missing a comma or ']' after an array element. at offset: 10"),
    ("[1, 2]", "JSON Value: [\n    1,\n    2\n] Is not object"),
    ('"x"', 'JSON Value: "x" Is not object'),
])
def test_parse_errors_match_rapidjson(body, message):
    err = error(body)
    assert err.message == message and str(err) == message and err.code == "INVALID_ARGUMENT"


def _nested(depth: int, leaf: str = "0.5") -> str:
    return "[" * depth + leaf + "]" * depth


@pytest.mark.parametrize("key", ["instances", "inputs"])
def test_tensors_of_more_than_32_dimensions_are_a_clear_400(key):
    assert parse('{"%s": %s}' % (key, _nested(32)), {"x": "float"}).inputs["x"].ndim == 32
    for depth, rank in ((33, 33), (34, 34), (40, 40), (500, 500)):
        err = error('{"%s": %s}' % (key, _nested(depth)), {"x": "float"})
        what = "The 'instances' tensor" if key == "instances" else "The 'inputs' tensor"
        assert err.code == "INVALID_ARGUMENT" and err.http_status == 400
        assert err.message.endswith(f"{what} has {rank} dimensions; this server supports at most 32 (numpy's limit)")
    named = error('{"inputs": {"x": %s}}' % _nested(33), {"x": "float"})
    assert named.message == "Input tensor x has 33 dimensions; this server supports at most 32 (numpy's limit)"
    rows = error('{"instances": [{"x": %s}]}' % _nested(32), {"x": "float"})
    assert rows.message.endswith("Input tensor x has 33 dimensions; this server supports at most 32 (numpy's limit)")


@pytest.mark.parametrize("body", [
    '{"instances": %s}' % _nested(100000),
    '{"inputs": %s}' % _nested(100000, '"s"'),
    '{"instances": ' + "[" * 100000,
    '{"instances": [' + '{"a": ' * 100000,
    '{"signature_name": 5, "instances": %s}' % _nested(960),  # decodes, but is too deep to print back
])
def test_nesting_deeper_than_python_recursion_is_a_400_not_a_crash(body):
    for specs in ({"x": "float"}, {"x": "string"}):
        err = error(body, specs)
        assert err.code == "INVALID_ARGUMENT" and err.http_status == 400 and "this server" in err.message
    with pytest.raises(JsonCodecError) as info:
        json_examples.parse_classify_regress_request(body.replace("instances", "examples"))
    assert info.value.code == "INVALID_ARGUMENT"


def test_request_shape_errors():
    assert error('{"signature_name": 5, "instances": [[1.5, 2]]}').message == (
        'JSON Value: {\n    "signature_name": 5,\n    "instances": [\n        [\n            1.5,\n'
        "            2\n        ]\n    ]\n} not formatted correctly. 'signature_name' key must be a string value.")
    assert error('{"instances": [1], "inputs": [1]}').message == (
        'JSON Value: {\n    "instances": [\n        1\n    ],\n    "inputs": [\n        1\n    ]\n} '
        "Not formatted correctly expecting only one of 'inputs' or 'instances' keys to exist ")
    assert error('{"instances": {"a": 1}}').message == (
        "JSON Value: {\n    \"instances\": {\n        \"a\": 1\n    }\n} Expecting 'instances' to be an list/array")
    assert error('{"instances": []}').message == (
        "JSON Value: {\n    \"instances\": []\n} No values in 'instances' array")
    assert error('{"signature_name": "x"}').message == "Missing 'inputs' or 'instances' key"
    assert error('{"instances": [1]}', {}).message == "Failed to get input map for signature: DEFAULT"
    assert error('{"signature_name": "s", "instances": [1]}', {}).message == "Failed to get input map for signature: s"


def test_echoed_documents_use_rapidjson_number_text():
    # Grisu2 digits are not Python's repr (rapidjson 1.1.0 output for the same document).
    body = '{"instances": [442968815166536.75, 5.3193987317615624e+16, 1e21, 1e-7, -0.0], "inputs": 1}'
    assert error(body).message.startswith(
        'JSON Value: {\n    "instances": [\n        442968815166536.78,\n        53193987317615627.0,\n'
        '        1e21,\n        1e-7,\n        -0.0\n    ],\n    "inputs": 1\n} Not formatted')
    # rapidjson's writer refuses NaN, which cuts the echoed document short.
    assert error('{"instances": [1, NaN, 2], "inputs": 1}').message == (
        'JSON Value: {\n    "instances": [\n        1,\n         Not formatted correctly expecting only one of '
        "'inputs' or 'instances' keys to exist ")


@pytest.mark.parametrize("body, message", [
    ('{"instances": [[1,2],[3,4],[5,6,7]]}', "Failed to process element: 2 of 'instances' list. Error: "
     "INVALID_ARGUMENT: Expecting tensor size: 2 but got: 3"),
    ('{"instances": [[1,2],[3,4],[[5,6]]]}', "Failed to process element: 2 of 'instances' list. Error: "
     "INVALID_ARGUMENT: Expecting shape [2] but got: [1,2]"),
    ('{"instances": [1, [1]]}', "Failed to process element: 1 of 'instances' list. Error: "
     "INVALID_ARGUMENT: Expecting shape [] but got: [1]"),
    ('{"instances": [[1,2],["a", "b"]]}', "Failed to process element: 1 of 'instances' list. Error: "
     'INVALID_ARGUMENT: JSON Value: "a" Type: String is not of expected type: int32'),
    ('{"instances": [[1, [2]]]}', "Failed to process element: 0 of 'instances' list. Error: "
     "INVALID_ARGUMENT: Encountered list at unexpected level: 1 expected < 1"),
    ('{"instances": [[[1], 2]]}', "Failed to process element: 0 of 'instances' list. Error: "
     "INVALID_ARGUMENT: JSON Value: 2 found at incorrect level: 2 in the JSON DOM. Expected at level: 2"),
    ('{"instances": [[[1, 2], [3]]]}', "Failed to process element: 0 of 'instances' list. Error: "
     "INVALID_ARGUMENT: Encountered list at unexpected size: 1 at level: 1 expected size: 2"),
    ('{"instances": [1.5]}', "Failed to process element: 0 of 'instances' list. Error: "
     "INVALID_ARGUMENT: JSON Value: 1.5 Type: Number is not of expected type: int32"),
    ('{"instances": [2147483648]}', "Failed to process element: 0 of 'instances' list. Error: "
     "INVALID_ARGUMENT: JSON Value: 2147483648 Type: Number is not of expected type: int32"),
    ('{"instances": [null]}', "Failed to process element: 0 of 'instances' list. Error: "
     "INVALID_ARGUMENT: JSON Value: null Type: Null is not of expected type: int32"),
    ('{"instances": [{"b64": "aGk="}]}', "Failed to process element: 0 of 'instances' list. Error: "
     'INVALID_ARGUMENT: JSON Value: {\n    "b64": "aGk="\n} Type: Object is not of expected type: int32'),
])
def test_instance_errors(body, message):
    assert error(body).message == message


def test_error_values_are_printed_like_write_decimal():
    # Doubles within float range print as floats via absl::StrCat (absl output for these values).
    assert "JSON Value: 1.23456788 Type: Number" in error('{"instances": [1.23456789]}').message
    assert "JSON Value: 1e-07 Type: Number" in error('{"instances": [1e-7]}').message
    assert "JSON Value: 3.0 Type: Number" in error('{"instances": [3.0]}').message
    assert "JSON Value: 1e+300 Type: Number" in error('{"instances": [1e300]}').message
    assert "JSON Value: NaN Type: Number" in error('{"instances": [NaN]}').message


def test_multiple_named_tensor_errors():
    specs = {"int_tensor": "int32", "str_tensor": "string"}
    assert error('{"instances": [1, 2]}', specs).message == (
        "instances is a plain list, but expecting list of objects as multiple input tensors required as per "
        "tensorinfo_map")
    assert error('{"instances": [{"int_tensor": [1], "str_tensor": ["a"]}, [1, 20, 30]]}', specs).message == (
        "Expecting object but got list at item 1 of input list")
    body = '{"instances": [["baz", "bar"], {"str_tensor": ["baz", "bat"]}]}'
    assert error(body, {"str_tensor": "string"}).message == (
        "Expecting value/list but got object at item 1 of input list")
    assert error('{"instances": [{"int_tensor": 1, "str_tensor": "a", "x": 1}]}', specs).message == (
        "Failed to process element: 0 key: x of 'instances' list. Error: INVALID_ARGUMENT: "
        "JSON object: does not have named input: x")
    assert error('{"instances": [{"int_tensor": 1, "str_tensor": "a"}, {"int_tensor": 2}]}', specs).message == (
        "Failed to process element: 1 of 'instances' list. JSON object: {\n    \"int_tensor\": 2\n} "
        "keys must be equal to: int_tensor,str_tensor")
    body = '{"instances": [{"int_tensor": [[1,2]], "str_tensor": "a"}, {"int_tensor": [[[7,8]]], "str_tensor": "b"}]}'
    assert error(body, specs).message == ("Failed to process element: 1 key: int_tensor of 'instances' list. Error: "
                                    "INVALID_ARGUMENT: Expecting shape [1,2] but got: [1,1,2]")
    assert error('{"instances": [{"int_tensor": [1,2,3], "str_tensor": "a"}, {"int_tensor": [1], "str_tensor": "b"}]}',
                 specs).message.endswith("INVALID_ARGUMENT: Expecting tensor size: 3 but got: 1")


def test_columnar_errors():
    specs = {"a": "int32", "b": "float"}
    assert error('{"inputs": [1]}', specs).message == (
        "inputs is a plain value/list, but expecting an object as multiple input tensors required as per "
        "tensorinfo_map")
    assert error('{"inputs": {"a": [1]}}', specs).message == "Missing named input: b in 'inputs' object."
    assert error('{"inputs": {"a": ["x"], "b": [1]}}', specs).message == (
        'JSON Value: "x" Type: String is not of expected type: int32')
    assert error('{"inputs": {"a": [1], "b": "1.0"}}', specs).message == (
        'JSON Value: "1.0" Type: String is not of expected type: float')


def test_base64_errors():
    s = {"x": "string"}
    assert error('{"inputs": [{"b64": "aGVsbG8=="}]}', s).message == "Unable to base64 decode"
    assert error('{"inputs": [{"b64": "a-_b"}]}', s).message == "Unable to base64 decode"
    assert error('{"inputs": [{"b64": 1}]}', s).message == (
        'JSON Value: {\n    "b64": 1\n} not formatted correctly for base64 data')
    assert error('{"instances": [{"b64": "aGk=", "x": 1}]}', s).message == (
        "Failed to process element: 0 key: b64 of 'instances' list. Error: INVALID_ARGUMENT: "
        "JSON object: does not have named input: b64")


def test_unsupported_input_dtype_is_unimplemented():
    err = error('{"inputs": [1]}', {"x": "complex64"})
    assert (err.code, err.message) == ("UNIMPLEMENTED", "Conversion of JSON Value: 1 to type: complex64")
    err = error('{"instances": [1]}', {"x": "half"})
    assert err.code == "INVALID_ARGUMENT" and err.message == (
        "Failed to process element: 0 of 'instances' list. Error: UNIMPLEMENTED: "
        "Conversion of JSON Value: 1 to type: half")


# ---- rapidjson number parsing ------------------------------------------------------------

# Literals whose correctly rounded value differs from what rapidjson 1.1.0's default-precision
# parser returns; the expected bits are rapidjson's.
RAPIDJSON_FLOATS = [("2.3364565335214135437e-2", "0x1.7ece18p-6"), ("7.0223502461885792789e-6", "0x1.d7431p-18"),
                    ("9.5752391815185544217e+1", "0x1.7f0272p+6"), ("9.5913471221923829456e+1", "0x1.7fa766p+6")]
RAPIDJSON_DOUBLES = [("12.640017441210393", "0x1.947b05db5bc89p+3"),
                     ("1.3660580664394519e-05", "0x1.ca5f7e90ba9ddp-17"),
                     ("9.442393466124833e-06", "0x1.3cd58ad1f0d01p-17"),
                     ("3823.3352735024996", "0x1.ddeaba8f7f0e6p+11")]


def test_float_inputs_match_rapidjson_where_correct_rounding_would_not():
    lits = [lit for lit, _ in RAPIDJSON_FLOATS]
    want = [f32(h) for _, h in RAPIDJSON_FLOATS]
    assert [np.float32(float(lit)) for lit in lits] != want  # the naive conversion differs
    filler = ", ".join(["0.5"] * 50)
    got = parse('{"instances": [%s, %s]}' % (filler, ", ".join(lits)), {"x": "float"}).inputs["x"][-4:]
    assert got.tolist() == want


def test_double_inputs_match_rapidjson():
    lits = [lit for lit, _ in RAPIDJSON_DOUBLES]
    want = [float.fromhex(h) for _, h in RAPIDJSON_DOUBLES]
    assert [float(lit) for lit in lits] != want
    assert parse('{"instances": [%s]}' % ", ".join(lits), {"x": "double"}).inputs["x"].tolist() == want
    assert parse('{"inputs": {"x": [%s]}}' % ", ".join(lits), {"x": "double"}).inputs["x"].tolist() == want


def test_integers_past_uint64_become_doubles_like_rapidjson():
    x = parse('{"instances": [18446744073709551616, 0.5]}', {"x": "double"}).inputs["x"]
    assert x.tolist() == [2.0**64, 0.5]
    assert error('{"instances": [18446744073709551616]}', {"x": "uint64"}).message.endswith(
        "JSON Value: 1.84467441e+19 Type: Number is not of expected type: uint64")


def test_quick_parse_of_float32_data_is_exact():
    x = np.random.default_rng(0).random((20, 50)).astype(np.float32)
    body = json.dumps({"instances": x.tolist()})
    assert np.array_equal(parse(body, {"x": "float"}).inputs["x"], x)
    y = np.random.default_rng(1).random((20, 50))
    assert np.array_equal(parse(json.dumps({"inputs": y.tolist()}), {"x": "float"}).inputs["x"], y.astype(np.float32))


# ---- predict response --------------------------------------------------------------------

def fmt(outputs, request_format="row", dtypes=None):
    return jr.format_predict_response(outputs, request_format, dtypes)


def test_row_single_output_layout():
    x = np.array([[[1, 2], [3, 4], [5, 6]], [[7, 8], [9, 0], [1, 2]]], np.int32)
    assert fmt({"int_tensor": x}) == (
        '{\n    "predictions": [[[1, 2], [3, 4], [5, 6]], [[7, 8], [9, 0], [1, 2]]\n    ]\n}')
    assert fmt({"s": np.array([1, 2, 3], np.int64)}) == '{\n    "predictions": [1, 2, 3\n    ]\n}'
    assert fmt({"s": np.zeros((0, 2), np.int32)}) == '{\n    "predictions": []\n}'


def test_row_multiple_outputs_layout_with_bytes():  # rapidjson 1.1.0 PrettyWriter output
    out = fmt({"a": np.array([[1, 2.5], [1, 2.5]], np.float32), "b_bytes": np.array([b"hi", b"hi"], object),
               "c": np.array([[[1, 2]], [[1, 2]]], np.int32),
               "d_bytes": np.array([[b"x", b"y"], [b"x", b"y"]], object)})
    item = ('        {\n            "a": [1.0, 2.5],\n            "b_bytes": {\n                "b64": "aGk="\n'
            '            },\n            "c": [[1, 2]],\n            "d_bytes": [{\n                    "b64": "eA=="\n'
            '                }, {\n                    "b64": "eQ=="\n                }]\n        }')
    assert out == '{\n    "predictions": [\n' + item + ",\n" + item + "\n    ]\n}"
    assert json.loads(out)["predictions"][0]["d_bytes"] == [{"b64": "eA=="}, {"b64": "eQ=="}]


def test_row_single_bytes_output_layout():
    assert fmt({"o_bytes": np.array([b"hi", b"hi"], object)}) == (
        '{\n    "predictions": [{\n            "b64": "aGk="\n        }, {\n            "b64": "aGk="\n'
        '        }\n    ]\n}')


def test_columnar_layouts():
    assert fmt({"a": np.array([[1, 2.5], [3, 0.1]], np.float32)}, "columnar") == (
        '{\n    "outputs": [\n        [\n            1.0,\n            2.5\n        ],\n        [\n'
        '            3.0,\n            0.1\n        ]\n    ]\n}')
    out = fmt({"a": np.array([[1, 2], [1, 2]], np.float32), "b_bytes": np.array([b"hi", b"x"], object),
               "c": np.float32(3), "e": np.zeros((0,), np.int32), "f": np.zeros((2, 0), np.int64)}, "columnar")
    assert out == (  # rapidjson 1.1.0 PrettyWriter output
        '{\n    "outputs": {\n        "a": [\n            [\n                1.0,\n                2.0\n'
        '            ],\n'
        '            [\n                1.0,\n                2.0\n            ]\n        ],\n        "b_bytes": [\n'
        '            {\n                "b64": "aGk="\n            },\n            {\n                "b64": "eA=="\n'
        '            }\n        ],\n        "c": 3.0,\n        "e": [],\n        "f": [\n            [],\n'
        '            []\n        ]\n    }\n}')
    assert fmt({"o_bytes": np.array(b"hi", object)}, "columnar") == (
        '{\n    "outputs": {\n        "b64": "aGk="\n    }\n}')


def test_float_text_is_write_decimal():
    x = np.array([9000000, 999999, 0.5, 0.0003, 0.00003, 555557.5, 0.1, 1 / 3, 1e-45, 3.4028234663852886e38, -0.0],
                 np.float32)
    body = fmt({"f": x}).split("[", 1)[1].split("\n")[0]
    assert body == ("9e+06, 999999.0, 0.5, 0.0003, 3e-05, 555557.5, 0.1, 0.333333343, 1.4013e-45, "
                    "3.40282347e+38, -0.0")  # absl output for the same floats
    d = np.array([0.1, 1 / 3, 5e-324, 1e300, 1e21, 2.0], np.float64)
    assert fmt({"d": d}).split("[", 1)[1].split("\n")[0] == (
        "0.1, 0.33333333333333331, 4.94066e-324, 1e+300, 1e+21, 2.0")


def test_non_finite_outputs_use_tokens():
    x = np.array([[np.nan, np.inf], [3, -np.inf]], np.float32)
    assert fmt({"f": x}) == '{\n    "predictions": [[NaN, Infinity], [3.0, -Infinity]\n    ]\n}'


def test_float32_outputs_round_trip_exactly():
    x = np.random.default_rng(2).standard_normal((64, 10)).astype(np.float32) * np.float32(1e-3)
    parsed = parse(fmt({"p": x}).replace('"predictions"', '"instances"'), {"p": "float"}).inputs["p"]
    assert np.array_equal(parsed, x)
    d = np.random.default_rng(3).standard_normal(100)
    assert np.array_equal(np.array(json.loads(fmt({"d": d}, "columnar"))["outputs"]), d)


def test_strings_bools_and_ints_in_outputs():
    out = fmt({"s": np.array(["h\u00e9", b"\x01\"\\/", b"\xff"], object), "b": np.array([True, False, True]),
               "u": np.array([255, 0, 7], np.uint8)})
    assert '"s": "h\u00e9"' in out and '"s": "\\u0001\\"\\\\/"' in out and '"s": "\ufffd"' in out
    assert '"b": true' in out and '"b": false' in out and '"u": 255' in out


def test_output_dtypes_override_inference():
    import tensorflow as tf

    out = fmt({"x": np.array([1.0, 2.0])}, "row", {"x": tf.float32})
    assert out == '{\n    "predictions": [1.0, 2.0\n    ]\n}'
    assert fmt({"x": np.array([1, 2])}, "row", {"x": "DT_DOUBLE"}) == '{\n    "predictions": [1.0, 2.0\n    ]\n}'


def test_response_errors():
    def err(*args):
        with pytest.raises(JsonCodecError) as info:
            fmt(*args)
        return info.value.message

    assert err({}) == "Cannot convert empty tensor map to JSON"
    assert err({"x": np.ones(2)}, "bogus") == "Invalid request format"
    assert err({"x": np.float32(1)}) == "Tensor name: x has no shape information "
    assert err({"a": np.ones((2, 3)), "b": np.ones((1, 3))}) == (
        "Tensor name: b has inconsistent batch size: 1 expecting: 2")
    assert err({"a": np.zeros((0, 2)), "b": np.ones((1, 2))}) == (
        "Tensor name: b has inconsistent batch size: 1 expecting: 0")
    assert err({"c": np.ones(2, np.complex64)}) == "Failed to write JSON value for tensor type: complex64"
    assert err({"h": np.ones(2, np.float16)}, "columnar") == "Failed to write JSON value for tensor type: half"
    assert fmt({"h": np.zeros((0,), np.float16)}) == '{\n    "predictions": []\n}'  # nothing to write


def test_error_body():
    assert jr.format_error_response('bad "k"\n\x01') == '{\n    "error": "bad \\"k\\"\\n\\u0001"\n}'


# ---- classify / regress --------------------------------------------------------------------

def examples_of(body):
    from tensorflow.core.example import example_pb2

    sig, serialized, context = json_examples.parse_classify_regress_request(body)
    parsed = [example_pb2.Example.FromString(s) for s in serialized]
    ctx = example_pb2.Example.FromString(context) if context is not None else None
    return sig, parsed, ctx


def feature(example, name):
    f = example.features.feature[name]
    kind = f.WhichOneof("kind")
    return kind, list(getattr(f, kind).value) if kind else []


def test_classify_request_without_context():
    sig, ex, ctx = examples_of('{"examples": [{"names": ["foo", "bar"], "ratings": [8.0, 9.0], "age": 20}, '
                               '{"names": ["baz"], "ratings": 6.0, "flags": [1, true, false], "none": []}]}')
    assert sig == "serving_default" and ctx is None and len(ex) == 2
    assert feature(ex[0], "names") == ("bytes_list", [b"foo", b"bar"])
    assert feature(ex[0], "ratings") == ("float_list", [8.0, 9.0])
    assert feature(ex[0], "age") == ("int64_list", [20])
    assert feature(ex[1], "flags") == ("int64_list", [1, 1, 0])
    assert feature(ex[1], "none") == (None, []) and "none" in ex[1].features.feature


def test_classify_request_with_context_merges_like_tf_serving():
    sig, ex, ctx = examples_of('{"signature_name": "custom", "context": {"query": "pizza", "location": ["sfo"], '
                               '"age": 1}, "examples": [{"names": ["baz", {"b64": "aGVsbG8="}], "ratings": '
                               '[NaN, Infinity, -Infinity, 1e39]}, {"age": 30}]}')
    assert sig == "custom" and feature(ctx, "query") == ("bytes_list", [b"pizza"])
    assert feature(ex[0], "query") == ("bytes_list", [b"pizza"])
    assert feature(ex[0], "location") == ("bytes_list", [b"sfo"])
    assert feature(ex[0], "names") == ("bytes_list", [b"baz", b"hello"])
    ratings = feature(ex[0], "ratings")[1]
    assert np.isnan(ratings[0]) and ratings[1:] == [np.inf, -np.inf, np.inf]  # 1e39 overflows the float
    assert feature(ex[0], "age") == ("int64_list", [1])
    assert feature(ex[1], "age") == ("int64_list", [30])  # the example's feature wins over the context's


@pytest.mark.parametrize("body, message", [
    ('{"signature_name": ["hello"], "examples": [{"names": ["foo"]}]}',
     'JSON Value: {\n    "signature_name": [\n        "hello"\n    ],\n    "examples": [\n        {\n'
     '            "names": [\n                "foo"\n            ]\n        }\n    ]\n} not formatted correctly. '
     "'signature_name' key must be a string value."),
    ('{"context": [{"names": ["foo"]}]}', "Example must be JSON object but got JSON Array"),
    ('{"context": {"a": 1}}', 'JSON Value: {\n    "context": {\n        "a": 1\n    }\n} When method is classify, '
     "key 'examples' is expected and was not found"),
    ('{"examples": {"names": ["foo"]}}', 'JSON Value: {\n    "examples": {\n        "names": [\n            "foo"\n'
     "        ]\n    }\n} Expecting 'examples' value to be an list/array"),
    ('{"examples": []}', "JSON Value: {\n    \"examples\": []\n} 'examples' value is an empty array"),
    ('{"examples": [[{"names": ["foo"]}]]}', "Example must be JSON object but got JSON Array"),
    ('{"examples": [{"names": [10, null]}]}', "Feature: names has element with unexpected JSON type: Null"),
    ('{"examples": [{"names": [10, 10.0]}]}', "Unexpected element type in feature: names expecting type: int64"),
    ('{"examples": [{"names": ["a", 1]}]}', "Unexpected element type in feature: names expecting type: bytes"),
    ('{"examples": [{"names": [1.5, true]}]}', "Unexpected element type in feature: names expecting type: float"),
    ('{"examples": [{"names": [10, {"test": 10}]}]}', "Feature: names has element with unexpected JSON type: Object"),
    ('{"examples": [{"names": [[10], 20]}]}', "Feature: names has element with unexpected JSON type: Array"),
    ('{"examples": [{"names": [20, 18446744073709551603]}]}',
     "Feature: names has uint64_t element. Only int64_t is supported."),
    ('{"examples": [{"names": {"b64": "%%%"}}]}', "Unable to base64 decode"),
])
def test_classify_request_errors(body, message):
    with pytest.raises(JsonCodecError) as info:
        json_examples.parse_classify_regress_request(body)
    assert info.value.message == message


def test_classify_and_regress_responses():
    classes = np.array([[b"car", b"bike", b"bus"], [b"car", b"bike", b"bus"]], object)
    scores = np.array([[0.2, 0.7, 0.1], [0.7, 0.1, 0.2]], np.float32)
    assert jr.format_classify_response(classes, scores) == (
        '{\n    "results": [[["car", 0.2], ["bike", 0.7], ["bus", 0.1]], '
        '[["car", 0.7], ["bike", 0.1], ["bus", 0.2]]\n    ]\n}')
    assert jr.format_classify_response(None, np.array([[0.5]])) == '{\n    "results": [[["", 0.5]]\n    ]\n}'
    assert jr.format_classify_response([["a"]], None) == '{\n    "results": [[["a", 0.0]]\n    ]\n}'
    assert jr.format_regress_response(np.array([0.2, 0.9, 1.0])) == '{\n    "results": [0.2, 0.9, 1.0]\n}'
    assert jr.format_regress_response(np.array([[0.2], [np.inf], [-np.inf], [np.nan]])) == (
        '{\n    "results": [0.2, Infinity, -Infinity, NaN]\n}')


def test_empty_classify_and_regress_results_are_errors():
    with pytest.raises(JsonCodecError, match="^Cannot convert empty ClassificationResults to JSON$"):
        jr.format_classify_response(np.zeros((0, 2), object), None)
    with pytest.raises(JsonCodecError, match="^Cannot convert empty RegressionResults to JSON$"):
        jr.format_regress_response(np.zeros(0))


def test_b64_round_trip_through_request_and_bytes_output():
    payload = bytes(range(256))
    body = json.dumps({"instances": [{"b64": base64.b64encode(payload).decode()}]})
    x = parse(body, {"img_bytes": "string"}).inputs["img_bytes"]
    out = json.loads(fmt({"img_bytes": x}))
    assert base64.b64decode(out["predictions"][0]["b64"]) == payload
