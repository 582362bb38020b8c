"""--num_serving_processes > 1: this process coordinates serving processes (model_servers/worker.py)
that share the ports, so that Python work runs on every core instead of one (the GIL).

One truth: this process alone runs the ModelRegistry and its VersionManagers (file-system polling,
version policy, load retries, labels, --model_config_file polling, HandleReloadConfigRequest), with a
loader that loads a version in *every* serving process and then commits it there (it becomes
routable), and an unloader that retires it everywhere before unloading it. So a version is AVAILABLE
in the status API only once every process serves it, and no process routes to a version it lacks.
The serving processes ask this one for the model status, reloads and the Prometheus page (request
metrics are summed over processes). This process does not import TensorFlow.

A serving process that dies is replaced: the new one loads every committed version before it opens
the ports. More than MAX_RESTARTS deaths within RESTART_WINDOW seconds stop the server (exit 1).
"""
from __future__ import annotations

import collections
import functools
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from typing import Optional

from serving.core.version_source import parse_version
from serving.errors import ServingError
from serving.model_servers.coordinated_registry import CoordinatedRegistry, Loaded
from serving.model_servers.ipc import THREAD, ChannelClosed
from serving.model_servers.metrics import ServingMetrics
from serving.model_servers import ports
from serving.model_servers.options import OptionsError
from serving.model_servers.serving_process import ServingProcess

log = logging.getLogger("digits.model_server")

MAX_RESTARTS, RESTART_WINDOW = 3, 60.0
STOP_SECONDS = 30.0  # a serving process drains in ~10 s (REST and gRPC grace); then it is killed


class Coordinator:
    """Starts, feeds, watches and stops ``count`` serving processes."""

    def __init__(self, options, config, count: int):
        self.options, self.config, self.count = options, config, count
        self.metrics = ServingMetrics()  # load metrics here; request metrics in the serving processes
        self.registry = CoordinatedRegistry(
            self, config.specs, poll_seconds=options.file_system_poll_wait_seconds,
            allow_version_labels_for_unavailable_models=options.allow_version_labels_for_unavailable_models,
            max_num_load_retries=options.max_num_load_retries,
            load_retry_interval_seconds=max(options.load_retry_interval_micros, 0) / 1e6)
        self._extras = {"batching": config.batching.SerializeToString() if config.batching is not None else None,
                        "monitoring": config.monitoring.SerializeToString()}
        self._lock = threading.RLock()  # commands to the processes and the state replayed to a new one
        self._serving: list = []  # processes that hold every committed version (and listen once started)
        self._all: list = []  # every process started, for stop()
        self._held: dict = {}  # (model, version) -> path, loaded in every serving process
        self._committed: set = set()
        self._labels: dict = {}
        self._departed = ServingMetrics()  # the last counts of processes that died
        self._deaths: collections.deque = collections.deque()
        self._listening = False
        self._stopped = threading.Event()
        self._config_poller: Optional[threading.Thread] = None
        self.failure: Optional[str] = None

    # ------------------------------------------------------------------------------------ processes

    def _spawn(self, index: int) -> ServingProcess:
        process = ServingProcess.spawn(index)
        with self._lock:
            self._all.append(process)
        return process

    def _handshake(self, process: ServingProcess) -> None:
        """What a serving process may ask: the status, a reload, the Prometheus page."""
        handlers = {"status": (self.registry.status, THREAD), "reload": (self.registry.reload, THREAD),
                    "metrics_page": (self.metrics_page, THREAD)}
        process.handshake(self.options, self._extras, handlers, functools.partial(self._lost, process))

    def _admit(self, process: ServingProcess) -> None:
        """A replacement: loads and commits what the others serve, then opens its ports, then serves."""
        with self._lock:
            if self._stopped.is_set():
                raise RuntimeError("the server is stopping")
            for (model, version), path in sorted(self._held.items()):
                process.channel.call("load", model, version, path)
            for model, version in sorted(self._committed):
                process.channel.call("commit", model, version)
            process.channel.call("set_labels", self._labels)
            if self._listening:
                process.channel.call("listen")
            self._serving.append(process)
        log.info("%s replaces the one that exited, serving %d version(s).", process, len(self._committed))

    def _lost(self, process: ServingProcess) -> None:
        """The process's pipe closed: it died (or is stopping). A serving one is replaced."""
        with self._lock:
            serving = process in self._serving
            if serving:
                self._serving.remove(process)
            if process.last_snapshot is not None:
                self._departed.merge(process.last_snapshot)
        if self._stopped.is_set() or not serving:
            return
        try:
            code = process.popen.wait(10)
        except subprocess.TimeoutExpired:
            process.popen.kill()
            code = process.popen.wait()
        now = time.monotonic()
        with self._lock:
            self._deaths.append(now)
            while now - self._deaths[0] > RESTART_WINDOW:
                self._deaths.popleft()
            deaths = len(self._deaths)
        if deaths > MAX_RESTARTS:
            return self._fail(f"{process} exited with code {code}: serving processes exited {deaths} times within "
                              f"{RESTART_WINDOW:.0f} s; stopping the server (see the log above for why they exit)")
        log.error("%s exited with code %s; starting a replacement.", process, code)
        threading.Thread(target=self._replace, args=(process.index,), name="replace-serving-process",
                         daemon=True).start()

    def _replace(self, index: int) -> None:
        try:
            process = self._spawn(index)
            self._handshake(process)
            self._admit(process)
        except Exception as e:  # noqa: BLE001 - without its replacement the server is not whole
            if not self._stopped.is_set():
                self._fail(f"could not replace serving process {index}: {e}")

    def _fail(self, message: str) -> None:
        log.error("%s", message)
        self.failure = message
        self._stopped.set()

    # ----------------------------------------------------------------------------- the one registry

    @staticmethod
    def _broadcast(processes: list, method: str, *args) -> tuple:
        """Calls every process at once; ([(process, result)], [errors]). A process that dies meanwhile is
        left out: its replacement starts from the state recorded here."""
        calls = [(p, p.channel.call_async(method, *args)) for p in processes]
        done, errors = [], []
        for process, future in calls:
            try:
                done.append((process, future.result()))
            except ChannelClosed:
                continue
            except Exception as e:  # noqa: BLE001 - the caller decides
                errors.append(e)
        return done, errors

    def load(self, model: str, path: str) -> Loaded:
        """The loader: every process loads, then every process commits. If one fails, the others unload it
        and its error is the version's (the same error a single process gives)."""
        version = parse_version(os.path.basename(os.path.normpath(path)))
        self.push_labels()
        with self._lock:
            done, errors = self._broadcast(list(self._serving), "load", model, version, path)
            if errors:
                self._broadcast([p for p, _ in done], "unload", model, version)
                raise errors[0]
            if not done:
                raise ServingError(f"No serving process is running to load {path} into", "UNAVAILABLE")
            self._held[(model, version)] = path
            self._committed.add((model, version))
            for error in self._broadcast(list(self._serving), "commit", model, version)[1]:
                log.error("Committing version %d of model %s failed: %s", version, model, error)
        return Loaded(model, version, path)

    def unload(self, loaded: Loaded) -> None:
        """The unloader: every process stops routing to the version, then every process unloads it."""
        key = (loaded.model, loaded.version)
        with self._lock:
            self._committed.discard(key)
            errors = self._broadcast(list(self._serving), "retire", *key)[1]
            self._held.pop(key, None)
            errors += self._broadcast(list(self._serving), "unload", *key)[1]
        for error in errors:
            log.error("Unloading version %d of model %s failed: %s", loaded.version, loaded.model, error)

    def push_labels(self) -> None:
        """Sends every model's label map if it changed, read under the lock so that the last one sent is the
        newest. Called after every reload, and before every load (a reload sets labels, then loads new models)."""
        with self._lock:
            labels = {}
            for name in self.registry.model_names():
                manager = self.registry.manager(name)
                if manager is not None:
                    labels[name] = manager.labels
            if labels == self._labels:
                return
            self._labels = labels
            self._broadcast(list(self._serving), "set_labels", labels)

    def metrics_page(self) -> tuple:
        """The Prometheus page of the whole server: load metrics from here, request metrics summed."""
        merged = ServingMetrics()
        merged.merge(self.metrics.snapshot())
        merged.merge(self._departed.snapshot())
        for process, snapshot in self._broadcast(list(self._serving), "snapshot")[0]:
            process.last_snapshot = snapshot
            merged.merge(snapshot)
        return merged.render()

    # ------------------------------------------------------------------------------------ lifecycle

    def _check_ports(self) -> None:
        """Fails early (before any load) when another program listens on a TCP port; the serving
        processes bind with SO_REUSEPORT, which would otherwise share a port with a stranger."""
        ports.refuse_taken(self.options)

    def start(self) -> None:
        """Starts the processes, loads every model in all of them (as ServerCore::Create waits), then
        opens the ports in all of them and only then logs TF Serving's start-up lines."""
        self._check_ports()
        processes = [self._spawn(i) for i in range(self.count)]
        for process in processes:
            self._handshake(process)
        with self._lock:
            self._serving.extend(processes)
        log.info("Serving with %d processes (pids %s).", self.count, ", ".join(str(p.popen.pid) for p in processes))
        self.push_labels()
        self.registry.start_and_wait(self._stopped)
        if self._stopped.is_set():
            return
        with self._lock:
            done, errors = self._broadcast(list(self._serving), "listen")
            if errors or not done:
                raise errors[0] if errors else RuntimeError("every serving process exited while opening its ports")
            self._listening = True
        o = self.options
        if o.port:
            log.info("Running gRPC ModelServer at 0.0.0.0:%d ...", o.port)
        if o.grpc_socket_path:
            log.info("Running gRPC ModelServer at UNIX socket %s ...", o.grpc_socket_path)
        if o.rest_api_enabled:
            log.info("Exporting HTTP/REST API at:localhost:%d ...", o.rest_api_port)
        if o.model_config_file and o.model_config_file_poll_wait_seconds > 0:
            from serving.model_servers.main import ModelServer  # its poller reads what this class has too
            self._config_poller = threading.Thread(target=ModelServer._poll_config_file, args=(self,),
                                                   name="config-poller", daemon=True)
            self._config_poller.start()

    def request_stop(self) -> None:
        """Safe from a signal handler."""
        self._stopped.set()

    def wait(self) -> None:
        while not self._stopped.wait(1.0):
            pass

    def stop(self) -> None:
        """Stops polling, then drains every serving process (killed if it takes over STOP_SECONDS)."""
        self._stopped.set()
        if self._config_poller is not None:
            self._config_poller.join()
        self.registry.stop()
        with self._lock:
            processes = list(self._all)
        for process in processes:
            process.ask_to_stop()
        deadline = time.monotonic() + STOP_SECONDS
        for process in processes:
            process.wait_or_kill(deadline)


def serve(options, config, count: int) -> int:
    """main()'s _serve for ``count`` serving processes; the same exit codes and error lines."""
    coordinator = Coordinator(options, config, count)
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: coordinator.request_stop())
    try:
        coordinator.start()
    except OptionsError as e:  # a flag only TensorFlow can check (e.g. --tensorflow_session_config_file)
        print(f"digits-model-server: {e}", file=sys.stderr)
        coordinator.stop()
        return 2
    except ServingError as e:
        log.error("%s", e.status())
        coordinator.stop()
        return 1
    except (OSError, RuntimeError) as e:
        log.error("Failed to start the server: %s", e)
        coordinator.stop()
        return 1
    coordinator.wait()
    if coordinator.failure is None:
        log.info("Shutting down: finishing requests in flight.")
    coordinator.stop()
    return 1 if coordinator.failure else 0
