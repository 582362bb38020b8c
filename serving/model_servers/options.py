"""tensorflow_model_server 2.16's command line and config files, as plain data.

Flag names, defaults and help follow model_servers/main.cc and server.h; the checks follow
server.cc (BuildAndStart) and server_core.cc (ValidateModelConfigList, GetPlatform,
UpdateModelVersionLabelMap), so a command line that TF Serving starts with starts here too.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import os
import re



class OptionsError(ValueError):
    """A flag or config file that the server cannot start with; the message says how to fix it."""


def schedulable_cpus() -> int:  # tensorflow::port::NumSchedulableCPUs honours the affinity mask
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def cgroup_cpu_limit(root: str = "/sys/fs/cgroup"):
    """The container's CPU quota in whole CPUs, rounded up (cgroup v2 cpu.max, else v1 cfs_quota_us), or
    None when there is none: the affinity mask of a container limited to 2 CPUs can still list 64."""
    try:
        with open(os.path.join(root, "cpu.max")) as f:
            quota, period = f.read().split()[:2]
        return None if quota == "max" else max(1, math.ceil(int(quota) / int(period)))
    except (OSError, ValueError):
        pass
    try:
        with open(os.path.join(root, "cpu", "cpu.cfs_quota_us")) as f:
            quota = int(f.read())
        with open(os.path.join(root, "cpu", "cpu.cfs_period_us")) as f:
            period = int(f.read())
        return max(1, math.ceil(quota / period)) if quota > 0 and period > 0 else None
    except (OSError, ValueError):
        return None


def serving_processes(options: "ServerOptions") -> int:
    """--num_serving_processes, with 0 read as one per schedulable CPU (within the container's CPU quota, as
    each process holds its own TensorFlow and models); 1 when no TCP port is served (a UNIX socket has a
    single listener, so further processes would have nothing to accept on)."""
    if not options.port and not options.rest_api_enabled:
        return 1
    return options.num_serving_processes or min(schedulable_cpus(), cgroup_cpu_limit() or schedulable_cpus())


# (name, type, default, help, None | ("ignored" | "unsupported", why)); order and text from main.cc.
# "ignored": any value is accepted and only warned about; "unsupported": a non-default value is an error.
def _flag_table():
    c = schedulable_cpus()
    ign, uns = "ignored", "unsupported"
    return [
        ("port", "int32", 8500, "TCP port to listen on for gRPC/HTTP API. Disabled if port set to zero.", None),
        ("grpc_socket_path", "string", "", "If non-empty, listen to a UNIX socket for gRPC API on the given path. "
         "Can be either relative or absolute path.", None),
        ("rest_api_port", "int32", 0, "Port to listen on for HTTP/REST API. If set to zero HTTP/REST API will not be "
         "exported. This port must be different than the one specified in --port.", None),
        ("rest_api_num_threads", "int32", 4 * c, "Number of threads for HTTP/REST API processing. If not set, will "
         "be auto set based on number of CPUs.", None),
        ("rest_api_timeout_in_ms", "int32", 30000, "Timeout for HTTP/REST API calls.", None),
        ("rest_api_enable_cors_support", "bool", False, "Enable CORS headers in response", None),
        # not TF Serving flags: the REST transport's limits (serving/rest_api/event_loop.py Limits)
        ("rest_api_max_body_bytes", "int64", 100 << 20, "(This server's own flag.) Largest HTTP/REST request "
         "body, in bytes, as sent and once gunzipped; a larger one is answered 413 (a Content-Length over it before "
         "the body is read). The default is TF Serving's limit on gunzipped bodies, 100 MiB.", None),
        ("rest_api_header_timeout_in_ms", "int32", 10000, "(This server's own flag.) Time a HTTP/REST client has "
         "to send a request's headers, from their first byte; then the connection is closed. 0: no limit.", None),
        ("rest_api_idle_timeout_in_ms", "int32", 75000, "(This server's own flag.) An idle keep-alive HTTP/REST "
         "connection, or one whose request body or answer makes no progress, is closed after this (longer than "
         "the 60 s idle timeout of common load balancers). 0: no limit.", None),
        ("rest_api_max_connections", "int32", 4096, "(This server's own flag.) Most HTTP/REST connections open at "
         "once; further clients wait in the listen backlog until one closes. 0: no limit.", None),
        ("enable_batching", "bool", False, "enable batching", None),
        ("allow_version_labels_for_unavailable_models", "bool", False, "If true, allows assigning unused version "
         "labels to models that are not available yet.", None),
        ("batching_parameters_file", "string", "", "If non-empty, read an ascii BatchingParameters protobuf from the "
         "supplied file name and use the contained values instead of the defaults.", None),
        ("enable_per_model_batching_parameters", "bool", False, "Enables model specific batching params like batch "
         "sizes, timeouts, batching feature flags to be read from `batching_params.pbtxt` file present in "
         "SavedModel dir of the model. Associated params in the global config from --batching_parameters_file are "
         "*ignored*. Only threadpool (name and size) related params are used from the global config, as this "
         "threadpool is shared across all the models that want to batch requests. This option is only applicable "
         "when --enable_batching flag is set.", None),
        ("model_config_file", "string", "", "If non-empty, read an ascii ModelServerConfig protobuf from the "
         "supplied file name, and serve the models in that file. This config file can be used to specify multiple "
         "models to serve and other advanced parameters including non-default version policy. (If used, "
         "--model_name, --model_base_path are ignored.)", None),
        ("model_config_file_poll_wait_seconds", "int32", 0, "Interval in seconds between each poll of the filesystem "
         "for model_config_file. If unset or set to zero, poll will be done exactly once and not periodically. "
         "Setting this to negative is reserved for testing purposes only.", None),
        ("model_name", "string", "default", "name of model (ignored if --model_config_file flag is set)", None),
        ("model_base_path", "string", "", "path to export (ignored if --model_config_file flag is set, otherwise "
         "required)", None),
        ("num_load_threads", "int32", 0, "The number of threads in the thread-pool used to load servables. If set "
         "as 0, we don't use a thread-pool, and servable loads are performed serially in the manager's main work "
         "loop, may cause the Serving request to be delayed. Default: 0", None),
        ("num_unload_threads", "int32", 0, "The number of threads in the thread-pool used to unload servables. If "
         "set as 0, we don't use a thread-pool, and servable loads are performed serially in the manager's main "
         "work loop, may cause the Serving request to be delayed. Default: 0", None),
        ("max_num_load_retries", "int32", 5, "maximum number of times it retries loading a model after the first "
         "failure, before giving up. If set to 0, a load is attempted only once. Default: 5", None),
        ("load_retry_interval_micros", "int64", 60_000_000, "The interval, in microseconds, between each servable "
         "load retry. If set negative, it doesn't wait. Default: 1 minute", None),
        ("file_system_poll_wait_seconds", "int32", 1, "Interval in seconds between each poll of the filesystem for "
         "new model version. If set to zero poll will be exactly done once and not periodically. Setting this to "
         "negative value will disable polling entirely causing ModelServer to indefinitely wait for a new model at "
         "startup. Negative values are reserved for testing purposes only.", None),
        ("flush_filesystem_caches", "bool", True, "If true (the default), filesystem caches will be flushed after "
         "the initial load of all servables, and after each subsequent individual servable reload (if the number "
         "of load threads is 1). This reduces memory consumption of the model server, at the potential cost of "
         "cache misses if model files are accessed after servables are loaded.",
         (ign, "TensorFlow's file-system block caches are not used by this server")),
        ("tensorflow_session_parallelism", "int64", 0, "Number of threads to use for running a Tensorflow session. "
         "Auto-configured by default. Note that this option is ignored if --platform_config_file is non-empty.",
         None),
        ("tensorflow_session_config_file", "string", "", "If non-empty, read an ascii TensorFlow Session "
         "ConfigProto protobuf from the supplied file name. Note, parts of the session config (threads, "
         "parallelism etc.) can be overridden if needed, via corresponding command line flags.", None),
        ("tensorflow_intra_op_parallelism", "int64", 0, "Number of threads to use to parallelize the execution of an "
         "individual op. Auto-configured by default. Note that this option is ignored if --platform_config_file "
         "is non-empty.", None),
        ("tensorflow_inter_op_parallelism", "int64", 0, "Controls the number of operators that can be executed "
         "simultaneously. Auto-configured by default. Note that this option is ignored if --platform_config_file "
         "is non-empty.", None),
        ("use_alts_credentials", "bool", False, "Use Google ALTS credentials",
         (uns, "ALTS needs Google Cloud's handshaker service; serving without it would silently drop the security "
          "you asked for")),
        ("ssl_config_file", "string", "", "If non-empty, read an ascii SSLConfig protobuf from the supplied file "
         "name and set up a secure gRPC channel",
         (uns, "SSLConfig is not shipped in tensorflow-serving-api; terminate TLS in front of the server instead of "
          "serving in the clear")),
        ("platform_config_file", "string", "", "If non-empty, read an ascii PlatformConfigMap protobuf from the "
         "supplied file name, and use that platform config instead of the Tensorflow platform. (If used, "
         "--enable_batching is ignored.)", (uns, "only the 'tensorflow' platform (SavedModels) is served")),
        ("per_process_gpu_memory_fraction", "float", 0.0, "Fraction that each process occupies of the GPU memory "
         "space the value is between 0.0 and 1.0 (with 0.0 as the default) If 1.0, the server will allocate all "
         "the memory when the server starts, If 0.0, Tensorflow will automatically select a value.", None),
        ("saved_model_tags", "string", "serve", "Comma-separated set of tags corresponding to the meta graph def to "
         "load from SavedModel.", None),
        ("grpc_channel_arguments", "string", "", "A comma separated list of arguments to be passed to the grpc "
         "server. (e.g. grpc.max_connection_age_ms=2000)", None),
        ("grpc_max_threads", "int32", 4 * c, "Max grpc server threads to handle grpc messages.", None),
        ("enable_model_warmup", "bool", True, "Enables model warmup, which triggers lazy initializations (such as "
         "TF optimizations) at load time, to reduce first request latency.", None),
        ("num_request_iterations_for_warmup", "int32", 0, "Number of times a request is iterated during warmup "
         "replay. This value is used only if > 0.", None),
        ("version", "bool", False, "Display version", None),
        ("monitoring_config_file", "string", "", "If non-empty, read an ascii MonitoringConfig protobuf from the "
         "supplied file name", None),
        ("remove_unused_fields_from_bundle_metagraph", "bool", True, "Removes unused fields from MetaGraphDef proto "
         "message to save memory.", (ign, "a memory optimisation of the C++ loader")),
        ("prefer_tflite_model", "bool", False, "EXPERIMENTAL; CAN BE REMOVED ANYTIME! Prefer TensorFlow Lite model "
         "from `model.tflite` file in SavedModel directory, instead of the TensorFlow model from `saved_model.pb` "
         "file. If no TensorFlow Lite model found, fallback to TensorFlow model.", None),
        ("num_tflite_pools", "int32", c, "EXPERIMENTAL; CAN BE REMOVED ANYTIME! Number of TFLite interpreters in an "
         "interpreter pool of TfLiteSession. Typically there is one TfLiteSession for each TF Lite model that is "
         "loaded. If not set, will be auto set based on number of CPUs.", None),
        ("num_tflite_interpreters_per_pool", "int32", 1, "EXPERIMENTAL; CAN BE REMOVED ANYTIME! Number of TFLite "
         "interpreters in an interpreter pool of TfLiteSession. Typically there is one TfLiteSession for each TF "
         "Lite model that is loaded. If not set, will be 1.",
         (ign, "each request runs on one interpreter of the --num_tflite_pools pool as it comes; "
          "TfLiteSession's own batching is not done (--enable_batching batches TF Lite models too)")),
        ("enable_signature_method_name_check", "bool", False, "Enable method_name check for SignatureDef. Disable "
         "this if serving native TF2 regression/classification models.", None),
        ("xla_cpu_compilation_enabled", "bool", False, "EXPERIMENTAL; CAN BE REMOVED ANYTIME! Enable XLA:CPU JIT "
         "(default is disabled). With XLA:CPU JIT disabled, models utilizing this feature will return bad Status "
         "on first compilation request.", (ign, "XLA is left as the TensorFlow runtime configures it")),
        ("enable_profiler", "bool", True, "Enable profiler service. [Not provided by this server: the flag is "
         "accepted, but no TensorFlow ProfilerService is registered on the gRPC port (the Python packages carry "
         "no ProfilerService stubs), so profiler clients get no trace; a start-up log line says so.]", None),
        ("thread_pool_factory_config_file", "string", "", "If non-empty, read an ascii ThreadPoolConfig protobuf "
         "from the supplied file name.", (uns, "custom C++ thread pool factories cannot be loaded")),
        ("mixed_precision", "string", "", "specify mixed_precision mode",
         (uns, "the bfloat16 graph rewrite is not available")),
        ("skip_initialize_tpu", "bool", False, "Whether to skip auto initializing TPU.", (ign, "no TPU support")),
        ("enable_grpc_healthcheck_service", "bool", False, "Enable the standard gRPC healthcheck service.", None),
        # not a TF Serving flag: Python serves on one core per process (the GIL)
        ("num_serving_processes", "int32", 0, "(This server's own flag.) Number of serving processes that share "
         "the gRPC and REST ports (SO_REUSEPORT), so that requests use every CPU. The main process then only "
         "coordinates: it watches the model versions, loads each in every serving process before it is reported "
         "AVAILABLE, answers status and reload requests for all of them and sums their metrics. 0: one per "
         "schedulable CPU, within the container's CPU quota; 1: a single process that serves by itself.", None),
        # not a TF Serving flag: TensorFlow fills a TensorProto's missing values, so a few bytes can ask for GBs
        ("max_request_tensor_bytes", "int64", 1 << 30, "(This server's own flag.) The most bytes the input tensors "
         "of one Predict request may take once decoded (shape x dtype size), checked before anything is "
         "allocated; a request over it fails with RESOURCE_EXHAUSTED. The default, 1 GiB, is half the largest "
         "gRPC message (2 GiB): requests that carry their values stay well within it, while a shape of billions "
         "sent with one value (TensorFlow repeats the last) is refused; requests in flight take at most "
         "--grpc_max_threads times this. Raise it to accept larger requests.", None),
    ]


_INT_RANGE = {"int32": (-2**31, 2**31 - 1), "int64": (-2**63, 2**63 - 1)}


def _convert(name: str, kind: str, text: str):
    """Reads a value as tensorflow::Flags does (whole decimal numbers; true/false in any case)."""
    bad = OptionsError(f"Couldn't interpret value '{text}' for flag --{name} (expects {kind}).")
    if kind == "bool":
        if text.lower() not in ("true", "false"):
            raise OptionsError(f"Couldn't interpret value '{text}' for flag --{name}: "
                               f"write --{name}, --{name}=true or --{name}=false.")
        return text.lower() == "true"
    if kind in _INT_RANGE:
        if not re.fullmatch(r"\s*[+-]?\d+", text):
            raise bad
        lo, hi = _INT_RANGE[kind]
        if not lo <= int(text) <= hi:
            raise OptionsError(f"Value {text} for flag --{name} does not fit in an {kind}.")
        return int(text)
    if kind == "float":
        try:
            value = float(text)
        except ValueError:
            raise bad from None
        if not math.isfinite(value):
            raise bad
        return value
    return text


def _supported():
    return [row for row in _flag_table() if row[4] is None]


@dataclasses.dataclass(frozen=True)
class ServerOptions:
    """Every tensorflow_model_server flag this server honours, under its flag name, with TF Serving's default."""
    port: int = 8500
    grpc_socket_path: str = ""
    rest_api_port: int = 0
    rest_api_num_threads: int = dataclasses.field(default_factory=lambda: 4 * schedulable_cpus())
    rest_api_timeout_in_ms: int = 30000
    rest_api_enable_cors_support: bool = False
    rest_api_max_body_bytes: int = 100 << 20
    rest_api_header_timeout_in_ms: int = 10000
    rest_api_idle_timeout_in_ms: int = 75000
    rest_api_max_connections: int = 4096
    enable_batching: bool = False
    allow_version_labels_for_unavailable_models: bool = False
    batching_parameters_file: str = ""
    enable_per_model_batching_parameters: bool = False
    model_config_file: str = ""
    model_config_file_poll_wait_seconds: int = 0
    model_name: str = "default"
    model_base_path: str = ""
    num_load_threads: int = 0
    num_unload_threads: int = 0
    max_num_load_retries: int = 5
    load_retry_interval_micros: int = 60_000_000
    file_system_poll_wait_seconds: int = 1
    tensorflow_session_parallelism: int = 0
    tensorflow_session_config_file: str = ""
    tensorflow_intra_op_parallelism: int = 0
    tensorflow_inter_op_parallelism: int = 0
    per_process_gpu_memory_fraction: float = 0.0
    saved_model_tags: str = "serve"
    grpc_channel_arguments: str = ""
    grpc_max_threads: int = dataclasses.field(default_factory=lambda: 4 * schedulable_cpus())
    enable_model_warmup: bool = True
    num_request_iterations_for_warmup: int = 0
    version: bool = False
    monitoring_config_file: str = ""
    prefer_tflite_model: bool = False
    num_tflite_pools: int = dataclasses.field(default_factory=schedulable_cpus)
    enable_signature_method_name_check: bool = False
    enable_profiler: bool = True  # accepted; the profiler service is not provided (a start-up log line)
    enable_grpc_healthcheck_service: bool = False
    num_serving_processes: int = 0
    max_request_tensor_bytes: int = 1 << 30
    show_help: bool = False  # --help: tensorflow::Flags prints usage instead of starting
    warnings: tuple = ()  # things TF Serving would only LOG: ignored flags, an unusable --rest_api_port

    @property
    def rest_api_enabled(self) -> bool:
        """server.cc exports REST only on a non-zero port that differs from the gRPC one."""
        return self.rest_api_port != 0 and self.rest_api_port != self.port

    def channel_arguments(self) -> list:
        """--grpc_channel_arguments as (key, value) pairs; values that are int32s become ints, as in server.cc."""
        pairs = []
        for item in filter(None, self.grpc_channel_arguments.split(",")):
            key, _, value = item.partition("=")
            pairs.append((key, int(value) if re.fullmatch(r"[+-]?\d+", value) and
                          -2**31 <= int(value) < 2**31 else value))
        return pairs


def usage(prog: str = "tensorflow_model_server") -> str:
    """The --help text: every main.cc flag with its type and default."""
    parser = argparse.ArgumentParser(prog=prog, usage="%(prog)s [--flag=value ...]", add_help=False,
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                                     description="Serves SavedModels over TensorFlow Serving's gRPC and REST APIs. "
                                     "Flags are written --name=value; booleans also as --name.")
    for name, kind, default, text, status in _flag_table():
        note = f" [{status[0]} by this server: {status[1]}]" if status else ""
        shown = str(default).lower() if kind == "bool" else default if default != "" else '""'
        parser.add_argument(f"--{name}", metavar=f"<{kind}>", default=shown, help=(text + note).replace("%", "%%"))
    return parser.format_help()


def parse_args(argv) -> ServerOptions:
    """Parses flags the way tensorflow::Flags does (--name=value, bare --name for booleans; last one wins) and
    checks them as Server::BuildAndStart does. Unlike TF Serving, which only prints "unknown argument",
    anything unrecognised is an error, so a typo cannot start a misconfigured server.
    ``argv`` is the arguments after the program name (sys.argv[1:])."""
    table = {row[0]: row for row in _flag_table()}
    values = {name: row[2] for name, row in table.items()}
    given, show_help = set(), False
    for arg in argv:
        if arg in ("--help", "-h"):
            show_help = True
            continue
        name, eq, text = arg[2:].partition("=") if arg.startswith("--") else ("", "", "")
        if name not in table:
            raise OptionsError(f"Unknown argument '{arg}'. Flags are written --name=value; see --help for the list.")
        kind = table[name][1]
        if not eq and kind != "bool":
            raise OptionsError(f"Flag --{name} needs a value: write --{name}=VALUE ({kind}), with '=' and no space.")
        values[name] = _convert(name, kind, text) if eq else True
        given.add(name)
    warnings = []
    for name, (_, _, default, _, status) in table.items():
        if status and values[name] != default:
            if status[0] == "unsupported":
                raise OptionsError(f"--{name} is not supported by this server: {status[1]}. Remove the flag.")
            warnings.append(f"--{name} is accepted for compatibility and ignored: {status[1]}.")
    fields = {row[0]: values[row[0]] for row in _supported()}
    options = ServerOptions(**fields, show_help=show_help)
    if show_help or options.version:
        return options
    return dataclasses.replace(options, warnings=tuple(warnings + _validate(options, given)))


def _check_port(flag: str, port: int) -> None:
    if not 0 <= port <= 65535:
        raise OptionsError(f"--{flag}={port} is not a TCP port: use a value from 1 to 65535 (0 disables it).")


def _validate(o: ServerOptions, given: set) -> list:
    """server.cc's start-up checks, plus range checks on values that would only fail later; returns warnings."""
    _check_port("port", o.port)
    _check_port("rest_api_port", o.rest_api_port)
    if o.port == 0 and not o.grpc_socket_path:
        raise OptionsError("At least one of --port or --grpc_socket_path must be set: gRPC needs somewhere to listen.")
    if not o.model_config_file and not o.model_base_path:
        raise OptionsError("Both --model_base_path and --model_config_file are empty! Serve one model with "
                           "--model_base_path=/models/NAME (and --model_name=NAME), or several with "
                           "--model_config_file=/path/models.config.")
    if o.batching_parameters_file and not o.enable_batching:
        raise OptionsError("--batching_parameters_file is set without setting --enable_batching to true. "
                           "Add --enable_batching or drop the file.")
    if min(o.tensorflow_intra_op_parallelism, o.tensorflow_inter_op_parallelism, o.tensorflow_session_parallelism) > 0:
        raise OptionsError("Either configure --tensorflow_session_parallelism or (--tensorflow_intra_op_parallelism, "
                           "--tensorflow_inter_op_parallelism) separately. You cannot configure all.")
    for flag in ("rest_api_num_threads", "grpc_max_threads", "max_request_tensor_bytes", "rest_api_max_body_bytes"):
        if getattr(o, flag) < 1:
            raise OptionsError(f"--{flag}={getattr(o, flag)} must be at least 1.")
    for flag in ("num_load_threads", "num_unload_threads", "max_num_load_retries", "num_serving_processes"):
        if getattr(o, flag) < 0:
            raise OptionsError(f"--{flag}={getattr(o, flag)} must not be negative.")
    if not 0.0 <= o.per_process_gpu_memory_fraction <= 1.0:
        raise OptionsError("--per_process_gpu_memory_fraction must be between 0.0 and 1.0.")
    for item in filter(None, o.grpc_channel_arguments.split(",")):
        if "=" not in item or not item.partition("=")[0]:
            raise OptionsError(f"--grpc_channel_arguments entry '{item}' is not key=value "
                               "(e.g. grpc.max_connection_age_ms=2000).")
    warnings = []
    if o.model_config_file and given & {"model_name", "model_base_path"}:
        warnings.append("--model_name and --model_base_path are ignored because --model_config_file is set.")
    if o.rest_api_port != 0 and o.rest_api_port == o.port:
        warnings.append("--rest_api_port cannot be same as --port. Please use a different port for HTTP/REST API. "
                        "Skipped exporting HTTP/REST API.")
    return warnings
