"""tensorflow_model_server 2.16's config files (--model_config_file, --batching_parameters_file,
--monitoring_config_file) as plain data, with server_core.cc's checks (ValidateModelConfigList,
GetPlatform, UpdateModelVersionLabelMap)."""
from __future__ import annotations

import dataclasses
import re

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, text_format, wrappers_pb2
from tensorflow_serving.config import model_server_config_pb2

from serving.model_servers.options import OptionsError, ServerOptions, schedulable_cpus

def _schema_classes():
    """BatchingParameters and MonitoringConfig: tensorflow-serving-api 2.16.1 ships neither
    session_bundle_config_pb2 nor monitoring_config_pb2, so the two messages are declared here with the
    field names and numbers of the 2.16 .proto files (text format only needs those), in a private pool."""
    try:
        from tensorflow_serving.config.monitoring_config_pb2 import MonitoringConfig
        from tensorflow_serving.servables.tensorflow.session_bundle_config_pb2 import BatchingParameters
        return BatchingParameters, MonitoringConfig
    except ImportError:
        pass
    wrapped = {"max_batch_size": (1, "Int64"), "batch_timeout_micros": (2, "Int64"),
               "max_enqueued_batches": (3, "Int64"), "num_batch_threads": (4, "Int64"),
               "thread_pool_name": (5, "String"),
               "enable_large_batch_splitting": (8, "Bool"), "max_execution_batch_size": (9, "Int64")}
    fields = "".join(f'field {{ name: "{n}" number: {k} label: LABEL_OPTIONAL type: TYPE_MESSAGE '
                     f'type_name: ".google.protobuf.{t}Value" }} ' for n, (k, t) in wrapped.items())
    schema = (
        'name: "digits/serving/options.proto" package: "tensorflow.serving" syntax: "proto3" '
        'dependency: "google/protobuf/wrappers.proto" '
        f'message_type {{ name: "BatchingParameters" {fields}'
        'field { name: "allowed_batch_sizes" number: 6 label: LABEL_REPEATED type: TYPE_INT64 } '
        'field { name: "pad_variable_length_inputs" number: 7 label: LABEL_OPTIONAL type: TYPE_BOOL } } '
        'message_type { name: "PrometheusConfig" '
        'field { name: "enable" number: 1 label: LABEL_OPTIONAL type: TYPE_BOOL } '
        'field { name: "path" number: 2 label: LABEL_OPTIONAL type: TYPE_STRING } } '
        'message_type { name: "MonitoringConfig" field { name: "prometheus_config" number: 1 label: LABEL_OPTIONAL '
        'type: TYPE_MESSAGE type_name: ".tensorflow.serving.PrometheusConfig" } }')
    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(wrappers_pb2.DESCRIPTOR.serialized_pb)
    pool.Add(text_format.Parse(schema, descriptor_pb2.FileDescriptorProto()))
    get = getattr(message_factory, "GetMessageClass", None) or message_factory.MessageFactory(pool).GetPrototype
    return tuple(get(pool.FindMessageTypeByName(f"tensorflow.serving.{n}"))
                 for n in ("BatchingParameters", "MonitoringConfig"))


BatchingParameters, MonitoringConfig = _schema_classes()
DEFAULT_PROMETHEUS_PATH = "/monitoring/prometheus/metrics"  # PrometheusExporter::kPrometheusPath


def read_text_proto(path: str, message, flag: str):
    """ParseProtoTextFile (util/proto_util.h), with the path and the parser's line:column in the error."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise OptionsError(f"Cannot read --{flag} '{path}': {e.strerror or e}. "
                           "Check that the file exists and is readable.") from None
    try:
        text_format.Parse(data.decode("utf-8"), message)
    except (text_format.ParseError, UnicodeDecodeError) as e:
        raise OptionsError(f"Invalid protobuf file: '{path}' (--{flag} must hold a text-format "
                           f"{message.DESCRIPTOR.name}): {parser_error_text(message, e)}") from None
    return message


def parser_error_text(message, error: Exception) -> str:
    """What protobuf's C++ TextFormat parser logs for a failed parse (and TF Serving's own tests look for in
    its stderr): "Error parsing text-format tensorflow.serving.ModelServerConfig: 1:1: <what is wrong>"."""
    if isinstance(error, text_format.ParseError):
        what = re.sub(r"^\d+(:\d+)? : ", "", str(error))
        where = f"{error.GetLine()}:{error.GetColumn()}: " if error.GetLine() is not None else ""
    else:  # the bytes are not UTF-8
        what, where = f"invalid UTF-8 at byte {getattr(error, 'start', 0)}", ""
    return f"Error parsing text-format {message.DESCRIPTOR.full_name}: {where}{what}"


_read_text_proto = read_text_proto


@dataclasses.dataclass(frozen=True)
class VersionPolicy:
    """Which numbered subdirectories of a base path are served (ServableVersionPolicy)."""
    kind: str = "latest"  # "latest", "all" or "specific"
    num_versions: int | None = 1  # "latest" only; 0 counts as 1, as in AspireLatestVersions
    versions: tuple = ()  # "specific" only, in the order given


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """One servable model: a ModelConfig with the defaults TF Serving fills in already applied."""
    name: str
    base_path: str
    model_platform: str = "tensorflow"
    version_policy: VersionPolicy = VersionPolicy()
    version_labels: dict = dataclasses.field(default_factory=dict)


def is_relative_uri(uri: str) -> bool:
    """UriIsRelativePath: no scheme:// and no leading '/'; an empty path counts as relative."""
    return not re.match(r"[a-zA-Z][0-9a-zA-Z.]*://", uri) and not uri.startswith("/")


def _error(where: str, message: str, hint: str = "") -> OptionsError:
    """At start-up (``where`` names the file or flags) the text says where and how to fix it; for a
    HandleReloadConfigRequest (``where`` empty) it is TF Serving's own text, as gRPC clients see it."""
    return OptionsError(f"{where}: {message}{hint}" if where else message)


def _platform(config, where: str) -> str:
    """GetPlatform: model_platform, or the deprecated model_type, never both; only 'tensorflow' is served
    (CreateStoragePathRoutes)."""
    if config.model_type != model_server_config_pb2.MODEL_TYPE_UNSPECIFIED:
        if config.model_platform:
            raise _error(where, "Illegal setting both ModelServerConfig::model_type (deprecated) and "
                         f"ModelServerConfig::model_platform, model name is {config.name}", ". Keep model_platform.")
        if config.model_type != model_server_config_pb2.TENSORFLOW:
            raise _error(where, f"ModelServerConfig::model_type choice {config.model_type} not supported.")
        return "tensorflow"
    if not config.model_platform:
        raise _error(where, "Illegal setting neither ModelServerConfig::model_type (deprecated) nor "
                     f"ModelServerConfig::model_platform, model name is {config.name}",
                     ". Add model_platform: 'tensorflow'.")
    if config.model_platform != "tensorflow":
        raise _error(where, f"Model {config.name} requests unsupported platform {config.model_platform}",
                     "; only 'tensorflow' is served.")
    return config.model_platform


def _policy(config) -> VersionPolicy:
    which = config.model_version_policy.WhichOneof("policy_choice")
    if which == "all":
        return VersionPolicy("all", None)
    if which == "specific":
        return VersionPolicy("specific", None, tuple(config.model_version_policy.specific.versions))
    return VersionPolicy("latest", max(config.model_version_policy.latest.num_versions, 1))


def check_version_labels(spec: ModelSpec, available_versions=(), current_labels=None,
                         allow_unavailable: bool = False) -> None:
    """UpdateModelVersionLabelMap, run on every (re)load: a label must name a version that is available,
    unless --allow_version_labels_for_unavailable_models is set and the label is new or keeps its version."""
    current = current_labels or {}
    for label, version in sorted(spec.version_labels.items()):
        moves = label in current and current[label] != version
        if version not in available_versions and not (allow_unavailable and not moves):
            hint = ("set --allow_version_labels_for_unavailable_models to label versions before they load"
                    if not allow_unavailable else "move a label only onto a version that is already loaded")
            raise OptionsError(f"Request to assign label to version {version} of model {spec.name}, which is not "
                               f"currently available for inference (label '{label}'): {hint}.")


def specs_from_config(config, where: str, allow_unavailable_labels: bool) -> list:
    """The ModelSpecs of a ModelServerConfig, checked in ServerCore::ReloadConfig's order: unique names and
    absolute base paths for the whole list (ValidateModelConfigList), labels (UpdateModelVersionLabelMap,
    against no loaded versions, as at start-up), platforms (CreateStoragePathRoutes). ``where`` is the file
    or flags at start-up, "" for HandleReloadConfigRequest (TF Serving's bare messages). An empty config
    serves nothing ("Taking no action for empty config"). Raises OptionsError."""
    which = config.WhichOneof("config")
    if which == "custom_model_config":
        raise _error(where, "ModelServer does not yet support custom model config", "; use model_config_list.")
    configs = list(config.model_config_list.config)
    seen = set()
    for c in configs:
        if not c.name:  # TF Serving would serve it, under a name no request can give
            raise _error(where, "a model has an empty name; give every model a name (its URL segment).")
        if c.name in seen:
            raise _error(where, f"Illegal to list model {c.name} multiple times in config list",
                         ". Give each model a distinct name.")
        seen.add(c.name)
    for c in configs:
        if is_relative_uri(c.base_path):
            if where:
                raise _error(where, f"Expected model {c.name} to have an absolute path or URI; got base_path()="
                             f"{c.base_path!r}. Use an absolute path such as /models/{c.name}.")
            raise _error(where, f"Expected model {c.name} to have an absolute path or URI; got "
                         f"base_path()={c.base_path}")
    specs = [ModelSpec(c.name, c.base_path, "tensorflow", _policy(c), dict(c.version_labels)) for c in configs]
    for spec in specs:
        check_version_labels(spec, allow_unavailable=allow_unavailable_labels)
    return [dataclasses.replace(spec, model_platform=_platform(c, where)) for spec, c in zip(specs, configs)]


def load_model_config(options: ServerOptions) -> list:
    """The models to serve at start-up, from --model_config_file or else --model_name/--model_base_path
    (BuildSingleModelConfig: platform 'tensorflow', latest 1), checked by specs_from_config."""
    config = model_server_config_pb2.ModelServerConfig()
    if options.model_config_file:
        where = f"--model_config_file '{options.model_config_file}'"
        read_text_proto(options.model_config_file, config, "model_config_file")
    else:
        where = "--model_name/--model_base_path"
        config.model_config_list.config.add(name=options.model_name, base_path=options.model_base_path,
                                            model_platform="tensorflow")
    return specs_from_config(config, where, options.allow_version_labels_for_unavailable_models)


def load_batching_parameters(path: str = ""):
    """--batching_parameters_file as a BatchingParameters proto. Without a file, server.cc sets only
    thread_pool_name='model_server_batch_threads'; every unset field keeps the scheduler default shown by
    effective_batching(). The checks are the ones TF Serving makes when a model is wrapped for batching."""
    params = BatchingParameters()
    if not path:
        params.thread_pool_name.value = "model_server_batch_threads"
        return params
    read_text_proto(path, params, "batching_parameters_file")
    where = f"--batching_parameters_file '{path}'"
    if params.HasField("num_batch_threads") and params.num_batch_threads.value < 1:
        raise OptionsError(f"{where}: num_batch_threads must be positive; was {params.num_batch_threads.value}.")
    if params.HasField("max_batch_size") and params.max_batch_size.value < 1:
        raise OptionsError(f"{where}: max_batch_size must be positive; was {params.max_batch_size.value}.")
    max_size = params.max_batch_size.value if params.HasField("max_batch_size") else 1000
    if params.allowed_batch_sizes and params.allowed_batch_sizes[-1] != max_size:
        raise OptionsError(f"{where}: Last entry in allowed_batch_sizes must match max_batch_size; last entry was "
                           f"{params.allowed_batch_sizes[-1]}; expected {max_size}.")
    return params


def effective_batching(params) -> dict:
    """What the batch scheduler runs with: set fields, else SharedBatchScheduler's defaults (1000 per batch,
    no timeout, 10 queued batches, one thread per CPU, pool 'batch_threads')."""
    def get(field, default):
        return getattr(params, field).value if params.HasField(field) else default
    max_batch_size = get("max_batch_size", 1000)
    return {"max_batch_size": max_batch_size, "batch_timeout_micros": get("batch_timeout_micros", 0),
            "max_enqueued_batches": get("max_enqueued_batches", 10),
            "num_batch_threads": get("num_batch_threads", schedulable_cpus()),
            "thread_pool_name": get("thread_pool_name", "batch_threads"),
            "enable_large_batch_splitting": get("enable_large_batch_splitting", False),
            "max_execution_batch_size": get("max_execution_batch_size", max_batch_size),
            "allowed_batch_sizes": tuple(params.allowed_batch_sizes),
            "pad_variable_length_inputs": params.pad_variable_length_inputs}


def load_monitoring_config(path: str = ""):
    """--monitoring_config_file as a MonitoringConfig proto; without one, Prometheus export is off. An enabled
    config with no path is served at DEFAULT_PROMETHEUS_PATH (http_server.cc)."""
    config = MonitoringConfig()
    if path:
        read_text_proto(path, config, "monitoring_config_file")
    return config
