"""Calls both ways over one ``multiprocessing.connection.Connection`` between the coordinator and a
serving process (--num_serving_processes): either side may call the other while its own calls wait.

Why not ``multiprocessing.managers``: the two sides must call each other at once (a worker asks for
the model status while the coordinator has it loading a version), commands must run in the order
they were sent (load before commit before unload), and a dead peer must fail every pending call at
once so that the coordinator can tell "this worker is gone" from "this load failed".
"""
from __future__ import annotations

import itertools
import logging
import os
import queue
import socket
import threading
from concurrent import futures
from typing import Callable, Dict, Optional, Tuple

from serving.errors import ServingError
from serving.model_servers.options import OptionsError

log = logging.getLogger(__name__)

INLINE, SERIAL, THREAD = "inline", "serial", "thread"  # how an incoming call runs (see Channel)


class ChannelClosed(ConnectionError):
    """The other process is gone (or the channel was closed): the call has no answer."""


class RemoteError(RuntimeError):
    """An error other than ServingError/OptionsError raised by the other side, as its type and text."""


def encode_error(error: BaseException) -> tuple:
    """Exceptions cross as plain data: a pickled ServingError would lose its code (it pickles its args)."""
    if isinstance(error, ServingError):
        return ("serving", error.message, error.code)
    if isinstance(error, OptionsError):
        return ("options", str(error))
    return ("other", f"{type(error).__name__}: {error}")


def decode_error(data: tuple) -> Exception:
    if data[0] == "serving":
        return ServingError(data[1], data[2])
    if data[0] == "options":
        return OptionsError(data[1])
    return RemoteError(data[1])


class Channel:
    """Over a socket-backed Connection (socketpair, or multiprocessing.Pipe()). ``handlers`` maps a method
    name to (function, mode): INLINE runs on the reader thread (quick answers that must not wait behind
    anything), SERIAL on one thread in arrival order (commands), THREAD on a pool (calls that may in turn
    call the other side). ``on_close`` runs once, on the reader thread, after every pending call has
    failed with ChannelClosed."""

    def __init__(self, conn, handlers: Dict[str, Tuple[Callable, str]], name: str,
                 on_close: Optional[Callable[[], None]] = None, pool_size: int = 8):
        self._conn, self._handlers, self.name, self._on_close = conn, handlers, name, on_close
        self._send_lock = threading.Lock()
        self._pending: Dict[int, futures.Future] = {}
        self._pending_lock = threading.Lock()
        self._ids = itertools.count()
        self._serial: "queue.SimpleQueue" = queue.SimpleQueue()
        self._pool = futures.ThreadPoolExecutor(pool_size, thread_name_prefix=f"{name}-call")
        self.closed = threading.Event()
        self._reader = threading.Thread(target=self._read, name=f"{name}-reader", daemon=True)
        self._serial_thread = threading.Thread(target=self._run_serial, name=f"{name}-serial", daemon=True)

    def start(self) -> "Channel":
        self._serial_thread.start()
        self._reader.start()
        return self

    def call_async(self, method: str, *args) -> futures.Future:
        future: futures.Future = futures.Future()
        with self._pending_lock:
            if self.closed.is_set():
                future.set_exception(ChannelClosed(f"{self.name} is closed"))
                return future
            call_id = next(self._ids)
            self._pending[call_id] = future
        try:
            self._send(("call", call_id, method, args))
        except (OSError, ValueError) as e:
            with self._pending_lock:
                self._pending.pop(call_id, None)
            if not future.done():
                future.set_exception(ChannelClosed(f"{self.name}: {e}"))
        return future

    def call(self, method: str, *args, timeout: Optional[float] = None):
        return self.call_async(method, *args).result(timeout)

    def close(self) -> None:
        """Shuts the connection down: the reader sees EOF, fails what is pending and closes it; the peer sees
        EOF. (Closing the descriptor under a blocked reader could let it read a reused descriptor number.)"""
        try:
            with socket.socket(fileno=os.dup(self._conn.fileno())) as sock:
                sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass  # already closed, or the peer is gone

    def _send(self, message: tuple) -> None:
        with self._send_lock:
            self._conn.send(message)

    def _read(self) -> None:
        try:
            while True:
                message = self._conn.recv()
                if message[0] == "reply":
                    _, call_id, ok, payload = message
                    with self._pending_lock:
                        future = self._pending.pop(call_id, None)
                    if future is not None:
                        future.set_result(payload) if ok else future.set_exception(decode_error(payload))
                    continue
                _, call_id, method, args = message
                fn, mode = self._handlers.get(method, (None, INLINE))
                if mode == INLINE:
                    self._serve(call_id, method, fn, args)
                elif mode == SERIAL:
                    self._serial.put((call_id, method, fn, args))
                else:
                    self._pool.submit(self._serve, call_id, method, fn, args)
        except (EOFError, OSError, ValueError):
            pass  # the peer exited or closed the connection
        finally:
            with self._send_lock:  # not under a send in progress
                self._conn.close()
            with self._pending_lock:
                self.closed.set()
                pending, self._pending = list(self._pending.values()), {}
            for future in pending:
                future.set_exception(ChannelClosed(f"{self.name} closed while a call was waiting for its answer"))
            self._serial.put(None)
            self._pool.shutdown(wait=False)
            if self._on_close is not None:
                self._on_close()

    def _run_serial(self) -> None:
        while (item := self._serial.get()) is not None:
            self._serve(*item)

    def _serve(self, call_id: int, method: str, fn, args: tuple) -> None:
        try:
            if fn is None:
                raise RemoteError(f"{self.name}: no method {method!r}")
            reply = ("reply", call_id, True, fn(*args))
        except Exception as e:  # noqa: BLE001 - every failure goes back to the caller
            reply = ("reply", call_id, False, encode_error(e))
        try:
            self._send(reply)
        except (OSError, ValueError):
            pass  # the peer is gone; its reader has failed the call already
        except Exception as e:  # noqa: BLE001 - e.g. a result that does not pickle
            self._send(("reply", call_id, False, encode_error(e)))
