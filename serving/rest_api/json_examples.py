"""TF Serving 2.16's JSON for :classify and :regress (``util/json_tensor.cc``
FillClassificationRequestFromJson / FillRegressionRequestFromJson, MakeExampleFromJsonObject,
AddValueToFeature): ``examples`` and ``context`` objects turned into serialized tf.Examples."""
from __future__ import annotations

from typing import Union

import numpy as np

from serving.errors import JsonCodecError
from serving.rest_api.json_codec import DEFAULT_SIGNATURE, format_error, request_signature
from serving.rest_api.json_text import TOO_DEEP, body_text, decode_b64, is_b64, json_type, parse_json, to_bytes
from serving.rest_api.rapidjson_numbers import to_double


def _feature_value(v, name: str, kind: str | None) -> tuple:
    """AddValueToFeature(): one JSON scalar -> (feature kind, value)."""
    if v is None or isinstance(v, list) or (isinstance(v, dict) and not is_b64(v)):
        raise JsonCodecError(f"Feature: {name} has element with unexpected JSON type: {json_type(v)}")
    if isinstance(v, bool):
        k = "int64"
    elif isinstance(v, (dict, str)):
        k = "bytes"
    else:
        k = "float" if isinstance(v, float) or not -2**63 <= v < 2**64 else "int64"
    if kind is not None and kind != k:
        raise JsonCodecError(f"Unexpected element type in feature: {name} expecting type: {kind}")
    if isinstance(v, bool):
        return k, int(v)
    if k == "bytes":
        return k, decode_b64(v) if isinstance(v, dict) else to_bytes(v)
    if k == "float":
        with np.errstate(over="ignore"):
            return k, float(np.float32(to_double(v)))
    if v >= 2**63:
        raise JsonCodecError(f"Feature: {name} has uint64_t element. Only int64_t is supported.")
    return k, v


def _example(obj) -> bytes:
    """MakeExampleFromJsonObject(), serialized."""
    from tensorflow.core.example import example_pb2  # lazy: TensorFlow is heavy to import

    if not isinstance(obj, dict):
        raise JsonCodecError(f"Example must be JSON object but got JSON {json_type(obj)}")
    example = example_pb2.Example()
    for name, content in obj.items():
        kind, vals = None, []
        for v in content if isinstance(content, list) else [content]:
            kind, x = _feature_value(v, name, kind)
            vals.append(x)
        feature = example.features.feature[name]
        if kind is not None:
            getattr(feature, kind + "_list").value.extend(vals)
    return example.SerializeToString()


def parse_classify_regress_request(body: Union[bytes, str]) -> tuple[str, list, bytes | None]:
    """FillClassificationRequestFromJson()/FillRegressionRequestFromJson(). Returns (signature,
    serialized examples, serialized context or None). With a context each example is context bytes +
    example bytes, which is how TF Serving merges them (InputToSerializedExampleTensor in util.cc)."""
    try:
        return _parse_examples(parse_json(body_text(body)))
    except RecursionError:  # a nesting the json module decoded but printing it in a message did not
        raise JsonCodecError(TOO_DEEP) from None


def _parse_examples(doc: dict) -> tuple[str, list, bytes | None]:
    sig = request_signature(doc) or DEFAULT_SIGNATURE
    context = _example(doc["context"]) if "context" in doc else None
    if "examples" not in doc:
        raise format_error(doc, "When method is classify, key 'examples' is expected and was not found")
    examples = doc["examples"]
    if not isinstance(examples, list):
        raise format_error(doc, "Expecting 'examples' value to be an list/array")
    if not examples:
        raise format_error(doc, "'examples' value is an empty array")
    serialized = [_example(e) for e in examples]
    if context is not None:
        serialized = [context + s for s in serialized]
    return sig, serialized, context
