"""Text-level emulation of the C++ libraries behind TF Serving's REST API (used by json_codec).

TF Serving 2.16 parses with rapidjson 1.1.0 (default, not full, number precision), prints with its
PrettyWriter, formats floats with absl::StrCat/StrFormat and decodes base64 with absl. Clients see
all of that in bodies and error strings, so it is reproduced here rather than approximated (checked
against those libraries compiled from source). Python's json module does the tokenizing; rapidjson's
number rounding is applied through its parse_float hook, or skipped when it provably cannot matter.
"""
from __future__ import annotations

import base64
import json
import math
import os
import re

import numpy as np

from serving.errors import JsonCodecError
from serving.rest_api.json_floats import _float_tokens_small
from serving.rest_api.rapidjson_numbers import (FLOAT_MAX, PYTHON_DECODER, RAPIDJSON_DECODER, NumberTooBig,
                                                rapidjson_dtoa, to_double)

IND = "    "  # PrettyWriter indent
# rapidjson parses any depth; Python's json module and our recursive walks stop near sys.getrecursionlimit()
TOO_DEEP = ("JSON Parse error: arrays and objects nest too deeply for this server to parse "
            "(a tensor has at most 32 dimensions)")
_ESC = {i: "\\u%04X" % i for i in range(0x20)}
_ESC.update({8: "\\b", 9: "\\t", 10: "\\n", 12: "\\f", 13: "\\r", 34: '\\"', 92: "\\\\"})
_LONE_SURROGATE = re.compile(r"(?<!\\)(?:\\\\)*(\\u[dD][89abAB][0-9a-fA-F]{2})(?!\\u[dD][c-fC-F][0-9a-fA-F]{2})")
_B64_SPACE = str.maketrans("", "", " \t\n\v\f\r")
_B64_ALPHABET = re.compile(r"[A-Za-z0-9+/]*")
_PY_TO_RJ = {"Expecting value": "Invalid value.",
             "Extra data": "The document root must not be followed by other values.",
             "Expecting property name enclosed in double quotes": "Missing a name for object member.",
             "Expecting ':' delimiter": "Missing a colon after a name of object member.",
             "Invalid control character at": "Invalid escape character in string.",
             "Invalid \\escape": "Invalid escape character in string.",
             "Invalid \\uXXXX escape": "Incorrect hex digit after \\u escape in string."}


def dtype_name(dt) -> str:
    """TensorFlow's C++ DataTypeString() ("float", "double", "half", ...) for a tf/np dtype or name."""
    try:
        return _DTYPE_NAMES[dt]
    except (KeyError, TypeError):  # TypeError: unhashable
        pass
    name = _dtype_name(dt)
    if len(_DTYPE_NAMES) < 256:
        try:
            _DTYPE_NAMES[dt] = name
        except TypeError:
            pass
    return name


_DTYPE_NAMES: dict = {}  # the few dtypes a server sees, named once (numpy's dtype.name is slow)


def _dtype_name(dt) -> str:
    if isinstance(dt, str):
        name = dt[3:].lower() if dt.startswith("DT_") else dt
    elif hasattr(dt, "as_numpy_dtype"):
        name = dt.name
    else:
        npdt = np.dtype(dt)
        name = "string" if npdt.kind in "OSU" else npdt.name
    name = name.removesuffix("_ref")
    return {"float32": "float", "float64": "double", "float16": "half"}.get(name, name)


def json_type(v) -> str:
    """JsonTypeString(): the rapidjson type name used in error messages."""
    if v is None:
        return "Null"
    if isinstance(v, bool):
        return "True" if v else "False"
    return {dict: "Object", list: "Array", str: "String"}.get(type(v), "Number")


def quote(s: str) -> str:
    """Writer::String(): escapes only quotes, backslashes and control characters (as \\u00XX)."""
    return '"' + s.translate(_ESC) + '"'


# ---- writing: rapidjson Writer/PrettyWriter, absl float text -------------------------------
class _Abort(Exception):
    """rapidjson's Writer refuses NaN/Inf, which silently truncates JsonValueToString() output."""


def _pretty(v, depth: int, out: list) -> None:
    """Value::Accept(PrettyWriter): the layout TF Serving uses when it echoes a request back."""
    if isinstance(v, (dict, list)):
        is_obj = isinstance(v, dict)
        if not v:
            out.append("{}" if is_obj else "[]")
            return
        out.append("{" if is_obj else "[")
        for i, item in enumerate(v.items() if is_obj else v):
            out.append(("," if i else "") + "\n" + IND * (depth + 1))
            if is_obj:
                out.append(quote(item[0]) + ": ")
                item = item[1]
            _pretty(item, depth + 1, out)
        out.append("\n" + IND * depth + ("}" if is_obj else "]"))
    elif v is None or isinstance(v, (bool, str)):
        out.append("null" if v is None else ("true" if v is True else "false") if isinstance(v, bool) else quote(v))
    elif isinstance(v, int) and -2**63 <= v < 2**64:
        out.append(str(v))
    else:
        d = to_double(v)
        if not math.isfinite(d):
            raise _Abort
        out.append(rapidjson_dtoa(d))


def value_to_string(v) -> str:
    """JsonValueToString(): WriteDecimal for doubles (as float when in range), PrettyWriter otherwise."""
    if isinstance(v, float) or (type(v) is int and not -2**63 <= v < 2**64):
        d = to_double(v)
        if -FLOAT_MAX <= d <= FLOAT_MAX:
            return _decimal(float(np.float32(d)), True)
        return _decimal(d, False)
    out: list = []
    try:
        _pretty(v, 0, out)
    except _Abort:
        pass
    return "".join(out)


def _decimal(x: float, single: bool) -> str:
    """WriteDecimal(): absl::StrCat's %.6g if it round-trips, else %.9g / %.17g; whole numbers get '.0'."""
    return _float_tokens_small([x], single)[0]


# ---- reading: rapidjson Reader, absl base64 ---------------------------------------------

def body_text(body) -> str:
    """Request bytes as text; invalid UTF-8 is kept (surrogateescape), as rapidjson does not check."""
    return body if isinstance(body, str) else bytes(body).decode("utf-8", "surrogateescape")


def parse_json(text: str, exact: bool = True) -> dict:
    """ParseJson(): rapidjson accepts NaN/Infinity; the root must be an object. exact=False parses
    floats correctly rounded at C speed instead (see may_round_differently())."""
    if not text:
        raise JsonCodecError("JSON Parse error: The document is empty")
    surrogate = _LONE_SURROGATE.search(text) if "\\u" in text else None
    try:
        doc = (RAPIDJSON_DECODER if exact else PYTHON_DECODER).decode(text)
    except NumberTooBig as e:
        raise JsonCodecError(f"{e.message} at offset: {_byte_offset(text, _number_start(text))}") from None
    except json.JSONDecodeError as e:
        if not surrogate or surrogate.start(1) > e.pos:
            raise JsonCodecError(f"JSON Parse error: {_rj_parse_message(text, e)}") from None
    except RecursionError:
        raise JsonCodecError(TOO_DEEP) from None
    except ValueError as e:
        raise JsonCodecError(f"JSON Parse error: {e}") from None
    if surrogate:  # Python accepts an unpaired \uD800-\uDBFF escape, rapidjson does not
        raise JsonCodecError("JSON Parse error: The surrogate pair in string is invalid. "
                             f"at offset: {_byte_offset(text, surrogate.start(1))}")
    if not isinstance(doc, dict):
        raise JsonCodecError(f"JSON Value: {value_to_string(doc)} Is not object")
    return doc


def _byte_offset(text: str, pos: int) -> int:
    """rapidjson offsets count UTF-8 bytes, Python's count characters."""
    return len(text[:pos].encode("utf-8", "surrogateescape"))


def _number_start(text: str) -> int:
    """Where the first literal too big for a double starts (for the error offset)."""
    m = re.search(r"-?\d+(\.\d+)?[eE]\+?\d{3,}|\d{309,}", text)
    return m.start() if m else 0


def _rj_parse_message(text: str, e: json.JSONDecodeError) -> str:
    """rapidjson's GetParseError_En() text and byte offset for Python's equivalent error."""
    pos, msg, nxt = e.pos, _PY_TO_RJ.get(e.msg, e.msg), text[e.pos:e.pos + 2]
    number = re.search(r"[0-9][-+0-9.eE]*$", text[max(0, pos - 400):pos])
    number = number.group() if number else None
    if e.msg == "Expecting value" and not text.strip(" \t\n\r"):
        msg = "The document is empty."
    elif e.msg == "Expecting value":  # rapidjson reports where the token stopped matching
        neg = nxt[:1] == "-"
        word = next((w for w in ("NaN", "Infinity") + ("true", "false", "null") * (not neg)
                     if text[pos + neg:pos + neg + 1] == w[0]), "")
        pos += neg + len(os.path.commonprefix([text[pos + neg:pos + neg + len(word)], word]))
    elif e.msg == "Unterminated string starting at":
        msg, pos = "Missing a closing quotation mark in string.", len(text)
    elif e.msg == "Invalid \\uXXXX escape":
        pos -= 1
    elif number and nxt[:1] == "." and not re.search("[.eE]", number):
        msg, pos = "Miss fraction part in number.", pos + 1
    elif number and nxt[:1] in ("e", "E") and not re.search("[eE]", number):
        msg, pos = "Miss exponent in number.", pos + 1 + (nxt[1:] in ("+", "-"))
    elif e.msg == "Expecting ',' delimiter":
        stack: list = []
        for ch in re.findall(r"[\[\]{}]", re.sub(r'"(?:[^"\\]|\\.)*"', "", text[:pos])):
            if ch in "[{":
                stack.append(ch)
            elif stack:
                stack.pop()
        msg = ("Missing a comma or '}' after an object member." if stack and stack[-1] == "{"
               else "Missing a comma or ']' after an array element.")
    return f"{msg} at offset: {_byte_offset(text, pos)}"


def is_b64(v) -> bool:
    """IsValBase64Object(): exactly one key, "b64", holding a string."""
    return isinstance(v, dict) and len(v) == 1 and isinstance(v.get("b64"), str)


def is_element_object(v) -> bool:
    """An instance given as {name: value}, as opposed to a bare value or a b64 object."""
    return isinstance(v, dict) and not is_b64(v)


def to_bytes(s: str) -> bytes:
    """A JSON string's bytes; raw request bytes come back from surrogateescape, lone \\u escapes
    are kept the way rapidjson stores them."""
    try:
        return s.encode("utf-8")
    except UnicodeEncodeError:
        try:
            return s.encode("utf-8", "surrogateescape")
        except UnicodeEncodeError:
            return s.encode("utf-8", "surrogatepass")


def decode_b64(v: dict) -> bytes:
    """JsonDecodeBase64Object() with absl::Base64Unescape rules: whitespace ignored, padding optional."""
    if not is_b64(v):
        raise JsonCodecError(f"JSON Value: {value_to_string(v)} not formatted correctly for base64 data")
    s = v["b64"].translate(_B64_SPACE)
    cut = min((i for i in (s.find("="), s.find(".")) if i >= 0), default=len(s))
    data, pad = s[:cut], s[cut:]
    need = {0: 0, 2: 2, 3: 1}.get(len(data) % 4)
    if need is None or not _B64_ALPHABET.fullmatch(data) or pad.strip("=.") or len(pad) not in (0, need):
        raise JsonCodecError("Unable to base64 decode")
    return base64.b64decode(data + "=" * need)


# ---- tensor layout ------------------------------------------------------------------------

def nest(tokens: list, shape: tuple, depth: int | None) -> list:
    """Joins leaves into one text per index of axis 0: single-line arrays when depth is None,
    otherwise PrettyWriter's one-value-per-line layout for an array nested `depth` deep."""
    parts = tokens
    for axis in range(len(shape) - 1, 0, -1):
        d, n = shape[axis], math.prod(shape[:axis])
        if depth is None:
            opening, sep, closing = "[", ", ", "]"
        else:
            ind = "\n" + IND * (depth + axis + 1)
            opening, sep, closing = "[" + ind, "," + ind, "\n" + IND * (depth + axis) + "]"
        parts = ["[]"] * n if d == 0 else [opening + sep.join(parts[i * d:(i + 1) * d]) + closing
                                           for i in range(n)]
    return parts


def pretty_tensor(tokens: list, shape: tuple, depth: int) -> str:
    """A whole tensor in PrettyWriter's default (one value per line) layout."""
    if not shape:
        return tokens[0]
    parts = nest(tokens, shape, depth)
    ind = "\n" + IND * (depth + 1)
    return "[" + ind + ("," + ind).join(parts) + "\n" + IND * depth + "]" if parts else "[]"


def string_tokens(items: list, as_b64: bool, depth: int) -> list:
    """DT_STRING leaves: {"b64": ...} objects (multi-line even in single-line arrays, as PrettyWriter
    does; `depth` counts the enclosing containers) or UTF-8 text (invalid bytes become U+FFFD)."""
    if as_b64:
        pre, post = "{\n" + IND * (depth + 1) + '"b64": "', '"\n' + IND * depth + "}"
        return [pre + base64.b64encode(s if isinstance(s, bytes) else s.encode()).decode("ascii") + post
                for s in items]
    return [quote(s.decode("utf-8", "replace") if isinstance(s, bytes) else str(s)) for s in items]
