"""What ``serving.servables.loaded_model`` knows about one SignatureDef, worked out once when the model loads.

Everything a request needs that does not depend on the request lives here: input/output aliases,
tensor names, dtypes, shapes, the concrete function, and the outcome of TF Serving's per-signature
checks for Classify/Regress (``PreProcessClassification``/``PreProcessRegression``), so a request
only looks things up.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Callable, Mapping, Optional, Tuple

os.environ["TF_USE_LEGACY_KERAS"] = "1"

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from tensorflow.core.framework import types_pb2  # noqa: E402

from serving.errors import ServingError  # noqa: E402
from serving.rest_api.json_text import dtype_name  # noqa: E402

# tensorflow/cc/saved_model/signature_constants.h
DEFAULT_SIGNATURE = "serving_default"
PREDICT_METHOD_NAME = "tensorflow/serving/predict"
CLASSIFY_METHOD_NAME = "tensorflow/serving/classify"
REGRESS_METHOD_NAME = "tensorflow/serving/regress"
CLASSIFY_INPUTS = "inputs"
CLASSIFY_OUTPUT_CLASSES = "classes"
CLASSIFY_OUTPUT_SCORES = "scores"
REGRESS_INPUTS = "inputs"
REGRESS_OUTPUTS = "outputs"


def invalid(message: str) -> ServingError:
    return ServingError(message, "INVALID_ARGUMENT")


def datatype_string(dtype: tf.DType) -> str:
    """C++ DataTypeString(): "float", "int64", "string"."""
    return dtype_name(dtype)


def datatype_name(dtype: tf.DType) -> str:
    """C++ DataType_Name(): "DT_FLOAT", "DT_STRING"."""
    return types_pb2.DataType.Name(dtype.as_datatype_enum)


def shape_string(shape) -> str:
    """TensorShape/PartialTensorShape::DebugString(): "[2,28,28]", "[?,28]", "<unknown>"."""
    if shape is None:
        return "<unknown>"
    return "[" + ",".join("?" if d is None or d < 0 else str(int(d)) for d in shape) + "]"


@dataclass(frozen=True)
class TensorMeta:
    alias: str
    name: str  # the graph tensor name in the SignatureDef ("serving_default_images:0")
    dtype: tf.DType
    shape: Optional[Tuple[Optional[int], ...]]  # None: unknown rank; None dims: unknown size
    index: int = 0  # position among the signature's inputs (TF's "arg[i]")

    @classmethod
    def from_proto(cls, alias: str, info, index: int = 0) -> "TensorMeta":
        dtype = tf.as_dtype(info.dtype) if info.dtype else None  # DT_INVALID: no tensor
        shape = None
        if info.HasField("tensor_shape") and not info.tensor_shape.unknown_rank:
            shape = tuple(None if d.size < 0 else int(d.size) for d in info.tensor_shape.dim)
        return cls(alias, info.name, dtype, shape, index)

    def check(self, value: np.ndarray) -> None:
        """Raises INVALID_ARGUMENT unless ``value`` has this input's dtype: the one check a TF Serving
        session makes on a fed tensor before running the graph (tensorflow/core/framework/function.cc
        FunctionCallFrame::SetArgs(), which DirectSession::Run applies to its feeds).

        The shape is not checked: neither predict_util.cc PreProcessPrediction() nor
        saved_model::GetInputValues() compares a request's shape with the SignatureDef's, and a fed
        placeholder takes any shape. The graph decides: half_plus_two's x, declared [?,1], answers
        [1.0, 2.0, 5.0] (shape [3]) with [2.5, 3.0, 4.5], and a shape an op refuses fails with the
        runtime's own OpError text (``loaded_model.op_error_message``)."""
        fast = _NUMPY_OF.get(self.dtype)
        if fast is not None and value.dtype == fast and value.dtype.kind not in "OSU":  # the usual case,
            return                                                                      # without tf.DType
        got = value_dtype(value)
        if self.dtype is not None and got != self.dtype:
            raise invalid(f"Expects arg[{self.index}] to be {datatype_string(self.dtype)} "
                          f"but {datatype_string(got)} is provided")


class _NumpyOf(dict):
    """tf.DType -> the numpy dtype it takes, found once per dtype (string and odd dtypes: None)."""

    def __missing__(self, dtype):
        np_dtype = None
        if dtype is not None and dtype != tf.string:
            try:
                np_dtype = np.dtype(dtype.as_numpy_dtype)
            except TypeError:
                pass
        self[dtype] = np_dtype
        return np_dtype


_NUMPY_OF = _NumpyOf()


def value_dtype(value: np.ndarray) -> tf.DType:
    if value.dtype.kind in "OSU":
        return tf.string
    try:
        return tf.as_dtype(value.dtype)
    except TypeError:
        raise invalid(f"unsupported input dtype {value.dtype}") from None


@dataclass(frozen=True)
class ExamplePlan:
    """The outcome of PreProcessClassification()/PreProcessRegression() for one signature."""
    error: Optional[ServingError] = None
    input: Optional[TensorMeta] = None
    outputs: Tuple[Optional[str], ...] = ()  # classify: (classes alias|None, scores alias|None); regress: (alias,)


@dataclass(frozen=True)
class SignatureMeta:
    name: str
    method_name: str
    inputs: Tuple[TensorMeta, ...]  # sorted by alias
    outputs: Tuple[TensorMeta, ...]  # sorted by alias
    runner: Optional[Callable[[dict], dict]]  # feeds -> outputs by alias; None: the signature cannot be run
    defaults: dict = field(default_factory=dict)  # alias -> np.ndarray (SignatureDef.defaults)
    classify_plan: ExamplePlan = ExamplePlan()
    regress_plan: ExamplePlan = ExamplePlan()
    # Lookups a request makes, worked out once (see __post_init__).
    input_aliases: Tuple[str, ...] = field(init=False)
    output_aliases: Tuple[str, ...] = field(init=False)
    input_map: Mapping[str, TensorMeta] = field(init=False)  # alias -> TensorMeta
    input_specs: Mapping[str, tuple] = field(init=False)  # alias -> (dtype, shape): the REST codec's view

    def __post_init__(self):
        set_ = object.__setattr__  # frozen: these are derived once, here
        set_(self, "input_aliases", tuple(t.alias for t in self.inputs))
        set_(self, "output_aliases", tuple(t.alias for t in self.outputs))
        set_(self, "input_map", MappingProxyType({t.alias: t for t in self.inputs}))
        set_(self, "input_specs", MappingProxyType({t.alias: (t.dtype, t.shape) for t in self.inputs}))

    def input(self, alias: str) -> Optional[TensorMeta]:
        return self.input_map.get(alias)

    @classmethod
    def from_proto(cls, name: str, signature_def, runner, method_name_check: bool = False) -> "SignatureMeta":
        """``method_name_check`` is --enable_signature_method_name_check (GetSignatureMethodNameCheckFeature)."""
        inputs = tuple(TensorMeta.from_proto(a, signature_def.inputs[a], i)
                       for i, a in enumerate(sorted(signature_def.inputs)))
        outputs = tuple(TensorMeta.from_proto(a, signature_def.outputs[a]) for a in sorted(signature_def.outputs))
        defaults = {a: tf.make_ndarray(p) for a, p in signature_def.defaults.items()}
        return cls(name, signature_def.method_name, inputs, outputs, runner, defaults,
                   _classify_plan(signature_def, inputs, method_name_check),
                   _regress_plan(signature_def, inputs, method_name_check))


def _classify_plan(sig, inputs, method_name_check: bool) -> ExamplePlan:
    """tensorflow_serving/servables/tensorflow/classifier.cc PreProcessClassification()."""
    if method_name_check and sig.method_name != CLASSIFY_METHOD_NAME:
        return ExamplePlan(invalid("Expected classification signature method_name to be "
                                   f"{CLASSIFY_METHOD_NAME}. Was: {sig.method_name}"))
    if len(sig.inputs) != 1:
        return ExamplePlan(invalid("Expected one input Tensor."))
    if len(sig.outputs) not in (1, 2):
        return ExamplePlan(invalid(f"Expected one or two output Tensors, found {len(sig.outputs)}"))
    if CLASSIFY_INPUTS not in sig.inputs:
        return ExamplePlan(invalid(f"No classification inputs found in SignatureDef: {_debug_string(sig)}"))
    classes = CLASSIFY_OUTPUT_CLASSES if CLASSIFY_OUTPUT_CLASSES in sig.outputs else None
    scores = CLASSIFY_OUTPUT_SCORES if CLASSIFY_OUTPUT_SCORES in sig.outputs else None
    if classes is None and scores is None:
        return ExamplePlan(invalid(
            "Expected classification signature outputs to contain at least one of "
            f'"{CLASSIFY_OUTPUT_CLASSES}" or "{CLASSIFY_OUTPUT_SCORES}". Signature was: {_debug_string(sig)}'))
    return ExamplePlan(None, next(t for t in inputs if t.alias == CLASSIFY_INPUTS), (classes, scores))


def _regress_plan(sig, inputs, method_name_check: bool) -> ExamplePlan:
    """tensorflow_serving/servables/tensorflow/regressor.cc PreProcessRegression()."""
    if method_name_check and sig.method_name != REGRESS_METHOD_NAME:
        return ExamplePlan(invalid("Expected regression signature method_name to be "
                                   f"{REGRESS_METHOD_NAME}. Was: {sig.method_name}"))
    if len(sig.inputs) != 1:
        return ExamplePlan(invalid("Expected one input Tensor."))
    if len(sig.outputs) != 1:
        return ExamplePlan(invalid("Expected one output Tensor."))
    if REGRESS_INPUTS not in sig.inputs:
        return ExamplePlan(invalid(f"No regression inputs found in SignatureDef: {_debug_string(sig)}"))
    if REGRESS_OUTPUTS not in sig.outputs:
        return ExamplePlan(invalid(f"No regression outputs found in SignatureDef: {_debug_string(sig)}"))
    return ExamplePlan(None, next(t for t in inputs if t.alias == REGRESS_INPUTS), (REGRESS_OUTPUTS,))


def _debug_string(message) -> str:
    """protobuf Message::DebugString(): the text format."""
    from google.protobuf import text_format
    return text_format.MessageToString(message)
