"""serving.grpc_api.tensor_proto against TensorFlow's C++ Tensor::FromProto / AsProtoField / AsProtoTensorContent
semantics (tensorflow/core/framework/tensor.cc, tensor_shape.cc, core/platform/tensor_coding.cc)."""
import os

os.environ["TF_USE_LEGACY_KERAS"] = "1"

import ml_dtypes  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from tensorflow.core.framework import tensor_pb2, types_pb2  # noqa: E402

from serving.grpc_api.tensor_proto import (NUMPY_MAX_DIMS, TensorProtoError, TensorTooLargeError,  # noqa: E402
                                           UnsupportedTensorError, datatype_of, describe, from_ndarray,
                                           tensor_bytes, to_ndarray)

NUMERIC = [np.float32, np.float64, np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32,
           np.uint64, np.complex64, np.complex128, np.float16, ml_dtypes.bfloat16, ml_dtypes.float8_e5m2,
           ml_dtypes.float8_e4m3fn, ml_dtypes.int4, ml_dtypes.uint4]
FIELDS = {np.float32: "float_val", np.float64: "double_val", np.int8: "int_val", np.int16: "int_val",
          np.int32: "int_val", np.int64: "int64_val", np.uint8: "int_val", np.uint16: "int_val",
          np.uint32: "uint32_val", np.uint64: "uint64_val", np.complex64: "scomplex_val",
          np.complex128: "dcomplex_val", np.float16: "half_val", ml_dtypes.bfloat16: "half_val",
          ml_dtypes.float8_e5m2: "float8_val", ml_dtypes.float8_e4m3fn: "float8_val", ml_dtypes.int4: "int_val",
          ml_dtypes.uint4: "int_val"}


def proto(dtype, shape=(), **fields):
    p = tensor_pb2.TensorProto(dtype=dtype, **fields)
    for size in shape:
        p.tensor_shape.dim.add(size=size)
    return p


def same(a, b):
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


@pytest.mark.parametrize("dtype", NUMERIC, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("content", [False, True], ids=["typed", "content"])
def test_round_trip_per_dtype(dtype, content):
    array = (np.arange(6) - 2).reshape(2, 3).astype(dtype) if np.dtype(dtype).kind != "u" \
        else np.arange(6).reshape(2, 3).astype(dtype)
    p = from_ndarray(array, content=content)
    assert p.dtype == datatype_of(array.dtype) and [d.size for d in p.tensor_shape.dim] == [2, 3]
    if content:
        assert p.tensor_content and not getattr(p, FIELDS[dtype])
    else:
        assert not p.tensor_content and len(getattr(p, FIELDS[dtype])) > 0
    assert same(to_ndarray(p), array)


def test_half_is_carried_as_bit_patterns_in_half_val():
    array = np.array([1.0, -2.5, np.inf], dtype=np.float16)
    p = from_ndarray(array)
    assert list(p.half_val) == [0x3C00, 0xC100, 0x7C00]
    assert same(to_ndarray(p), array)
    assert same(to_ndarray(proto(types_pb2.DT_BFLOAT16, (1,), half_val=[0x3F80])), np.array([1.0], ml_dtypes.bfloat16))


def test_bool_and_complex_pairs():
    flags = np.array([[True, False, True]])
    assert list(from_ndarray(flags).bool_val) == [True, False, True]
    assert same(to_ndarray(from_ndarray(flags, content=True)), flags)
    # a non-zero content byte is true
    assert to_ndarray(proto(types_pb2.DT_BOOL, (2,), tensor_content=b"\x00\x07")).tolist() == [False, True]
    z = np.array([1 + 2j, -3.5j], dtype=np.complex64)
    assert list(from_ndarray(z).scomplex_val) == [1, 2, 0, -3.5]


def test_strings_keep_nul_bytes_both_ways():
    strings = np.empty(4, dtype=object)
    strings[:] = [b"a\x00", b"", b"\x00\x00", "é".encode()]
    typed = from_ndarray(strings)
    assert list(typed.string_val) == list(strings)
    packed = from_ndarray(strings, content=True)
    assert packed.tensor_content == b"\x02\x00\x02\x02" + b"a\x00" + b"\x00\x00" + "é".encode()
    for p in (typed, packed):
        back = to_ndarray(p)
        assert back.dtype == object and back.tolist() == strings.tolist()
    assert to_ndarray(from_ndarray(np.array(["x", "yz"]))).tolist() == [b"x", b"yz"]  # str is written as UTF-8


def test_long_string_length_prefix_is_a_multi_byte_varint():
    long = b"x" * 300
    p = from_ndarray(np.array([long], dtype=object), content=True)
    assert p.tensor_content[:2] == b"\xac\x02"
    assert to_ndarray(p).tolist() == [long]


def test_scalar_has_an_empty_shape():
    p = from_ndarray(np.float32(2.5))
    assert p.HasField("tensor_shape") and len(p.tensor_shape.dim) == 0 and list(p.float_val) == [2.5]
    back = to_ndarray(p)
    assert back.shape == () and back.dtype == np.float32 and back == 2.5


def test_typed_fields_are_lenient_like_from_proto_field():
    # fewer values than elements: the last one repeats; none: zeros; more: cut to the shape
    assert to_ndarray(proto(types_pb2.DT_FLOAT, (5,), float_val=[1, 2])).tolist() == [1, 2, 2, 2, 2]
    assert to_ndarray(proto(types_pb2.DT_INT64, (2, 2))).tolist() == [[0, 0], [0, 0]]
    assert to_ndarray(proto(types_pb2.DT_STRING, (2,))).tolist() == [b"", b""]
    assert to_ndarray(proto(types_pb2.DT_INT32, (2,), int_val=[7, 8, 9])).tolist() == [7, 8]
    assert to_ndarray(proto(types_pb2.DT_FLOAT, (), float_val=[4, 5])).tolist() == 4.0
    # int_val narrows as a C++ cast does
    assert to_ndarray(proto(types_pb2.DT_UINT8, (2,), int_val=[300, -1])).tolist() == [44, 255]


def test_empty_tensors_ignore_content():
    empty = to_ndarray(proto(types_pb2.DT_FLOAT, (0, 3), tensor_content=b"junk"))
    assert empty.shape == (0, 3) and empty.dtype == np.float32
    assert from_ndarray(np.zeros((0, 2), np.int64)).int64_val == []


def test_unknown_rank_is_ignored_for_a_full_shape():
    p = proto(types_pb2.DT_FLOAT, (2,), float_val=[1, 2])
    p.tensor_shape.unknown_rank = True
    assert to_ndarray(p).tolist() == [1, 2]


@pytest.mark.parametrize("bad, fragment", [
    (proto(types_pb2.DT_INVALID, (1,)), "DT_INVALID"),
    (proto(999, (1,)), "unknown dtype 999"),
    (proto(types_pb2.DT_FLOAT_REF, (1,)), "DT_FLOAT_REF"),
    (proto(types_pb2.DT_RESOURCE, (1,)), "DT_RESOURCE"),
    (proto(types_pb2.DT_FLOAT, (2,), tensor_content=b"\x00" * 7), "7 bytes"),
    (proto(types_pb2.DT_FLOAT, (-1, 2)), "negative dimension"),
    (proto(types_pb2.DT_FLOAT, (1,) * 255), "255 dimensions"),
    (proto(types_pb2.DT_FLOAT, (2**40, 2**40)), "overflows int64"),
    (proto(types_pb2.DT_FLOAT, (2**31,), float_val=[1]), "needs 8589934592 bytes; at most 2147483647"),
    (proto(types_pb2.DT_STRING, (2,), tensor_content=b"\x01\x01ab!"), "lengths add up to 2"),
    (proto(types_pb2.DT_STRING, (2,), tensor_content=b"\x01"), "length prefix"),
    (proto(types_pb2.DT_STRING, (1,), tensor_content=b"\xff\xff\xff\xff\xff\x01"), "length prefix"),
])
def test_malformed_protos_are_rejected(bad, fragment):
    with pytest.raises(TensorProtoError, match=fragment):
        to_ndarray(bad)


def test_zero_in_the_shape_stops_the_overflow_check():
    assert to_ndarray(proto(types_pb2.DT_FLOAT, (0, 2**40))).size == 0
    # TensorShape accepts [0, 2**40, 2**40] (the count stays 0); numpy cannot index it, which is said as such
    with pytest.raises(TensorProtoError, match="numpy cannot hold"):
        to_ndarray(proto(types_pb2.DT_FLOAT, (0, 2**40, 2**40)))


def test_quantized_types_use_tensorflows_numpy_form():
    import tensorflow as tf
    p = proto(types_pb2.DT_QINT8, (3,), int_val=[1, -2, 300])
    array = to_ndarray(p)
    assert tf.as_dtype(array.dtype) == tf.qint8 and array["qint8"].tolist() == [1, -2, 44]
    assert list(from_ndarray(array).int_val) == [1, -2, 44]


def test_matches_tensorflows_own_decoder_where_both_apply():
    import tensorflow as tf
    rng = np.random.default_rng(0)
    for array in (rng.standard_normal((3, 4)).astype(np.float32), rng.integers(-9, 9, (2, 5)),
                  rng.standard_normal(7), np.array([True, False])):
        for content in (False, True):
            assert same(tf.make_ndarray(from_ndarray(array, content=content)), array)
        assert same(to_ndarray(tf.make_tensor_proto(array)), array)


def test_datatype_of_rejects_what_tensorflow_cannot_hold():
    assert datatype_of(np.dtype("S3")) == types_pb2.DT_STRING
    with pytest.raises(TensorProtoError):
        datatype_of(np.dtype("datetime64[s]"))


# ------------------------------------------------------------------------ what numpy and memory allow


@pytest.mark.parametrize("shape", [(1,) * 40, (1,) * (NUMPY_MAX_DIMS + 1), (0,) * 40], ids=["40", "33", "empty"])
def test_more_dimensions_than_numpy_holds_say_the_limit(shape):
    """TensorFlow takes up to 254 dimensions; numpy 32: said as such instead of numpy's own ValueError."""
    with pytest.raises(UnsupportedTensorError) as info:
        to_ndarray(proto(types_pb2.DT_FLOAT, shape, float_val=[1]))
    assert f"shape has {len(shape)} dimensions; this server holds at most {NUMPY_MAX_DIMS}" in str(info.value)
    assert "TensorFlow's is 254" in str(info.value)
    assert to_ndarray(proto(types_pb2.DT_FLOAT, (1,) * NUMPY_MAX_DIMS, float_val=[1])).ndim == NUMPY_MAX_DIMS


def test_tensor_bytes_is_shape_times_dtype_size_without_decoding():
    huge = proto(types_pb2.DT_FLOAT, (600000, 28, 28), float_val=[1])
    assert huge.ByteSize() < 40 and tensor_bytes(huge) == 600000 * 28 * 28 * 4
    assert describe(huge) == "DT_FLOAT [600000,28,28]"
    assert tensor_bytes(proto(types_pb2.DT_INT8, (3, 5))) == 15
    assert tensor_bytes(proto(types_pb2.DT_COMPLEX128, (2,))) == 32
    # strings: a tstring per element plus the bytes, the last string_val once per element it fills
    assert tensor_bytes(proto(types_pb2.DT_STRING, (4,), string_val=[b"ab", b"xyz"])) == 4 * 24 + 2 + 3 * 3
    assert tensor_bytes(proto(types_pb2.DT_STRING, (1,), string_val=[b"ab", b"xyz"])) == 24 + 2
    assert tensor_bytes(from_ndarray(np.array([b"abc", b""], dtype=object), content=True)) == 2 * 24 + 2 + 3
    with pytest.raises(TensorProtoError):
        tensor_bytes(proto(types_pb2.DT_FLOAT, (-1,)))


def test_max_bytes_refuses_before_allocating():
    huge = proto(types_pb2.DT_FLOAT, (600000, 28, 28), float_val=[1])
    with pytest.raises(TensorTooLargeError) as info:
        to_ndarray(huge, max_bytes=1 << 30)
    assert (info.value.needed, info.value.limit) == (1881600000, 1 << 30)
    assert to_ndarray(proto(types_pb2.DT_FLOAT, (4,), float_val=[1, 2]), max_bytes=16).tolist() == [1, 2, 2, 2]
    with pytest.raises(TensorTooLargeError):
        to_ndarray(proto(types_pb2.DT_FLOAT, (4,), float_val=[1, 2]), max_bytes=15)
    with pytest.raises(TensorTooLargeError):
        to_ndarray(proto(types_pb2.DT_STRING, (2000,), string_val=[b"x" * 1000]), max_bytes=1 << 20)


def test_fill_repeats_the_last_value_for_every_kind():
    assert to_ndarray(proto(types_pb2.DT_STRING, (3,), string_val=[b"a", b"b"])).tolist() == [b"a", b"b", b"b"]
    q = to_ndarray(proto(types_pb2.DT_QINT8, (3,), int_val=[5]))
    assert q["qint8"].tolist() == [5, 5, 5]
    c = to_ndarray(proto(types_pb2.DT_COMPLEX64, (2,), scomplex_val=[1, 2]))
    assert c.tolist() == [1 + 2j, 1 + 2j]
