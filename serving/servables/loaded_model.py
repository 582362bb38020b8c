"""The prediction core both serving fronts (REST and gRPC) call: one loaded SavedModel, TF Serving
2.16's Predict / Classify / Regress / GetModelMetadata semantics and error texts.

Sources, all in tensorflow/serving 2.16.1 unless named otherwise:
- ``servables/tensorflow/predict_util.cc`` RunPredict()/PreProcessPrediction(): signature lookup
  (FAILED_PRECONDITION), method-name check (INTERNAL), input-count check, output_filter checks;
  ``tensorflow/cc/saved_model/util.cc`` GetInputValues(): missing/unknown input aliases, defaults.
- ``servables/tensorflow/classifier.cc`` / ``regressor.cc``: Get*SignatureDef(), PreProcess*() and
  PostProcess*Result() checks; ``util.cc`` InputToSerializedExampleTensor(): "Input is empty.".
- ``servables/tensorflow/get_model_metadata_impl.cc``: the SignatureDefMap is the MetaGraphDef's
  signature_def map, copied as is (``__saved_model_init_op`` included).
- ``model_servers/http_rest_api_handler.cc`` GetInfoMap(): ``input_specs()`` for the REST codec.
- ``tensorflow/core/framework/function.cc`` FunctionCallFrame::SetArgs(): wrong input dtype. No
  shape is compared with the SignatureDef's (TF Serving compares none): the graph takes what it can,
  and refuses the rest with TensorFlow's OpError, INVALID_ARGUMENT for a shape.

Signatures run as TF Serving runs them, Session::Run of the SignatureDef's tensors
(``serving.servables.session_bundle``). Thread-safety: nothing is mutated after ``load``; concurrent calls only
share read-only state and the session, which TensorFlow runs concurrently.
"""
from __future__ import annotations

import os
import re
from typing import Callable, Dict, Iterable, Mapping, Optional, Sequence, Tuple

os.environ["TF_USE_LEGACY_KERAS"] = "1"

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from tensorflow.core.protobuf import saved_model_pb2  # noqa: E402
from tensorflow_serving.apis import get_model_metadata_pb2  # noqa: E402

from serving.errors import HTTP_STATUS, ServingError  # noqa: E402
from serving.servables.session_bundle import SessionBundle  # noqa: E402
from serving.servables.signature_meta import (DEFAULT_SIGNATURE, SignatureMeta, TensorMeta, datatype_name,  # noqa: E402
                                    invalid, shape_string)

__all__ = ["LoadedModel", "SignatureMeta", "TensorMeta", "ServingError", "DEFAULT_SIGNATURE",
           "resolve_signature_name", "serve_tags_meta_graph"]

SERVE_TAG = "serve"
_PREDICT_METHODS = ("tensorflow/serving/predict", "tensorflow/serving/classify", "tensorflow/serving/regress")
_CODE_NAMES = {getattr(tf.errors, name): name for name in HTTP_STATUS if hasattr(tf.errors, name)}
_OP_SUFFIX = re.compile(r" \[Op:[^\]]*\]\s*$")


def resolve_signature_name(signature_name: Optional[str]) -> str:
    """An empty signature name means kDefaultServingSignatureDefKey, in every API."""
    return signature_name or DEFAULT_SIGNATURE


def serve_tags_meta_graph(export_dir: str, tags: Sequence[str] = (SERVE_TAG,)):
    """The MetaGraphDef of saved_model.pb whose tag set is exactly ``tags`` (as LoadSavedModel finds it)."""
    saved_model = saved_model_pb2.SavedModel()
    with tf.io.gfile.GFile(os.path.join(export_dir, "saved_model.pb"), "rb") as f:
        saved_model.ParseFromString(f.read())
    for meta_graph in saved_model.meta_graphs:
        if set(meta_graph.meta_info_def.tags) == set(tags):
            return meta_graph
    available = [sorted(m.meta_info_def.tags) for m in saved_model.meta_graphs]
    raise ServingError(
        f"MetaGraphDef associated with tags '{' '.join(tags)}' could not be found in SavedModel, with available "
        f"tags '{available}'. To inspect available tag-sets in the SavedModel, please use the SavedModel CLI: "
        "`saved_model_cli`", "NOT_FOUND")


class LoadedModel:
    """One SavedModel, loaded once; every per-signature fact is precomputed in ``signatures``."""

    def __init__(self, path: str, bundle, meta_graph, signatures: Dict[str, SignatureMeta],
                 method_name_check: bool = False):
        self.path = path
        self.method_name_check = method_name_check
        self._bundle = bundle  # the session the signature runners call
        self.signatures = signatures
        self._metadata = get_model_metadata_pb2.SignatureDefMap()
        for name, signature_def in meta_graph.signature_def.items():
            self._metadata.signature_def[name].CopyFrom(signature_def)
        self._metadata_bytes = self._metadata.SerializeToString(deterministic=True)

    @classmethod
    def load(cls, path: str, tags: Sequence[str] = (SERVE_TAG,), method_name_check: bool = False) -> "LoadedModel":
        """``method_name_check`` is --enable_signature_method_name_check: signatures must carry the
        predict/classify/regress method name of the API that calls them."""
        meta_graph = serve_tags_meta_graph(path, tags)
        bundle = SessionBundle(path, tags)
        signatures = {name: SignatureMeta.from_proto(name, signature_def, bundle.runner(signature_def),
                                                     method_name_check)
                      for name, signature_def in meta_graph.signature_def.items()}
        bundle.finalize()
        return cls(path, bundle, meta_graph, signatures, method_name_check)

    def close(self) -> None:
        """Frees the session now rather than when the model is garbage-collected."""
        if self._bundle is not None:
            self._bundle.close()

    # ---- GetModelMetadata -------------------------------------------------------------------

    def metadata(self) -> get_model_metadata_pb2.SignatureDefMap:
        """The SignatureDefMap GetModelMetadata packs under "signature_def" (a fresh copy)."""
        result = get_model_metadata_pb2.SignatureDefMap()
        result.ParseFromString(self._metadata_bytes)
        return result

    def input_specs(self, signature_name: str) -> Dict[str, Tuple[tf.DType, Optional[tuple]]]:
        """HttpRestApiHandler::GetInfoMap(): alias -> (dtype, shape) for the REST JSON codec."""
        name = resolve_signature_name(signature_name)
        meta = self.signatures.get(name)
        if meta is None:
            raise invalid(f'Serving signature name: "{name}" not found in signature def')
        return meta.input_specs

    # ---- Predict -------------------------------------------------------------------------------

    def predict(self, signature_name: str, inputs: Mapping[str, np.ndarray],
                output_filter: Iterable[str] = ()) -> Dict[str, np.ndarray]:
        """RunPredict(): alias -> output array, in output_filter order (else sorted by alias).

        Strings come back as object arrays of bytes. Pass string inputs as object arrays of bytes
        too: numpy's fixed-width "S" arrays drop trailing NUL bytes.
        """
        meta, feeds, aliases = self._predict_plan(signature_name, inputs, output_filter)
        outputs = self._run(meta, feeds)
        return {alias: outputs[alias] for alias in aliases}

    def _predict_plan(self, signature_name: str, inputs: Mapping[str, np.ndarray], output_filter: Iterable[str]):
        """PreProcessPrediction(): the signature, its feeds and the output aliases, or TF Serving's error."""
        name = resolve_signature_name(signature_name)
        meta = self.signatures.get(name)
        if meta is None:
            raise ServingError(f'Serving signature key "{name}" not found.', "FAILED_PRECONDITION")
        if self.method_name_check and meta.method_name not in _PREDICT_METHODS:  # VerifySignature()
            raise ServingError("Expected prediction signature method_name to be one of {"
                               + ", ".join(_PREDICT_METHODS) + "}. Was: " + meta.method_name, "INTERNAL")
        return meta, _input_values(meta, inputs), _output_aliases(meta, output_filter)

    def prepare_predict(self, signature_name: str, inputs: Mapping[str, np.ndarray],
                        output_filter: Iterable[str] = ()) -> Callable[[], Dict[str, np.ndarray]]:
        """predict() in two steps: every check now, raising what predict() raises; the session run
        when the returned function is called, failing as predict() fails. A front checks on its own
        thread and hands only the run to a worker, which then needs the GIL for a few lines only."""
        meta, feeds, aliases = self._predict_plan(signature_name, inputs, output_filter)
        arrays = _checked_feeds(meta, feeds)
        if aliases == meta.output_aliases:
            return lambda: _session_run(meta, arrays)

        def run() -> Dict[str, np.ndarray]:
            outputs = _session_run(meta, arrays)
            return {alias: outputs[alias] for alias in aliases}
        return run

    # ---- Classify / Regress --------------------------------------------------------------------

    def classify(self, signature_name: str, serialized_examples: Sequence[bytes]
                 ) -> Tuple[Optional[np.ndarray], Optional[np.ndarray]]:
        """RunClassify(): (classes [batch, k] object array of bytes or None, scores [batch, k] float32
        or None); None when the signature lacks that output. ``serialized_examples`` are serialized
        tf.Examples, context already merged (InputToSerializedExampleTensor())."""
        meta = self._example_signature(signature_name, "classification", "classify_plan")
        plan = meta.classify_plan
        examples = _examples_tensor(serialized_examples)
        num_examples = len(examples)
        outputs = self._run(meta, {plan.input.alias: examples})
        classes_alias, scores_alias = plan.outputs
        classes = outputs[classes_alias] if classes_alias else None
        scores = outputs[scores_alias] if scores_alias else None
        for label, tensor, dtype in (("classes", classes, tf.string), ("scores", scores, tf.float32)):
            if tensor is None:
                continue
            if tensor.ndim != 2:
                raise invalid(f"Expected Tensor shape: [batch_size num_classes] but got {shape_string(tensor.shape)}")
            if _dtype(tensor) != dtype:
                got = datatype_name(_dtype(tensor))
                raise invalid(f"Expected {label} Tensor of {datatype_name(dtype)}. Got: {got}")
            if tensor.shape[0] != num_examples:
                raise invalid(f"Expected {label} output batch size of {num_examples}. Got: {tensor.shape[0]}")
        if classes is not None and scores is not None and classes.shape[1] != scores.shape[1]:
            raise invalid("Tensors class and score should match in dim_size(1). "
                          f"Got {classes.shape[1]} vs. {scores.shape[1]}")
        return classes, scores

    def regress(self, signature_name: str, serialized_examples: Sequence[bytes]) -> np.ndarray:
        """RunRegress(): one float32 value per example, shape [batch]."""
        meta = self._example_signature(signature_name, "regression", "regress_plan")
        plan = meta.regress_plan
        examples = _examples_tensor(serialized_examples)
        num_examples = len(examples)
        output = self._run(meta, {plan.input.alias: examples})[plan.outputs[0]]
        if not (output.ndim == 1 or (output.ndim == 2 and output.shape[1] == 1)):
            raise invalid("Expected output Tensor shape to be either [batch_size] or [batch_size, 1] "
                          f"but got {shape_string(output.shape)}")
        if output.shape[0] != num_examples:
            raise invalid(f"Input batch size did not match output batch size: {num_examples} vs. {output.shape[0]}")
        if _dtype(output) != tf.float32:
            raise invalid(f"Expected output Tensor of DT_FLOAT.  Got: {datatype_name(_dtype(output))}")
        return output.reshape(num_examples)

    def _example_signature(self, signature_name: str, kind: str, plan_attr: str) -> SignatureMeta:
        """GetClassificationSignatureDef()/GetRegressionSignatureDef() and PreProcess*()."""
        name = resolve_signature_name(signature_name)
        meta = self.signatures.get(name)
        if meta is None:
            raise invalid(f"No signature was found with the name: {name}")
        plan = getattr(meta, plan_attr)
        if plan.error is not None:
            raise ServingError(plan.error.message, plan.error.code)
        return meta

    # ---- running -------------------------------------------------------------------------------

    def _run(self, meta: SignatureMeta, feeds: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
        """Session::Run() of the whole signature: the dtype check, then the session callable.
        (serving.batching.batching_session replaces this method on its copy of a model.)"""
        return _session_run(meta, _checked_feeds(meta, feeds))


def _checked_feeds(meta: SignatureMeta, feeds: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
    """FunctionCallFrame::SetArgs()'s dtype check, per input (shapes are the graph's to judge)."""
    arrays = {}
    input_map = meta.input_map
    for alias, value in feeds.items():
        spec = input_map.get(alias)
        spec.check(value)
        arrays[alias] = _feedable(alias, value)
    if meta.runner is None:
        raise ServingError(f'signature "{meta.name}" has no function in the SavedModel', "UNIMPLEMENTED")
    return arrays


def _session_run(meta: SignatureMeta, arrays: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
    try:
        return meta.runner(arrays)
    except tf.errors.OpError as error:
        raise ServingError(op_error_message(error), _CODE_NAMES.get(error.error_code, "UNKNOWN")) from None
    except (TypeError, ValueError) as error:  # the feeds do not fit the signature's placeholders
        raise invalid(str(error)) from None


def _feedable(alias: str, value: np.ndarray) -> np.ndarray:
    """What the session is fed for a checked input. Numbers go as they are (native byte order); strings
    as an object array of bytes, converted by tf.constant as before, so odd items fail as they did."""
    kind = value.dtype.kind
    if kind in "OSU":
        if kind == "O" and all(type(v) is bytes for v in value.flat):
            return value
        try:
            return tf.constant(value, dtype=tf.string).numpy()
        except (TypeError, ValueError) as error:
            raise invalid(f"input tensor alias {alias}: {error}") from None
    if not value.dtype.isnative:
        return value.astype(value.dtype.newbyteorder("="))
    return value


def _input_values(meta: SignatureMeta, inputs: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
    """VerifyRequestInputsSize() then saved_model::GetInputValues()."""
    request, signature = set(inputs), set(meta.input_aliases)
    if len(request) > len(signature) or (len(request) < len(signature) and not meta.defaults):
        raise invalid(
            f"input size does not match signature: {len(request)}!={len(signature)} "
            f"len({{{','.join(sorted(request))}}}) != len({{{','.join(sorted(signature))}}}). "
            f"Sent extra: {{{','.join(sorted(request - signature))}}}. "
            f"Missing but required: {{{','.join(sorted(signature - request))}}}.")
    feeds, seen = {}, set()
    for spec in meta.inputs:
        if spec.alias in inputs:
            feeds[spec.alias] = _as_array(inputs[spec.alias])
            seen.add(spec.alias)
        elif spec.alias in meta.defaults:
            feeds[spec.alias] = meta.defaults[spec.alias]
        else:
            raise invalid(
                f"Signature input alias: {spec.alias}(feed name: {spec.name}) not found in request and no default "
                f"value provided. Inputs expected to be in the request {{{','.join(sorted(request))}}}, "
                f"or default input alias set: {','.join(sorted(meta.defaults))}")
    if request and len(seen) != len(request):
        raise invalid(f"Inputs contains invalid name. Used request inputs: {','.join(sorted(seen))}, "
                      f"request input: {','.join(sorted(request))}")
    return feeds


def _output_aliases(meta: SignatureMeta, output_filter: Iterable[str]) -> Tuple[str, ...]:
    """PreProcessPrediction()'s output_filter checks; no filter means every output."""
    aliases, seen = [], set()
    for alias in output_filter:
        if alias not in meta.output_aliases:
            raise invalid(f"output tensor alias not found in signature: {alias} Outputs expected to be in "
                          f"the set {{{','.join(meta.output_aliases)}}}.")
        if alias in seen:
            raise invalid(f"duplicate output tensor alias: {alias}")
        seen.add(alias)
        aliases.append(alias)
    return tuple(aliases) or meta.output_aliases


def _examples_tensor(serialized_examples: Sequence[bytes]) -> np.ndarray:
    examples = list(serialized_examples)
    if not examples:
        raise invalid("Input is empty.")
    array = np.empty(len(examples), dtype=object)
    array[:] = [bytes(e) for e in examples]
    return array


def _as_array(value) -> np.ndarray:
    if isinstance(value, np.ndarray):
        return value
    if isinstance(value, tf.Tensor):
        return value.numpy()
    return np.asarray(value)


def _dtype(array: np.ndarray) -> tf.DType:
    return tf.string if array.dtype.kind in "OSU" else tf.as_dtype(array.dtype)


def op_error_message(error: tf.errors.OpError) -> str:
    """The runtime's own text, without the eager wrapper ("Graph execution error:", the node's
    definition trace, " [Op:__inference_...]") that a TF Serving session run does not add."""
    message = error.message
    if message.startswith("Graph execution error:"):
        lines = message[len("Graph execution error:"):].lstrip("\n").split("\n")
        if lines and lines[0].startswith("Detected at node"):
            lines = lines[1:]
            while lines and (lines[0].startswith(" ") or lines[0] in ("<stack traces unavailable>", "")):
                lines = lines[1:]
        message = "\n".join(lines)
    return _OP_SUFFIX.sub("", message)
