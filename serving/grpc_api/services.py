"""The RPC bodies of TF Serving 2.16's gRPC API (PredictionService, ModelService) over the registry and
the prediction core that REST uses too, so both fronts give the same answers and the same errors. The
transport (grpc.server, status codes, metrics) is ``serving.grpc_api.front``.

Sources, tensorflow/serving 2.16.1:
- ``model_servers/prediction_service_impl.cc``, ``model_service_impl.cc``.
- ``servables/tensorflow/predict_impl.cc``, ``classification_service.cc``, ``regression_service.cc``,
  ``get_model_metadata_impl.cc``, ``model_servers/get_model_status_impl.cc``: "Missing ModelSpec" etc.
- ``model_servers/server_core.cc`` ServableRequestFromModelSpec(): version vs version_label.
- ``servables/tensorflow/util.cc`` MakeModelSpec() (response model_spec: the request's name, "" read as
  serving_default, the servable's version); InputToSerializedExampleTensor() (context bytes + example
  bytes, exactly as sent, via ``apis/internal/serialized_input.proto``).
- ``servables/tensorflow/multi_inference_helper.cc`` / ``multi_inference.cc``: MultiInference.

Not in TF Serving: a Predict request's tensors are sized before any is decoded and refused with
RESOURCE_EXHAUSTED past ``max_request_tensor_bytes`` (--max_request_tensor_bytes), since the fill rule
lets a 45-byte TensorProto stand for gigabytes. Classify/Regress/MultiInference carry no TensorProto: their
one input tensor holds the serialized examples the request itself carries, one string each.
"""
from __future__ import annotations

from collections.abc import Mapping

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, text_format
from tensorflow_serving.apis import (classification_pb2, get_model_metadata_pb2, get_model_status_pb2,
                                     inference_pb2, model_management_pb2, model_pb2, predict_pb2,
                                     regression_pb2, status_pb2)

from serving.errors import ServingError, request_too_large
from serving.model_servers.options import OptionsError, ServerOptions
from serving.model_servers.server_config import specs_from_config
from serving.grpc_api.tensor_proto import (TensorProtoError, TensorTooLargeError, UnsupportedTensorError,
                                           describe, from_ndarray, tensor_bytes, to_ndarray)


DEFAULT_SIGNATURE = "serving_default"
CLASSIFY_METHOD, REGRESS_METHOD = "tensorflow/serving/classify", "tensorflow/serving/regress"
_CODES = status_pb2.StatusProto.DESCRIPTOR.fields_by_name["error_code"].enum_type.values_by_name
MAX_REQUEST_TENSOR_BYTES = ServerOptions.max_request_tensor_bytes  # the flag's default


def _invalid(message: str) -> ServingError:
    return ServingError(message, "INVALID_ARGUMENT")


def _input_carrier():
    """Field 2 (the Input) of a Classification/Regression/MultiInference request, read as
    internal::SerializedInput reads it: the examples and the context stay the bytes the client sent."""
    rep, one = "label: LABEL_REPEATED type: TYPE_BYTES", "label: LABEL_OPTIONAL type: TYPE_MESSAGE"
    schema = (
        'name: "digits/serving/serialized_input.proto" package: "digits.serving" syntax: "proto3" '
        f'message_type {{ name: "List" field {{ name: "examples" number: 1 {rep} }} }} '
        f'message_type {{ name: "ListWithContext" field {{ name: "examples" number: 1 {rep} }} '
        'field { name: "context" number: 2 label: LABEL_OPTIONAL type: TYPE_BYTES } } '
        'message_type { name: "SerializedInput" oneof_decl { name: "kind" } '
        f'field {{ name: "example_list" number: 1 {one} type_name: ".digits.serving.List" oneof_index: 0 }} '
        f'field {{ name: "example_list_with_context" number: 2 {one} type_name: ".digits.serving.ListWithContext" '
        'oneof_index: 0 } } '
        f'message_type {{ name: "Carrier" field {{ name: "input" number: 2 {one} '
        'type_name: ".digits.serving.SerializedInput" } }')
    pool = descriptor_pool.DescriptorPool()
    pool.Add(text_format.Parse(schema, descriptor_pb2.FileDescriptorProto()))
    get = getattr(message_factory, "GetMessageClass", None) or message_factory.MessageFactory(pool).GetPrototype
    return get(pool.FindMessageTypeByName("digits.serving.Carrier"))


_Carrier = _input_carrier()


def serialized_examples(request_bytes: bytes) -> list:
    """InputToSerializedExampleTensor(): one serialized tf.Example per example, the context's bytes first,
    so that parsing the concatenation lets the example's features override the context's."""
    serialized = _Carrier.FromString(request_bytes).input
    kind = serialized.WhichOneof("kind")
    if kind == "example_list":
        return list(serialized.example_list.examples)
    if kind == "example_list_with_context":
        with_context = serialized.example_list_with_context
        return [with_context.context + example for example in with_context.examples]
    return []


def check_request_bytes(protos: Mapping, limit: int) -> None:
    """RESOURCE_EXHAUSTED, before anything is decoded, when the request's tensors together would take more
    than ``limit`` bytes. A tensor that does not parse counts 0 here and fails when it is parsed."""
    sizes = {}
    for alias, proto in protos.items():
        try:
            sizes[alias] = tensor_bytes(proto)
        except TensorProtoError:
            sizes[alias] = 0
    total = sum(sizes.values())
    if total > limit:
        alias = max(sizes, key=sizes.get)
        raise request_too_large(total, limit, f"The request's input tensors (the largest: {alias}, "
                                              f"{describe(protos[alias])})")


class _InputTensors(Mapping):
    """PredictRequest.inputs, each parsed when the core reads it, as GetInputValues() parses only the aliases
    the signature names (in its order), failing with "tensor parsing error: <alias>" (plus what is wrong
    when TensorFlow would have taken the tensor but this server cannot hold it)."""

    def __init__(self, protos, max_bytes: int = MAX_REQUEST_TENSOR_BYTES):
        self._protos, self._max_bytes = protos, max_bytes

    def __getitem__(self, alias):
        if alias not in self._protos:  # indexing a proto map would insert the key
            raise KeyError(alias)
        try:
            return to_ndarray(self._protos[alias], self._max_bytes)
        except TensorTooLargeError as e:
            raise request_too_large(e.needed, e.limit, f"Input tensor {alias}") from None
        except UnsupportedTensorError as e:
            raise _invalid(f"tensor parsing error: {alias}: {e}") from None
        except TensorProtoError:
            raise _invalid(f"tensor parsing error: {alias}") from None

    def __contains__(self, alias):
        return alias in self._protos

    def __iter__(self):
        return iter(self._protos)

    def __len__(self):
        return len(self._protos)


def _model_spec(spec, name: str, signature_name, version: int) -> None:
    """MakeModelSpec(); GetModelMetadata reports no signature name (``None``)."""
    spec.name = name
    if signature_name is not None:
        spec.signature_name = signature_name or DEFAULT_SIGNATURE
    spec.version.value = version


def _classifications(result, classes, scores) -> None:
    """PostProcessClassificationResult()'s conversion; the core has made its checks."""
    some = classes if classes is not None else scores
    for i in range(some.shape[0]):
        row = result.classifications.add()
        for j in range(some.shape[1]):
            entry = row.classes.add()
            if classes is not None:  # a proto3 string: bytes that are not UTF-8 cannot be sent from Python
                entry.label = classes[i, j].decode("utf-8", "replace")
            if scores is not None:
                entry.score = float(scores[i, j])


class Services:
    """The RPC bodies: request proto (and its bytes) in, response proto out, ServingError on failure."""

    def __init__(self, registry, reload_config=None, max_request_tensor_bytes: int = MAX_REQUEST_TENSOR_BYTES):
        self.registry, self.reload_config = registry, reload_config
        self.max_request_tensor_bytes = max_request_tensor_bytes

    def servable(self, spec) -> tuple:
        """ServerCore::GetServableHandle(): (version, LoadedModel) for a ModelSpec."""
        if not spec.name:
            raise _invalid("ModelSpec has no name specified.")
        which = spec.WhichOneof("version_choice")
        if which == "version":
            return self.registry.get(spec.name, version=spec.version.value)
        if which == "version_label":
            return self.registry.get(spec.name, label=spec.version_label)
        return self.registry.get(spec.name)

    def _handle(self, request) -> tuple:
        """The shared start of Predict/Classify/Regress/GetModelMetadata: "Missing ModelSpec", then the servable."""
        if not request.HasField("model_spec"):
            raise _invalid("Missing ModelSpec")
        return (request.model_spec, *self.servable(request.model_spec))

    def predict(self, request, _data):
        spec, version, model = self._handle(request)
        check_request_bytes(request.inputs, self.max_request_tensor_bytes)
        outputs = model.predict(spec.signature_name, _InputTensors(request.inputs, self.max_request_tensor_bytes),
                                list(request.output_filter))
        response = predict_pb2.PredictResponse()
        _model_spec(response.model_spec, spec.name, spec.signature_name, version)
        for alias, array in outputs.items():
            from_ndarray(array, into=response.outputs[alias])  # AsProtoField: ServerCore's default
        return response

    def classify(self, request, data):
        spec, version, model = self._handle(request)
        classes, scores = model.classify(spec.signature_name, serialized_examples(data))
        response = classification_pb2.ClassificationResponse()
        _model_spec(response.model_spec, spec.name, spec.signature_name, version)
        _classifications(response.result, classes, scores)
        return response

    def regress(self, request, data):
        spec, version, model = self._handle(request)
        values = model.regress(spec.signature_name, serialized_examples(data))
        response = regression_pb2.RegressionResponse()
        _model_spec(response.model_spec, spec.name, spec.signature_name, version)
        response.result.regressions.extend(regression_pb2.Regression(value=v) for v in values.tolist())
        return response

    def multi_inference(self, request, data):
        """The first task's ModelSpec picks the servable; every task is checked before anything runs."""
        version, model = self.servable(request.tasks[0].model_spec if request.tasks else model_pb2.ModelSpec())
        model_name, seen = "", set()
        for task in request.tasks:
            if not task.model_spec.name:
                raise _invalid("Found ModelSpec with an empty model name.")
            if model_name and task.model_spec.name != model_name:
                raise _invalid("All ModelSpecs in a MultiInferenceRequest must access the same model name.")
            model_name, name = task.model_spec.name, task.model_spec.signature_name or DEFAULT_SIGNATURE
            if name in seen:
                raise _invalid(f"Duplicate evaluation of signature: {name}")
            seen.add(name)
            meta = model.signatures.get(name)
            if meta is None:
                raise _invalid(f"Requested signature not found in model graph: {name}")
            if task.method_name not in (CLASSIFY_METHOD, REGRESS_METHOD):
                raise ServingError(f"Unsupported signature method_name: {task.method_name}", "UNIMPLEMENTED")
            # PreProcessClassification() / PreProcessRegression(), as the core worked them out at load
            plan = meta.classify_plan if task.method_name == CLASSIFY_METHOD else meta.regress_plan
            if plan.error is not None:
                raise ServingError(plan.error.message, plan.error.code)
        examples = serialized_examples(data)
        if not examples:
            raise _invalid("Input is empty.")
        response = inference_pb2.MultiInferenceResponse()
        for task in request.tasks:
            result, name = response.results.add(), task.model_spec.signature_name
            if task.method_name == CLASSIFY_METHOD:
                _classifications(result.classification_result, *model.classify(name, examples))
            else:
                result.regression_result.regressions.extend(
                    regression_pb2.Regression(value=v) for v in model.regress(name, examples).tolist())
            _model_spec(result.model_spec, task.model_spec.name, name, version)
        return response

    def metadata(self, request, _data):
        """The fields are validated before the servable is looked up."""
        if not request.HasField("model_spec"):
            raise _invalid("Missing ModelSpec")
        if not request.metadata_field:
            raise _invalid("GetModelMetadataRequest must specify at least one metadata_field")
        for field in request.metadata_field:
            if field != "signature_def":
                raise _invalid(f"Metadata field {field} is not supported")
        _, version, model = self._handle(request)
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        _model_spec(response.model_spec, request.model_spec.name, None, version)
        response.metadata["signature_def"].Pack(model.metadata())
        return response

    def model_status(self, request, _data):
        if not request.HasField("model_spec"):
            raise _invalid("Missing ModelSpec")
        spec = request.model_spec
        version = spec.version.value if spec.HasField("version") else None
        label = spec.version_label if spec.WhichOneof("version_choice") == "version_label" else None
        response = get_model_status_pb2.GetModelStatusResponse()
        for s in self.registry.status(spec.name, version, label):
            entry = response.model_version_status.add(
                version=s.version, state=get_model_status_pb2.ModelVersionStatus.State.Value(s.state))
            entry.status.error_code, entry.status.error_message = _CODES[s.error_code].number, s.error_message
        return response

    def reload(self, request, _data):
        """HandleReloadConfigRequest(): a failure is the RPC's status (the response body holding it is not
        sent with a non-OK status); success has an OK status. Requested metrics report an increase of 0:
        TF Serving's metric registry has no counterpart here."""
        config = request.config
        if config.WhichOneof("config") != "model_config_list":
            raise _invalid("ServerModelConfig type not supported by HandleReloadConfigRequest. "
                           "Only ModelConfigList is currently supported")
        try:
            if self.reload_config is not None:
                self.reload_config(config)
            else:  # labels are checked by registry.reload, against the versions loaded now
                self.registry.reload(specs_from_config(config, "", allow_unavailable_labels=True))
        except OptionsError as e:
            raise _invalid(str(e)) from None
        response = model_management_pb2.ReloadConfigResponse()
        response.status.SetInParent()
        response.metric.extend(model_management_pb2.Metric(name=n) for n in request.metric_names)
        return response


# service -> method -> (Services attribute, request class, metrics api name)
METHODS = {
    "PredictionService": {
        "Predict": ("predict", predict_pb2.PredictRequest, "Predict"),
        "Classify": ("classify", classification_pb2.ClassificationRequest, "Classify"),
        "Regress": ("regress", regression_pb2.RegressionRequest, "Regress"),
        "MultiInference": ("multi_inference", inference_pb2.MultiInferenceRequest, "MultiInference"),
        "GetModelMetadata": ("metadata", get_model_metadata_pb2.GetModelMetadataRequest, "GetModelMetadata")},
    "ModelService": {
        "GetModelStatus": ("model_status", get_model_status_pb2.GetModelStatusRequest, None),
        "HandleReloadConfigRequest": ("reload", model_management_pb2.ReloadConfigRequest, None)},
}
