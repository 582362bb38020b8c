"""TensorProto <-> numpy, with the semantics of TensorFlow's C++ ``Tensor`` rather than Python's
``tf.make_ndarray``, because TF Serving parses Predict inputs and writes Predict outputs in C++.

Sources (tensorflow 2.16):
- ``core/framework/tensor.cc`` Tensor::FromProto(): the shape must be valid, the dtype known; a
  non-empty ``tensor_content`` must hold exactly N elements; the typed ``*_val`` fields are lenient:
  none means N zeros, fewer than N repeat the last value, more than N are cut to N.
  Tensor::AsProtoField() / AsProtoTensorContent(): the two output encodings.
- ``core/framework/tensor_shape.cc`` TensorShapeBase::IsValid(): at most 254 dims, none negative, no
  int64 overflow of the element count; ``unknown_rank`` is ignored for a full TensorShape.
- ``core/platform/tensor_coding.cc`` EncodeStringList()/DecodeStringList(): string tensor_content is
  N varint32 lengths followed by the bytes (``serving.grpc_api.tensor_coding``).

Strings decode to object arrays of ``bytes`` (fixed-width "S" arrays would drop trailing NULs).
Two limits TensorFlow does not have: numpy holds at most ``NUMPY_MAX_DIMS`` dimensions, and the fill
rule lets a few bytes stand for gigabytes, so ``tensor_bytes()`` says what a proto would take before
anything is allocated and ``to_ndarray(max_bytes=...)`` refuses more (``TensorTooLargeError``).
"""
from __future__ import annotations

import math

import ml_dtypes
import numpy as np
from tensorflow.core.framework import tensor_pb2, types_pb2

from serving.grpc_api.tensor_coding import decode_string_list, encode_string_list

__all__ = ["TensorProtoError", "UnsupportedTensorError", "TensorTooLargeError", "to_ndarray", "from_ndarray",
           "datatype_of", "tensor_bytes", "describe"]

MAX_DIMS = 254  # TensorShapeRep::MaxDimensions()
_INT64_MAX = 2**63 - 1
MAX_TENSOR_BYTES = 2**31 - 1  # to_ndarray()'s default bound: the largest request (SetMaxMessageSize(kint32max))
TSTRING_BYTES = 24  # sizeof(tensorflow::tstring): what DataTypeSize(DT_STRING) counts per element


def _numpy_max_dims() -> int:
    """NPY_MAXDIMS of the numpy installed (32 in numpy 1.x, 64 in 2.x)."""
    for dims in (64, 32):
        try:
            np.empty((1,) * dims)
            return dims
        except ValueError:
            continue
    return 32


NUMPY_MAX_DIMS = _numpy_max_dims()

T = types_pb2


def _quantized(name: str, base) -> np.dtype:
    return np.dtype([(name, base)])  # the numpy form TensorFlow's Python dtypes use for DT_Q*


# DataType -> (numpy dtype, the TensorProto field AsProtoField fills: tensor.cc ProtoHelper<T>)
_TYPES = {
    T.DT_FLOAT: (np.dtype(np.float32), "float_val"),
    T.DT_DOUBLE: (np.dtype(np.float64), "double_val"),
    T.DT_INT32: (np.dtype(np.int32), "int_val"),
    T.DT_UINT8: (np.dtype(np.uint8), "int_val"),
    T.DT_INT16: (np.dtype(np.int16), "int_val"),
    T.DT_INT8: (np.dtype(np.int8), "int_val"),
    T.DT_UINT16: (np.dtype(np.uint16), "int_val"),
    T.DT_STRING: (np.dtype(object), "string_val"),
    T.DT_COMPLEX64: (np.dtype(np.complex64), "scomplex_val"),
    T.DT_COMPLEX128: (np.dtype(np.complex128), "dcomplex_val"),
    T.DT_INT64: (np.dtype(np.int64), "int64_val"),
    T.DT_BOOL: (np.dtype(np.bool_), "bool_val"),
    T.DT_QINT8: (_quantized("qint8", np.int8), "int_val"),
    T.DT_QUINT8: (_quantized("quint8", np.uint8), "int_val"),
    T.DT_QINT16: (_quantized("qint16", np.int16), "int_val"),
    T.DT_QUINT16: (_quantized("quint16", np.uint16), "int_val"),
    T.DT_QINT32: (_quantized("qint32", np.int32), "int_val"),
    T.DT_BFLOAT16: (np.dtype(ml_dtypes.bfloat16), "half_val"),
    T.DT_HALF: (np.dtype(np.float16), "half_val"),
    T.DT_UINT32: (np.dtype(np.uint32), "uint32_val"),
    T.DT_UINT64: (np.dtype(np.uint64), "uint64_val"),
    T.DT_FLOAT8_E5M2: (np.dtype(ml_dtypes.float8_e5m2), "float8_val"),
    T.DT_FLOAT8_E4M3FN: (np.dtype(ml_dtypes.float8_e4m3fn), "float8_val"),
    T.DT_INT4: (np.dtype(ml_dtypes.int4), "int_val"),
    T.DT_UINT4: (np.dtype(ml_dtypes.uint4), "int_val"),
}
# Known to TensorFlow, but no numpy form to hand to a model here.
_OPAQUE = (T.DT_RESOURCE, T.DT_VARIANT)


class TensorProtoError(ValueError):
    """The proto is one Tensor::FromProto() rejects (or one this server cannot represent)."""


class UnsupportedTensorError(TensorProtoError):
    """A proto TensorFlow accepts but numpy cannot hold; the message says why, to be shown to the client."""


class TensorTooLargeError(TensorProtoError):
    """Decoding would allocate more than allowed: ``needed`` bytes against ``limit``."""

    def __init__(self, needed: int, limit: int):
        super().__init__(f"the tensor needs {needed} bytes; at most {limit} may be allocated")
        self.needed, self.limit = needed, limit


def datatype_of(dtype) -> int:
    """The DataType enum for a numpy dtype; bytes, str and object arrays are DT_STRING."""
    dtype = np.dtype(dtype)
    enum = _ENUM_OF.get(dtype)
    if enum is not None:
        return enum
    if dtype.kind in "OSU":
        return T.DT_STRING
    for enum, (np_dtype, _) in _TYPES.items():
        if np_dtype == dtype:
            return enum
    raise TensorProtoError(f"no TensorFlow dtype for numpy dtype {dtype}")


# the usual output dtypes, looked up without scanning _TYPES (first match in _TYPES order, as above)
_ENUM_OF = {np.dtype(t): e for e, (t, _) in reversed(list(_TYPES.items())) if np.dtype(t).kind in "fiub"}


def _dtype_name(enum: int) -> str:
    try:
        return T.DataType.Name(enum)
    except ValueError:
        return str(enum)


def describe(proto) -> str:
    """The proto's dtype and shape as an error message shows them: "DT_FLOAT [600000,28,28]"."""
    return f"{_dtype_name(proto.dtype)} [{','.join(str(d.size) for d in proto.tensor_shape.dim)}]"


def _shape(proto) -> tuple:
    """TensorShape(proto) after TensorShape::IsValid(proto)."""
    dims = [d.size for d in proto.tensor_shape.dim]
    if len(dims) > MAX_DIMS:
        raise TensorProtoError(f"shape has {len(dims)} dimensions; at most {MAX_DIMS} are allowed")
    count = 1
    for size in dims:
        if size < 0:
            raise TensorProtoError(f"shape has a negative dimension {size}")
        count *= size
        if count > _INT64_MAX:
            raise TensorProtoError("shape's element count overflows int64")
    return tuple(dims)


def _dtype(proto) -> tuple:
    """(numpy dtype, typed field) of the proto's DataType, or TensorProtoError as FromProto fails it."""
    if proto.dtype == T.DT_INVALID:
        raise TensorProtoError("dtype is DT_INVALID")
    if proto.dtype in _OPAQUE:
        raise TensorProtoError(f"{_dtype_name(proto.dtype)} tensors cannot be fed to a served model")
    if proto.dtype not in _TYPES:
        raise TensorProtoError(f"unknown dtype {_dtype_name(proto.dtype)}")
    return _TYPES[proto.dtype]


def tensor_bytes(proto: tensor_pb2.TensorProto) -> int:
    """The bytes the decoded tensor takes, from the shape and dtype alone (nothing is allocated): elements x
    DataTypeSize; strings also count their bytes, the last value of a short string_val once per element
    it fills. TensorProtoError for a proto to_ndarray() would reject anyway."""
    n = math.prod(_shape(proto))
    np_dtype, _ = _dtype(proto)
    if np_dtype != object:
        return n * np_dtype.itemsize
    if proto.tensor_content:
        return n * TSTRING_BYTES + len(proto.tensor_content)
    values = proto.string_val
    payload = sum(len(v) for v in values[:n])
    if 0 < len(values) < n:
        payload += (n - len(values)) * len(values[-1])
    return n * TSTRING_BYTES + payload


def to_ndarray(proto: tensor_pb2.TensorProto, max_bytes: int = MAX_TENSOR_BYTES) -> np.ndarray:
    """Tensor::FromProto(): the array the proto stands for, or TensorProtoError where it returns false;
    TensorTooLargeError, before allocating, when it would take more than ``max_bytes``;
    UnsupportedTensorError for more dimensions than numpy holds."""
    shape = _shape(proto)
    np_dtype, field = _dtype(proto)
    if len(shape) > NUMPY_MAX_DIMS:
        raise UnsupportedTensorError(
            f"its shape has {len(shape)} dimensions; this server holds at most {NUMPY_MAX_DIMS} (numpy's limit, "
            f"TensorFlow's is {MAX_DIMS}): send the tensor with at most {NUMPY_MAX_DIMS} dimensions")
    n = math.prod(shape)  # exact (Python ints); _shape() has bounded it
    needed = tensor_bytes(proto)
    if needed > max_bytes:
        raise TensorTooLargeError(needed, max_bytes)
    if n == 0:
        return _empty(np_dtype, shape)
    if proto.tensor_content:
        flat = _from_content(proto.tensor_content, np_dtype, n)
    else:
        flat = _fill(_field_values(proto, np_dtype, field), np_dtype, n)
    return flat.reshape(shape)


def _empty(np_dtype: np.dtype, shape: tuple) -> np.ndarray:
    try:
        return np.empty(shape, dtype=np_dtype)
    except ValueError:  # TensorFlow allows e.g. [0, 2**62]; numpy cannot index it
        raise TensorProtoError(f"numpy cannot hold an empty tensor of shape {list(shape)}") from None


def _from_content(content: bytes, np_dtype: np.dtype, n: int) -> np.ndarray:
    """Helper<T>::Decode(): raw little-endian bytes, or for strings DecodeStringList()."""
    if np_dtype == object:
        try:
            return decode_string_list(content, n)
        except ValueError as e:
            raise TensorProtoError(str(e)) from None
    if len(content) != np_dtype.itemsize * n:
        raise TensorProtoError(f"tensor_content has {len(content)} bytes; {n} elements of "
                               f"{np_dtype} need {np_dtype.itemsize * n}")
    if np_dtype == np.bool_:
        return np.frombuffer(content, dtype=np.uint8) != 0
    return np.frombuffer(content, dtype=np_dtype).copy()


def _field_values(proto, np_dtype: np.dtype, field: str) -> np.ndarray:
    """The values of the typed field, as ProtoHelper<T>::Begin() sees them (C++ narrowing casts wrap)."""
    values = getattr(proto, field)
    if field == "string_val":
        out = np.empty(len(values), dtype=object)
        out[:] = list(values)
        return out
    if field == "half_val":  # uint16 bit patterns carried in int32s
        return np.array(values, dtype=np.int64).astype(np.uint16).view(np_dtype)
    if field == "float8_val":  # one byte per element
        return np.frombuffer(values, dtype=np.uint8).view(np_dtype)
    if field in ("scomplex_val", "dcomplex_val"):  # (real, imag) pairs; an odd trailing value is unused
        part = np.float32 if field == "scomplex_val" else np.float64
        pairs = np.array(values, dtype=part)
        return pairs[: len(pairs) // 2 * 2].view(np_dtype)
    if np_dtype.names:  # quantized: int_val narrowed to the storage type
        base = np_dtype.fields[np_dtype.names[0]][0]
        return np.array(values, dtype=np.int64).astype(base).view(np_dtype)
    if field == "int_val" and np_dtype.itemsize == 1 and np_dtype.kind not in "iu":  # int4/uint4: via int8
        return np.array(values, dtype=np.int64).astype(np.int8).astype(np_dtype)
    field_type = {"int_val": np.int32, "int64_val": np.int64, "uint32_val": np.uint32,
                  "uint64_val": np.uint64}.get(field)
    if field_type is not None:
        return np.array(values, dtype=field_type).astype(np_dtype)
    return np.array(values, dtype=np_dtype)


def _fill(values: np.ndarray, np_dtype: np.dtype, n: int) -> np.ndarray:
    """FromProtoField<T>(): no values -> T(); fewer than n -> repeat the last; more -> the first n."""
    if len(values) == 0:
        if np_dtype == object:
            out = np.empty(n, dtype=object)
            out[:] = b""
            return out
        return np.zeros(n, dtype=np_dtype)
    if len(values) >= n:
        return values[:n].copy()
    out = np.empty(n, dtype=np_dtype)  # one allocation: the values, then the last one repeated
    out[:len(values)] = values
    out[len(values):] = values[-1]
    return out


def _as_bytes(item) -> bytes:
    return item.encode("utf-8") if isinstance(item, str) else bytes(item)


def from_ndarray(array, *, content: bool = False, into: tensor_pb2.TensorProto = None) -> tensor_pb2.TensorProto:
    """Tensor::AsProtoField() (the default, what TF Serving's Predict returns) or, with
    ``content=True``, Tensor::AsProtoTensorContent(). ``into``: an empty TensorProto to fill (say a
    response's map entry) instead of a new one, which saves a copy."""
    array = np.asarray(array)
    enum = datatype_of(array.dtype)
    proto = tensor_pb2.TensorProto() if into is None else into
    proto.dtype = enum
    proto.tensor_shape.SetInParent()  # a scalar still carries an (empty) shape
    for size in array.shape:
        proto.tensor_shape.dim.add(size=size)
    if array.size == 0:
        return proto
    np_dtype, field = _TYPES[enum]
    flat = np.ascontiguousarray(array).reshape(-1)
    if enum == T.DT_STRING:
        items = [_as_bytes(item) for item in flat.tolist()]
        if content:
            proto.tensor_content = encode_string_list(items)
        else:
            proto.string_val.extend(items)
        return proto
    if content:
        proto.tensor_content = (flat.astype(np.uint8) if enum == T.DT_BOOL else flat).tobytes()
        return proto
    if field == "half_val":
        values = flat.view(np.uint16).astype(np.int32)
    elif field == "float8_val":
        proto.float8_val = flat.view(np.uint8).tobytes()
        return proto
    elif field in ("scomplex_val", "dcomplex_val"):
        values = flat.view(np.float32 if field == "scomplex_val" else np.float64)
    elif np_dtype.names:
        values = flat[np_dtype.names[0]].astype(np.int32)
    elif field == "int_val":
        values = flat.astype(np.int32)
    else:
        values = flat
    getattr(proto, field).extend(values.tolist())
    return proto
