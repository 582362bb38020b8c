"""``digits-model-server``: tensorflow_model_server 2.16's main(), over this package's parts.

    digits-model-server --port=8500 --rest_api_port=8501 --model_name=mnist \\
        --model_base_path=/abs/path/artifacts/serving/mnist
    digits-model-server --model_config_file=/etc/models.config --model_config_file_poll_wait_seconds=60
    python -m serving --help

The order of start-up follows model_servers/server.cc (Server::BuildAndStart): flags and config
files are checked first (a bad one exits non-zero before TensorFlow is imported), then every model
is loaded (ServerCore::Create waits until each has a version available, or one has failed), then the
gRPC server, then the HTTP/REST server. Log lines that tools grep for keep TF Serving's wording.
"""
from __future__ import annotations

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")  # the Keras the exported models were built with

import warnings  # noqa: E402

# google-api-core (imported by TensorFlow) warns about Python 3.10 on every start; it is not ours to act on.
warnings.filterwarnings("ignore", category=FutureWarning, module="google")

import dataclasses  # noqa: E402
import logging  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402
from typing import Optional, Sequence  # noqa: E402

from serving.errors import ServingError  # noqa: E402
from serving.model_servers.options import (OptionsError, ServerOptions, parse_args, serving_processes,  # noqa: E402
                                           usage)
from serving.model_servers import ports, server_config  # noqa: E402

log = logging.getLogger("digits.model_server")

SERVER_VERSION = "2.16.1-digits"  # the TF Serving release whose behaviour this server follows
# server.cc registers TensorFlow's ProfilerService on the gRPC port when --enable_profiler (default true)
# and logs "Profiler service is enabled"; the Python packages carry no ProfilerService stubs to serve.
PROFILER_NOT_PROVIDED = ("Profiler service is not provided by this server: --enable_profiler is accepted, but no "
                         "TensorFlow ProfilerService is registered on the gRPC port, so profiler clients "
                         "(tf.profiler.experimental.client.trace, TensorBoard's capture) get no trace from it.")


@dataclasses.dataclass(frozen=True)
class StartupConfig:
    """Everything read from files at start-up, so that a bad file fails before anything is loaded."""
    specs: list
    batching: object
    monitoring: object

    @classmethod
    def read(cls, options: ServerOptions) -> "StartupConfig":
        return cls(server_config.load_model_config(options),
                   server_config.load_batching_parameters(options.batching_parameters_file)
                   if options.enable_batching else None,
                   server_config.load_monitoring_config(options.monitoring_config_file))

    @property
    def metrics_path(self) -> Optional[str]:
        prometheus = self.monitoring.prometheus_config
        if not prometheus.enable:
            return None
        return prometheus.path or server_config.DEFAULT_PROMETHEUS_PATH


def _configure_tensorflow(options: ServerOptions) -> None:
    """--tensorflow_*_parallelism and --tensorflow_session_config_file, applied before any model loads
    (TensorFlow fixes its thread pools at the first op)."""
    import tensorflow as tf

    intra, inter = options.tensorflow_intra_op_parallelism, options.tensorflow_inter_op_parallelism
    if options.tensorflow_session_config_file:
        from tensorflow.core.protobuf import config_pb2
        session = server_config.read_text_proto(options.tensorflow_session_config_file, config_pb2.ConfigProto(),
                                                "tensorflow_session_config_file")
        intra = intra or session.intra_op_parallelism_threads
        inter = inter or session.inter_op_parallelism_threads
    if options.tensorflow_session_parallelism > 0:
        intra = inter = options.tensorflow_session_parallelism
    if intra > 0:
        tf.config.threading.set_intra_op_parallelism_threads(intra)
    if inter > 0:
        tf.config.threading.set_inter_op_parallelism_threads(inter)


class ModelServer:
    """The registry of models, polled in the background, behind the gRPC and REST fronts."""

    def __init__(self, options: ServerOptions, config: StartupConfig):
        from serving.servables import tflite_model
        from serving.servables.loaded_model import LoadedModel
        from serving.model_servers.metrics import ServingMetrics
        from serving.core.model_registry import ModelRegistry

        self.options, self.config = options, config
        self.metrics = ServingMetrics()
        tags = [t for t in options.saved_model_tags.split(",") if t]

        def loader(path: str):
            if options.prefer_tflite_model and tflite_model.tflite_model_found(path):  # else its SavedModel
                return tflite_model.load(path, options.num_tflite_pools, options.enable_signature_method_name_check)
            return LoadedModel.load(path, tags, method_name_check=options.enable_signature_method_name_check)
        unloader, self.batch_scheduler = None, None
        if config.batching is not None:
            loader, unloader = self._batching_loader(loader)
        if options.enable_model_warmup:  # after batching: TF Serving warms up the batching-wrapped session
            from serving.servables.warmup import warming_loader
            loader = warming_loader(loader, options.num_request_iterations_for_warmup, self.metrics, unloader)
        self.loader, self.unloader = loader, unloader  # what a serving process loads with (worker.py)
        self.registry = ModelRegistry(
            config.specs, self.metrics.instrument_loader(loader), unloader,
            poll_seconds=options.file_system_poll_wait_seconds,
            allow_version_labels_for_unavailable_models=options.allow_version_labels_for_unavailable_models,
            max_num_load_retries=options.max_num_load_retries,
            load_retry_interval_seconds=max(options.load_retry_interval_micros, 0) / 1e6)
        self.grpc = self.rest = None
        self._config_poller: Optional[threading.Thread] = None
        self._stopped = threading.Event()

    def _batching_loader(self, load):
        """--enable_batching: each loaded version is wrapped for batching (WrapSessionForBatching) over one
        scheduler whose threads every model shares (model_server_batch_threads); unloading a version closes
        its queues. Without --batching_parameters_file the defaults are serving.batching.batching_session.TUNED_DEFAULTS.
        With --enable_per_model_batching_parameters a version's own batching_params.pbtxt decides, and a
        version without one is not batched (GetPerModelBatchingParams); the threads stay the common ones."""
        from serving.batching.batching_session import TUNED_DEFAULTS, BatchingModel, BatchingOptions, BatchScheduler

        def options_from(params):
            return BatchingOptions.from_settings(server_config.effective_batching(params))

        per_model = self.options.enable_per_model_batching_parameters
        common = options_from(self.config.batching) if self.options.batching_parameters_file else TUNED_DEFAULTS
        if not self.options.batching_parameters_file:
            log.info("--enable_batching without --batching_parameters_file: batching with %s", common)
        self.batch_scheduler = BatchScheduler(common.num_batch_threads, common.thread_pool_name)

        def load_batching(path: str):
            model = load(path)
            options = common
            if per_model:
                params_file = os.path.join(path, "batching_params.pbtxt")
                if not os.path.isfile(params_file):
                    return model
                options = options_from(server_config.load_batching_parameters(params_file))
            log.info("Wrapping session to perform batch processing")
            return BatchingModel(model, options, self.batch_scheduler)

        def unload(servable) -> None:
            if isinstance(servable, BatchingModel):
                servable.close()
        return load_batching, unload

    def start(self) -> None:
        """Loads every model (as ServerCore::Create waits for them), then opens the ports."""
        o = self.options
        self.registry.start_and_wait(self._stopped)
        if self._stopped.is_set():
            return
        self.open_ports(self.registry)
        if o.port:
            log.info("Running gRPC ModelServer at 0.0.0.0:%d ...", self.grpc.port)
        if o.grpc_socket_path:
            log.info("Running gRPC ModelServer at UNIX socket %s ...", o.grpc_socket_path)
        if o.rest_api_enabled:
            log.info("Exporting HTTP/REST API at:localhost:%d ...", self.rest.port)
        if o.model_config_file and o.model_config_file_poll_wait_seconds > 0:
            self._config_poller = threading.Thread(target=self._poll_config_file, name="config-poller", daemon=True)
            self._config_poller.start()

    def open_ports(self, registry, *, metrics=None, socket_path: Optional[str] = None,
                   reuse_port: bool = False) -> None:
        """The gRPC and REST fronts over ``registry``. A serving process of --num_serving_processes
        (model_servers/worker.py) passes its own registry and metrics, shares the TCP ports (SO_REUSEPORT)
        and leaves the UNIX socket (socket_path="") to one process."""
        from serving.grpc_api.front import GrpcServer
        from serving.rest_api.transport import RestServer

        o, metrics = self.options, metrics or self.metrics
        socket_path = o.grpc_socket_path if socket_path is None else socket_path
        shared = [("grpc.so_reuseport", 1)] if reuse_port else []
        if o.port or socket_path:
            self.grpc = GrpcServer(registry, o.port, socket_path=socket_path, max_threads=o.grpc_max_threads,
                                   channel_arguments=o.channel_arguments() + shared, metrics=metrics,
                                   enable_health_check=o.enable_grpc_healthcheck_service,
                                   max_request_tensor_bytes=o.max_request_tensor_bytes)
            self.grpc.start()
        if o.rest_api_enabled:
            self.rest = RestServer(registry, o.rest_api_port, timeout_ms=o.rest_api_timeout_in_ms,
                                   enable_cors=o.rest_api_enable_cors_support, num_threads=o.rest_api_num_threads,
                                   metrics=metrics, metrics_path=self.config.metrics_path, reuse_port=reuse_port,
                                   max_body_bytes=o.rest_api_max_body_bytes,
                                   header_timeout_ms=o.rest_api_header_timeout_in_ms,
                                   idle_timeout_ms=o.rest_api_idle_timeout_in_ms,
                                   max_connections=o.rest_api_max_connections)
            self.rest.start()

    def _poll_config_file(self) -> None:
        """--model_config_file_poll_wait_seconds: re-reads the file and applies it as a config reload; a file
        that cannot be read or applied is logged and the models keep serving as they are."""
        last = self.config.specs
        while not self._stopped.wait(self.options.model_config_file_poll_wait_seconds):
            try:
                specs = server_config.load_model_config(self.options)
                if specs != last:
                    self.registry.reload(specs)
                    last = specs
                    log.info("Reloaded --model_config_file %s: %s", self.options.model_config_file,
                             ", ".join(s.name for s in specs) or "no models")
            except (OptionsError, ServingError) as e:
                log.error("Failed to reload --model_config_file, serving the previous config: %s", e)

    def request_stop(self) -> None:
        """Safe from a signal handler: wakes wait() (and a start() still waiting for models)."""
        self._stopped.set()

    def stop(self) -> None:
        self._stopped.set()
        if self.rest is not None:
            self.rest.stop()
        if self.grpc is not None:
            self.grpc.stop(grace=5.0)
        self.registry.stop()
        if self.batch_scheduler is not None:
            self.batch_scheduler.stop()

    def wait(self) -> None:
        while not self._stopped.wait(1.0):  # a timed wait keeps the main thread responsive to signals
            pass


def _serve(options: ServerOptions, config: StartupConfig) -> int:
    server = ModelServer(options, config)
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: server.request_stop())
    try:
        server.start()
    except ServingError as e:
        log.error("%s", e.status())
        server.stop()
        return 1
    except (OSError, RuntimeError) as e:  # a port in use (grpc raises RuntimeError) or an unbindable socket
        log.error("Failed to start the server: %s", e)
        server.stop()
        return 1
    server.wait()
    log.info("Shutting down: finishing requests in flight.")
    server.stop()
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s.%(msecs)03d: %(levelname).1s %(name)s] %(message)s",
                        datefmt="%Y-%m-%d %H:%M:%S")
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        options = parse_args(argv)
        if options.show_help:
            print(usage("digits-model-server"))
            return 0
        if options.version:
            print(f"TensorFlow ModelServer: {SERVER_VERSION}")
            return 0
        for warning in options.warnings:
            log.warning("%s", warning)
        config = StartupConfig.read(options)
        if options.enable_profiler:
            log.info("%s", PROFILER_NOT_PROVIDED)
        processes = serving_processes(options)
        ports.refuse_taken(options)  # before anything loads; the serving processes still share their ports
        if processes == 1:  # else each serving process configures its own TensorFlow
            _configure_tensorflow(options)
    except OptionsError as e:
        print(f"digits-model-server: {e}", file=sys.stderr)
        return 2
    except ports.PortInUse as e:
        log.error("Failed to start the server: %s", e)
        return 1
    if processes > 1:
        from serving.model_servers.coordinator import serve
        return serve(options, config, processes)
    return _serve(options, config)


if __name__ == "__main__":
    sys.exit(main())
