"""--prefer_tflite_model: a version's ``model.tflite`` served with ``tf.lite.Interpreter``, behind the
prediction core's interface (``LoadedModel``: Predict, Classify, Regress, GetModelMetadata), so the REST
and gRPC fronts, the status API, metrics and batching serve it as they serve a SavedModel.

Follows tensorflow/serving 2.16.1:
- ``servables/tensorflow/saved_model_bundle_factory.cc``: with --prefer_tflite_model a version directory
  holding ``model.tflite`` is loaded from it (TfLiteModelFound, LoadTfLiteModel); without one, from its
  SavedModel. A directory holding only ``model.tflite`` is a version like any other (the file-system
  source looks at names, not contents).
- ``servables/tensorflow/tflite_session.cc`` TfLiteSession::Create(): the signatures are the model's
  SignatureDef metadata (TensorFlow's ``lite/tools/signature/signature_def_util.cc``: a flexbuffer map
  signature key -> serialized SignatureDef in the buffer of the metadata entry "signature_defs_metadata"),
  their tensor names checked against the interpreter's inputs/outputs (FixTfLiteTensorName: as given, or
  without the ":0" the TF Lite converter used to drop); without any, one "serving_default" predict
  signature built from the input and output tensors, each under its name without ":N", with the tensor's
  dtype and current dims. The converter's own signature runners are not used (TF Serving 2.16 does not).
- TfLiteSession::Run() / SetInputAndInvokeMiniBatch(): an input whose shape differs from the
  interpreter's is resized to the request's shape ("Failed to resize input tensor ..." / "Failed to
  allocate tensors" / "Failed to invoke TfLite interpreter", INTERNAL; the interpreter's own reason is
  appended); outputs come back with the shapes the interpreter gives them.
- ``tflite_interpreter_pool.cc``: a pool of --num_tflite_pools interpreters of one thread each; a request
  takes one for its run. An interpreter is not thread-safe, so no two runs share one. Interpreters are
  made when first needed (at most the pool size), and one whose run failed is dropped rather than
  reused: TensorFlow's Python interpreter keeps every error it has reported and can be left half
  allocated. --num_tflite_interpreters_per_pool (TfLiteSession's own batch scheduler) is not followed:
  each request runs as it comes, or through --enable_batching like any model.

Unlike TfLiteSession, which copies a request's bytes into the input without looking at its type, an input
of another dtype than its SignatureDef's is refused with the session's "Expects arg[i] to be ..." text, as
for a SavedModel (the copy would read the wrong bytes, or past the end of the buffer).
"""
from __future__ import annotations

import logging
import os
import threading
from typing import Dict, List, Mapping, Optional, Tuple

os.environ["TF_USE_LEGACY_KERAS"] = "1"

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from tensorflow.core.protobuf import meta_graph_pb2  # noqa: E402

from serving.errors import ServingError  # noqa: E402
from serving.servables.loaded_model import LoadedModel  # noqa: E402
from serving.servables.signature_meta import DEFAULT_SIGNATURE, PREDICT_METHOD_NAME, SignatureMeta  # noqa: E402

log = logging.getLogger(__name__)

TFLITE_MODEL_FILENAME = "model.tflite"  # saved_model_bundle_factory.cc kTfLiteModelFilename
SIGNATURE_DEFS_METADATA = "signature_defs_metadata"  # signature_def_util.h kSignatureDefsMetadataName

# tflite_session.cc TfLiteTypeToTfType(): the TF Lite tensor types a served input or output may have.
_TF_TYPES = {np.dtype(np.float32): tf.float32, np.dtype(np.int32): tf.int32, np.dtype(np.uint8): tf.uint8,
             np.dtype(np.int64): tf.int64, np.dtype(np.bytes_): tf.string, np.dtype(np.bool_): tf.bool,
             np.dtype(np.int16): tf.int16, np.dtype(np.complex64): tf.complex64, np.dtype(np.int8): tf.int8}


def tflite_model_found(path: str) -> bool:
    """TfLiteModelFound(): the version directory holds a model.tflite."""
    return os.path.exists(os.path.join(path, TFLITE_MODEL_FILENAME))


def load(path: str, num_interpreters: int = 1, method_name_check: bool = False) -> LoadedModel:
    """LoadTfLiteModel(): ``path``/model.tflite as a LoadedModel whose signatures run on a pool of at most
    ``num_interpreters`` interpreters (--num_tflite_pools; at least 1)."""
    filename = os.path.join(path, TFLITE_MODEL_FILENAME)
    try:
        with open(filename, "rb") as f:
            model_bytes = f.read()
    except OSError as e:
        raise ServingError(f"{filename}; {e.strerror or e}", "NOT_FOUND" if isinstance(e, FileNotFoundError)
                           else "UNKNOWN") from None
    session = TfLiteSession(model_bytes, num_interpreters)
    meta_graph = meta_graph_pb2.MetaGraphDef()
    for name, signature_def in session.signature_defs.items():
        meta_graph.signature_def[name].CopyFrom(signature_def)
    signatures = {name: SignatureMeta.from_proto(name, signature_def, session.runner(signature_def),
                                                 method_name_check)
                  for name, signature_def in meta_graph.signature_def.items()}
    return LoadedModel(path, session, meta_graph, signatures, method_name_check)


# ---- the model file ---------------------------------------------------------------------------------

def _schema():
    from tensorflow.lite.python import schema_py_generated
    return schema_py_generated


def signature_defs_from_metadata(model_bytes: bytes) -> Dict[str, meta_graph_pb2.SignatureDef]:
    """signature_def_util.cc GetSignatureDefMap(): the SignatureDefs stored in the model's
    "signature_defs_metadata" metadata, {} when it has none. Raises ServingError as TfLiteSession::Create
    reports a map it cannot read (INVALID_ARGUMENT)."""
    from flatbuffers import flexbuffers

    schema = _schema()
    model = schema.Model.GetRootAs(model_bytes, 0)
    for i in range(model.MetadataLength()):
        metadata = model.Metadata(i)
        if metadata.Name() != SIGNATURE_DEFS_METADATA.encode():
            continue
        try:
            buffer = model.Buffers(metadata.Buffer())
            data = buffer.DataAsNumpy().tobytes() if buffer.DataLength() else \
                model_bytes[buffer.Offset():buffer.Offset() + buffer.Size()]
            entries = flexbuffers.GetRoot(data).AsMap
            serialized = {key.AsKeyBytes.decode("utf-8"): value.AsStringBytes
                          for key, value in zip(entries.Keys, entries.Values)}
        except Exception as e:  # noqa: BLE001 - whatever a corrupt buffer makes the reader raise
            raise _invalid_signature_defs(f"Error reading signature def map: {e}") from None
        result = {}
        for key, data in serialized.items():
            signature_def = meta_graph_pb2.SignatureDef()
            try:
                signature_def.ParseFromString(data)
            except Exception:  # noqa: BLE001 - protobuf's DecodeError and friends
                raise _invalid_signature_defs("Cannot parse signature def found in flatbuffer.") from None
            result[key] = signature_def
        return result
    return {}


def _invalid_signature_defs(message: str) -> ServingError:
    return ServingError(f"Invalid SignatureDefs found in TfLite model: {message}", "INVALID_ARGUMENT")


def _legacy_name(tensor_name: str) -> str:
    """TfToTfLiteLegacyTensorName(): the name without its ":N" (early converters dropped it)."""
    return tensor_name.split(":", 1)[0]


def _fix_tensor_name(names: Mapping[str, int], tensor_name: str) -> str:
    """FixTfLiteTensorName(): the name as given when the model has it, else its legacy form."""
    if tensor_name in names:
        return tensor_name
    if _legacy_name(tensor_name) in names:
        return _legacy_name(tensor_name)
    raise ServingError(f"Unknown tensor '{tensor_name}'.", "INTERNAL")


def _tensor_infos(details: List[dict], kind: str) -> Dict[str, Tuple[meta_graph_pb2.TensorInfo, int]]:
    """GetTensorInfoMap(): tensor name -> (TensorInfo with the tensor's dtype and current dims, index)."""
    infos = {}
    for detail in details:
        name, index = detail["name"], int(detail["index"])
        if not name:
            raise ServingError(f"{kind} name missing for tensor index: {index}", "INTERNAL")
        dtype = _TF_TYPES.get(np.dtype(detail["dtype"]))
        if dtype is None:
            raise ServingError(f"Unknown TfLite type: {np.dtype(detail['dtype']).name}", "INTERNAL")
        info = meta_graph_pb2.TensorInfo(name=name, dtype=dtype.as_datatype_enum)
        for size in detail["shape"]:
            info.tensor_shape.dim.add(size=int(size))
        if name in infos:
            raise ServingError(f"{kind} tensor name: {name} has multiple indices", "ALREADY_EXISTS")
        infos[name] = (info, index)
    return infos


# ---- the session ------------------------------------------------------------------------------------

class TfLiteSession:
    """TfLiteSession: the model's bytes, its signatures and a pool of interpreters that run them. Plays
    the part SessionBundle plays for a SavedModel (``runner()``, ``close()``)."""

    def __init__(self, model_bytes: bytes, num_interpreters: int = 1):
        if len(model_bytes) < 8 or not _schema().Model.ModelBufferHasIdentifier(model_bytes, 0):
            raise ServingError("Cannot build FlatBufferModel from buffer.", "INVALID_ARGUMENT")
        self._model_bytes = bytes(model_bytes)
        first = self._new_interpreter("Cannot build Interpreter from buffer.")
        self.inputs = _tensor_infos(first.interpreter.get_input_details(), "Input")
        self.outputs = _tensor_infos(first.interpreter.get_output_details(), "Output")
        self.input_indices = {name: index for name, (_, index) in self.inputs.items()}
        self.output_indices = {name: index for name, (_, index) in self.outputs.items()}
        self.signature_defs = self._signature_defs()
        self._pool = _InterpreterPool(lambda: self._new_interpreter(
            "Failed to create a TFLite interpreter with the given model"), max(1, num_interpreters), first)

    def _signature_defs(self) -> Dict[str, meta_graph_pb2.SignatureDef]:
        found = signature_defs_from_metadata(self._model_bytes)
        if found:
            for key, signature_def in found.items():
                for kind, tensors, names in (("input", signature_def.inputs, self.input_indices),
                                             ("output", signature_def.outputs, self.output_indices)):
                    for alias, info in tensors.items():
                        try:
                            info.name = _fix_tensor_name(names, info.name)
                        except ServingError as e:
                            raise ServingError(f"{e.message}\n\tSignature {kind} {alias} references an unknown "
                                               "tensor", e.code) from None
            return found
        log.warning("No signature def found in TFLite model. Generating one.")
        signature_def = meta_graph_pb2.SignatureDef(method_name=PREDICT_METHOD_NAME)
        for name in sorted(self.inputs):
            signature_def.inputs[_legacy_name(name)].CopyFrom(self.inputs[name][0])
        for name in sorted(self.outputs):
            signature_def.outputs[_legacy_name(name)].CopyFrom(self.outputs[name][0])
        return {DEFAULT_SIGNATURE: signature_def}

    def _new_interpreter(self, failure: str) -> "_Interpreter":
        """CreateTfLiteInterpreterWrapper(): one thread; a string first input sized for one item; tensors
        allocated."""
        try:
            interpreter = tf.lite.Interpreter(model_content=self._model_bytes, num_threads=1)
        except (ValueError, RuntimeError) as e:
            raise ServingError(_with_reason(failure, e), "INTERNAL") from None
        wrapper = _Interpreter(interpreter)
        details = interpreter.get_input_details()
        if details and np.dtype(details[0]["dtype"]) == np.dtype(np.bytes_):
            try:
                interpreter.resize_tensor_input(details[0]["index"], [1], strict=False)
            except (ValueError, RuntimeError) as e:
                raise ServingError(_with_reason("Failed to resize input", e), "INTERNAL") from None
        try:
            interpreter.allocate_tensors()
        except RuntimeError as e:
            raise ServingError(_with_reason("Failed to allocate tensors", e), "INTERNAL") from None
        wrapper.shapes = {int(d["index"]): tuple(int(size) for size in d["shape"])
                          for d in interpreter.get_input_details()}
        return wrapper

    def runner(self, signature_def) -> Optional["TfLiteSignatureRunner"]:
        """A callable running the signature (feeds by alias -> every output by alias), or None when a
        tensor it names is not one of the model's inputs/outputs."""
        try:
            names = [(alias, _fix_tensor_name(self.input_indices, info.name))
                     for alias, info in sorted(signature_def.inputs.items())]
            fetches = tuple((alias, self.output_indices[_fix_tensor_name(self.output_indices, info.name)])
                            for alias, info in sorted(signature_def.outputs.items()))
        except ServingError:
            return None
        feeds = tuple((alias, self.input_indices[name], name) for alias, name in names)
        return TfLiteSignatureRunner(self._pool, feeds, fetches)

    def close(self) -> None:
        self._pool.close()


def _with_reason(message: str, error: BaseException) -> str:
    """TF Serving's text, then the interpreter's own reason (which TF Serving only logs)."""
    reason = str(error).strip()
    return f"{message}: {reason}" if reason else message


class _Interpreter:
    """TfLiteInterpreterWrapper: one interpreter and the shape each of its inputs is allocated for."""

    __slots__ = ("interpreter", "shapes")

    def __init__(self, interpreter):
        self.interpreter = interpreter
        self.shapes: Dict[int, tuple] = {}

    def run(self, feeds: tuple, values: Mapping[str, np.ndarray], fetches: tuple) -> Dict[str, np.ndarray]:
        """SetInputAndInvokeMiniBatch(), CreateOutputTensors(), SetMiniBatchOutput()."""
        interpreter, resized = self.interpreter, False
        for alias, index, name in feeds:
            shape = values[alias].shape
            if self.shapes.get(index) != shape:
                try:
                    interpreter.resize_tensor_input(index, list(shape), strict=False)
                except (ValueError, RuntimeError) as e:
                    old = self.shapes.get(index, ())
                    raise ServingError(_with_reason(
                        f"Failed to resize input tensor: {name} from "
                        f"{int(np.prod(old)) * values[alias].dtype.itemsize} to {values[alias].nbytes} bytes.", e),
                        "INTERNAL") from None
                self.shapes[index] = None  # allocated for no shape until allocate_tensors() succeeds
                resized = True
        if resized:
            try:
                interpreter.allocate_tensors()
            except RuntimeError as e:
                raise ServingError(_with_reason("Failed to allocate tensors", e), "INTERNAL") from None
            for alias, index, _ in feeds:
                self.shapes[index] = values[alias].shape
        for alias, index, _ in feeds:
            try:
                interpreter.set_tensor(index, values[alias])
            except ValueError as e:
                raise ServingError(str(e).strip(), "INVALID_ARGUMENT") from None
        try:
            interpreter.invoke()
        except RuntimeError as e:
            raise ServingError(_with_reason("Failed to invoke TfLite interpreter", e), "INTERNAL") from None
        return {alias: np.asarray(interpreter.get_tensor(index)) for alias, index in fetches}


class _InterpreterPool:
    """TfLiteInterpreterPool: at most ``size`` interpreters, each used by one run at a time; made when
    first needed; one whose run failed is dropped (its error text and state are not carried over)."""

    def __init__(self, make, size: int, first: _Interpreter):
        self._make, self._size = make, size
        self._free: List[_Interpreter] = [first]
        self._count = 1  # made and not dropped, in use or free
        self._ready = threading.Condition(threading.Lock())
        self._closed = False

    def acquire(self) -> _Interpreter:
        with self._ready:
            while not self._free and self._count >= self._size:
                self._ready.wait()
            if self._free:
                return self._free.pop()
            self._count += 1
        try:
            return self._make()
        except BaseException:
            with self._ready:
                self._count -= 1
                self._ready.notify()
            raise

    def release(self, interpreter: _Interpreter, healthy: bool) -> None:
        with self._ready:
            if healthy and not self._closed:
                self._free.append(interpreter)
            else:
                self._count -= 1
            self._ready.notify()

    def close(self) -> None:
        with self._ready:
            self._closed = True
            self._free.clear()


class TfLiteSignatureRunner:
    """TfLiteSession::Run of one signature, with SessionBundle's SignatureRunner contract: feeds by alias
    (every input alias of the signature) -> every output by alias."""

    __slots__ = ("_pool", "_feeds", "_fetches", "feed_aliases", "fetch_aliases")

    def __init__(self, pool: _InterpreterPool, feeds: tuple, fetches: tuple):
        self._pool, self._feeds, self._fetches = pool, feeds, fetches
        self.feed_aliases = tuple(alias for alias, _, _ in feeds)
        self.fetch_aliases = tuple(alias for alias, _ in fetches)

    def __call__(self, feeds: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
        if len(feeds) != len(self.feed_aliases) or any(a not in feeds for a in self.feed_aliases):
            raise TypeError(f"feeds {sorted(feeds)} do not match the signature's inputs {list(self.feed_aliases)}")
        interpreter = self._pool.acquire()
        healthy = False
        try:
            outputs = interpreter.run(self._feeds, feeds, self._fetches)
            healthy = True
            return outputs
        except ServingError as e:
            healthy = e.code == "INVALID_ARGUMENT"  # refused by set_tensor(), before anything ran
            raise
        finally:
            self._pool.release(interpreter, healthy)
