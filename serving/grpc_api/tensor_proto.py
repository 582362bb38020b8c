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
  N varint32 lengths followed by the bytes.

Strings decode to object arrays of ``bytes`` (fixed-width "S" arrays would drop trailing NULs).
"""
from __future__ import annotations

import math

import ml_dtypes
import numpy as np
from tensorflow.core.framework import tensor_pb2, types_pb2

__all__ = ["TensorProtoError", "to_ndarray", "from_ndarray", "datatype_of"]

MAX_DIMS = 254  # TensorShapeRep::MaxDimensions()
_INT64_MAX = 2**63 - 1
MAX_TENSOR_BYTES = 2**31 - 1  # a tensor may not outgrow the largest request (SetMaxMessageSize(kint32max))

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


def to_ndarray(proto: tensor_pb2.TensorProto) -> np.ndarray:
    """Tensor::FromProto(): the array the proto stands for, or TensorProtoError where it returns false."""
    shape = _shape(proto)
    if proto.dtype == T.DT_INVALID:
        raise TensorProtoError("dtype is DT_INVALID")
    if proto.dtype in _OPAQUE:
        raise TensorProtoError(f"{_dtype_name(proto.dtype)} tensors cannot be fed to a served model")
    if proto.dtype not in _TYPES:
        raise TensorProtoError(f"unknown dtype {_dtype_name(proto.dtype)}")
    np_dtype, field = _TYPES[proto.dtype]
    n = math.prod(shape)  # exact (Python ints); _shape() has bounded it
    if n * max(np_dtype.itemsize, 1) > MAX_TENSOR_BYTES:
        raise TensorProtoError(f"a tensor of {n} elements is larger than a request can carry")
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
        return _decode_string_list(content, n)
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
            out[:] = [b""] * n
            return out
        return np.zeros(n, dtype=np_dtype)
    if len(values) >= n:
        return values[:n].copy()
    return np.concatenate([values, np.repeat(values[-1:], n - len(values))])


def _decode_string_list(content: bytes, n: int) -> np.ndarray:
    """DecodeStringList(): n varint32 lengths, then exactly that many bytes."""
    sizes, pos = [], 0
    for _ in range(n):
        value, shift = 0, 0
        while True:
            if pos >= len(content) or shift > 28:
                raise TensorProtoError("string tensor_content ends inside its length prefix")
            byte = content[pos]
            pos += 1
            value |= (byte & 0x7F) << shift
            if not byte & 0x80:
                break
            shift += 7
        sizes.append(value & 0xFFFFFFFF)
    if sum(sizes) != len(content) - pos:
        raise TensorProtoError(f"string tensor_content holds {len(content) - pos} bytes after its lengths; "
                               f"the lengths add up to {sum(sizes)}")
    out = np.empty(n, dtype=object)
    for i, size in enumerate(sizes):
        out[i] = content[pos:pos + size]
        pos += size
    return out


def _encode_string_list(items) -> bytes:
    """EncodeStringList(): the varint32 length of every string, then the strings."""
    head = bytearray()
    for item in items:
        size = len(item)
        while size >= 0x80:
            head.append((size & 0x7F) | 0x80)
            size >>= 7
        head.append(size)
    return bytes(head) + b"".join(items)


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
            proto.tensor_content = _encode_string_list(items)
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
