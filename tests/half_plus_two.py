"""Small models in the manner of TF Serving's testdata (servables/tensorflow/testdata/saved_model_half_plus_two.py),
made with TensorFlow's public APIs for the tests of input shapes and TensorFlow Lite serving:

* ``save_half_plus_two``: a tf.Module SavedModel, y = 0.5 * x + 2 with x float [None, 1], signature
  "serving_default" (x -> y), version directory ``00000123`` as in TF Serving's tests;
* ``save_reshape_by_two``: a SavedModel whose graph really refuses some shapes (a Reshape to [-1, 2]);
* ``half_plus_two_tflite``: the half_plus_two SavedModel through tf.lite.TFLiteConverter, with or without
  TF-style SignatureDef metadata, the way TF Serving's generator adds it (TensorFlow's
  lite/tools/signature/signature_def_utils.set_signature_defs, which the pip package does not ship:
  ``with_signature_defs`` writes the same layout).
"""
from __future__ import annotations

import os

os.environ["TF_USE_LEGACY_KERAS"] = "1"

import tensorflow as tf  # noqa: E402
from tensorflow.core.protobuf import meta_graph_pb2  # noqa: E402

VERSION = "00000123"


class HalfPlusTwo(tf.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = tf.Variable(0.5, name="a"), tf.Variable(2.0, name="b")

    @tf.function(input_signature=[tf.TensorSpec([None, 1], tf.float32, name="x")])
    def serve(self, x):
        return {"y": self.a * x + self.b}


class ReshapeByTwo(tf.Module):
    """Declares x [None, 2]; any shape with an even number of values runs, an odd one is refused."""

    @tf.function(input_signature=[tf.TensorSpec([None, 2], tf.float32, name="x")])
    def serve(self, x):
        return {"y": tf.reshape(x, [-1, 2]) * 2.0}


def _save(module, base: str) -> str:
    export = os.path.join(base, VERSION)
    tf.saved_model.save(module, export, signatures={"serving_default": module.serve})
    return base


def save_half_plus_two(base: str) -> str:
    """``base``/00000123 holds the SavedModel; returns ``base`` (a --model_base_path)."""
    return _save(HalfPlusTwo(), base)


def save_reshape_by_two(base: str) -> str:
    return _save(ReshapeByTwo(), base)


def half_plus_two_tflite(saved_model_base: str, signature_defs: bool) -> bytes:
    """The SavedModel of ``save_half_plus_two`` as a TF Lite flatbuffer; with ``signature_defs`` its
    "serving_default" SignatureDef (x -> y, names of the TF Lite tensors) added as metadata."""
    model = tf.lite.TFLiteConverter.from_saved_model(os.path.join(saved_model_base, VERSION)).convert()
    if not signature_defs:
        return model
    interpreter = tf.lite.Interpreter(model_content=model)
    (x,), (y,) = interpreter.get_input_details(), interpreter.get_output_details()
    signature = meta_graph_pb2.SignatureDef(method_name="tensorflow/serving/predict")
    for alias, detail, tensors in (("x", x, signature.inputs), ("y", y, signature.outputs)):
        tensors[alias].name = detail["name"]
        tensors[alias].dtype = tf.float32.as_datatype_enum
        for size in (-1, 1):
            tensors[alias].tensor_shape.dim.add(size=size)
    return with_signature_defs(model, {"serving_default": signature})


def with_signature_defs(model: bytes, signature_defs: dict) -> bytes:
    """signature_def_util.cc SetSignatureDefMap(): ``model`` with a "signature_defs_metadata" metadata entry
    whose buffer is a flexbuffer map of signature key -> serialized SignatureDef."""
    from flatbuffers import flexbuffers
    from tensorflow.lite.tools import flatbuffer_utils
    from tensorflow.lite.python import schema_py_generated as schema

    builder = flexbuffers.Builder()
    with builder.Map():
        for key in sorted(signature_defs):
            builder.Key(key)
            # a flexbuffer STRING of the serialized bytes, as the C++ fbb.String(key, serialized) writes it
            builder._WriteBlob(signature_defs[key].SerializeToString(), append_zero=True,  # noqa: SLF001
                               type_=flexbuffers.Type.STRING)
    data = builder.Finish()
    model_object = flatbuffer_utils.convert_bytearray_to_object(bytearray(model))
    buffer = schema.BufferT()
    buffer.data = list(data)
    model_object.buffers.append(buffer)
    metadata = schema.MetadataT()
    metadata.name, metadata.buffer = "signature_defs_metadata", len(model_object.buffers) - 1
    model_object.metadata = (model_object.metadata or []) + [metadata]
    return flatbuffer_utils.convert_object_to_bytearray(model_object)


def write_tflite(base: str, model: bytes) -> str:
    """``base``/00000123/model.tflite and nothing else, as TF Serving's TF Lite testdata; returns ``base``."""
    os.makedirs(os.path.join(base, VERSION), exist_ok=True)
    with open(os.path.join(base, VERSION, "model.tflite"), "wb") as f:
        f.write(model)
    return base
