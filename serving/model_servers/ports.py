"""Refusing a TCP port that another program listens on, and naming that program.

gRPC listens with SO_REUSEPORT, so a second server started on a port the first one holds binds
"fine" and the two share the port (TF Serving 2.16 starts that way too, and only logs "Failed to start
HTTP Server" when the REST port is held). This server probes every TCP port it is told to use before it
loads anything: a bind *without* SO_REUSEPORT fails on a port anyone listens on. The serving processes
of --num_serving_processes bind after the probe, with SO_REUSEPORT, so they still share their ports.
"""
from __future__ import annotations

import errno
import socket
from typing import List


class PortInUse(OSError):
    """A port another program listens on; the message names the port, the flag and the holder."""


def _probes() -> list:
    """(family, address) pairs that together cover every local address: IPv6 "::" (dual-stack, so it also
    meets IPv4 listeners) where the host has IPv6, and IPv4 "0.0.0.0"."""
    return ([(socket.AF_INET6, "::")] if socket.has_ipv6 else []) + [(socket.AF_INET, "0.0.0.0")]


def is_taken(port: int) -> bool:
    """Whether something listens on TCP ``port`` (on any address). Other bind errors (no IPv6, a privileged
    port) are left to the real bind, which reports them."""
    for family, address in _probes():
        try:
            probe = socket.socket(family, socket.SOCK_STREAM)
        except OSError:
            continue  # e.g. IPv6 disabled in the kernel
        with probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a TIME_WAIT port is free
            if family == socket.AF_INET6:
                probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            try:
                probe.bind((address, port))
            except OSError as e:
                if e.errno == errno.EADDRINUSE:
                    return True
    return False


def holders(port: int) -> List[str]:
    """The "pid N (command line)" of each process listening on TCP ``port`` that this user may see (psutil maps
    the socket inodes of /proc/net/tcp{,6} to /proc/<pid>/fd); empty when none is visible."""
    try:
        import psutil
    except ImportError:
        return []
    try:
        connections = psutil.net_connections(kind="tcp")
    except (psutil.Error, OSError):
        return []
    pids = sorted({c.pid for c in connections
                   if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port and c.pid})
    found = []
    for pid in pids:
        try:
            process = psutil.Process(pid)
            command = " ".join(process.cmdline()) or process.name()
        except psutil.Error:
            command = "?"
        found.append(f"pid {pid} ({command})")
    return found


def refuse_taken(options) -> None:
    """Raises PortInUse for the first of --port and --rest_api_port (when enabled) that is taken."""
    for flag, port in (("port", options.port), ("rest_api_port", options.rest_api_port if options.rest_api_enabled
                                                else 0)):
        if port and is_taken(port):
            held = holders(port)
            by = (" by " + ", ".join(held)) if held else \
                 " by a process this user cannot see (`sudo ss -ltnp 'sport = :%d'` names it)" % port
            raise PortInUse(f"port {port} (--{flag}) is already in use{by}. Stop that server or choose another "
                            f"--{flag}; this server refuses a port another program listens on (TF Serving 2.16 "
                            f"would share it through SO_REUSEPORT).")
