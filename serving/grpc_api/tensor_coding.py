"""String tensors' ``tensor_content``, as TensorFlow's ``core/platform/tensor_coding.cc`` lays it out:
EncodeStringList() / DecodeStringList() write and read N varint32 lengths followed by the bytes.
(Split from ``tensor_proto``, which turns a ValueError from here into its TensorProtoError.)"""
from __future__ import annotations

import numpy as np

__all__ = ["decode_string_list", "encode_string_list"]


def decode_string_list(content: bytes, n: int) -> np.ndarray:
    """DecodeStringList(): n varint32 lengths, then exactly that many bytes; an object array of bytes.
    ValueError when the content does not hold that."""
    sizes, pos = [], 0
    for _ in range(n):
        value, shift = 0, 0
        while True:
            if pos >= len(content) or shift > 28:
                raise ValueError("string tensor_content ends inside its length prefix")
            byte = content[pos]
            pos += 1
            value |= (byte & 0x7F) << shift
            if not byte & 0x80:
                break
            shift += 7
        sizes.append(value & 0xFFFFFFFF)
    if sum(sizes) != len(content) - pos:
        raise ValueError(f"string tensor_content holds {len(content) - pos} bytes after its lengths; "
                         f"the lengths add up to {sum(sizes)}")
    out = np.empty(n, dtype=object)
    for i, size in enumerate(sizes):
        out[i] = content[pos:pos + size]
        pos += size
    return out


def encode_string_list(items) -> bytes:
    """EncodeStringList(): the varint32 length of every string, then the strings."""
    head = bytearray()
    for item in items:
        size = len(item)
        while size >= 0x80:
            head.append((size & 0x7F) | 0x80)
            size >>= 7
        head.append(size)
    return bytes(head) + b"".join(items)
