"""One serving process of ``--num_serving_processes``: ``python -m serving.model_servers.worker FD``,
started by the coordinator (serving.model_servers.coordinator) with one end of a socket pair as FD.

It imports TensorFlow (the coordinator does not), loads and unloads versions when the coordinator
says so, and runs the REST and gRPC fronts on the shared ports (SO_REUSEPORT: the kernel spreads
connections over the processes) over a WorkerRegistry. It ignores SIGINT and SIGTERM: the
coordinator drains it ("stop"), and it stops by itself when the coordinator's end of the pipe closes.
"""
from __future__ import annotations

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")  # the Keras the exported models were built with

import logging  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402
from multiprocessing.connection import Connection  # noqa: E402

from serving.errors import ServingError  # noqa: E402
from serving.model_servers.ipc import INLINE, SERIAL, Channel, ChannelClosed, encode_error  # noqa: E402

log = logging.getLogger("digits.model_server.worker")


class _RelayedMetrics:
    """This process's ServingMetrics for recording; the Prometheus page is the coordinator's, which adds
    up every serving process (so whichever process answers, the totals are the same)."""

    def __init__(self, metrics, channel_call):
        self._metrics, self._call = metrics, channel_call

    def request(self, *args):
        return self._metrics.request(*args)

    def snapshot(self) -> dict:
        return self._metrics.snapshot()

    def render(self):
        return self._call("metrics_page")

    def __getattr__(self, name):  # anything else a front may use
        return getattr(self._metrics, name)


class Worker:
    """The fronts and the servables of one serving process."""

    def __init__(self, index: int, options, server, channel_call):
        from serving.model_servers.worker_registry import WorkerRegistry

        self.index, self.options, self.server = index, options, server
        self.registry = WorkerRegistry(channel_call, server.loader, server.unloader)
        self.metrics = _RelayedMetrics(server.metrics, channel_call)
        self.stopping = threading.Event()

    def handlers(self) -> dict:
        r = self.registry
        return {"load": (r.load, SERIAL), "commit": (r.commit, SERIAL), "retire": (r.retire, SERIAL),
                "unload": (r.unload, SERIAL), "set_labels": (r.set_labels, SERIAL), "listen": (self.listen, SERIAL),
                "snapshot": (self.metrics.snapshot, INLINE), "stop": (self.stopping.set, INLINE)}

    def listen(self) -> tuple:
        """Opens the ports as ModelServer.start does, sharing them with the other processes; only process 0
        binds --grpc_socket_path (a UNIX socket has a single listener). Returns (gRPC port, REST port)."""
        socket_path = self.options.grpc_socket_path if self.index == 0 else ""
        self.server.open_ports(self.registry, metrics=self.metrics, socket_path=socket_path, reuse_port=True)
        return (self.server.grpc.port if self.server.grpc else 0, self.server.rest.port if self.server.rest else 0)

    def shutdown(self) -> None:
        """Stops accepting, answers what is in flight, then says how much this process served."""
        self.server.stop()
        answered = sum(self.metrics.snapshot()["request_count"].values())
        log.info("Serving process %d (pid %d) stopped after answering %d requests.", self.index, os.getpid(),
                 answered)


def _start(conn: Connection):
    """The hand-shake: (index, options, extras) in; ("ready", pid) or ("failed", error) out."""
    from serving.model_servers import server_config
    from serving.model_servers.main import ModelServer, StartupConfig, _configure_tensorflow

    index, options, extras = conn.recv()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format=f"%(asctime)s.%(msecs)03d: %(levelname).1s [serving process {index}] "
                               "%(name)s] %(message)s", datefmt="%Y-%m-%d %H:%M:%S")
    batching = None
    if extras["batching"] is not None:  # protos cross as bytes: these classes live in a private pool
        batching = server_config.BatchingParameters.FromString(extras["batching"])
    monitoring = server_config.MonitoringConfig.FromString(extras["monitoring"])
    _configure_tensorflow(options)
    server = ModelServer(options, StartupConfig(specs=[], batching=batching, monitoring=monitoring))
    return index, options, server  # the server's own registry stays empty: its loader is what is used


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    for signum in (signal.SIGINT, signal.SIGTERM):  # the coordinator decides when this process stops
        signal.signal(signum, signal.SIG_IGN)
    conn = Connection(int(argv[0]))
    try:
        index, options, server = _start(conn)
    except Exception as e:  # noqa: BLE001 - told to the coordinator, which reports it as main() would
        try:
            conn.send(("failed", encode_error(e)))
        except OSError:
            pass  # the coordinator is gone already
        return 2
    conn.send(("ready", os.getpid()))
    channel = None

    def ask(method: str, *args):
        """A synchronous call to the coordinator (status, reload, the metrics page)."""
        try:
            return channel.call(method, *args)
        except ChannelClosed:
            raise ServingError("The model server is stopping: its coordinating process is gone",
                               "UNAVAILABLE") from None
    worker = Worker(index, options, server, ask)
    channel = Channel(conn, worker.handlers(), f"serving process {index}", on_close=worker.stopping.set).start()
    worker.stopping.wait()
    worker.shutdown()
    channel.close()
    return 0


if __name__ == "__main__":
    code = main()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # TensorFlow's threads can make a normal interpreter exit hang
