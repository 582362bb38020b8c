"""Low-level file operations of the span store: durable atomic writes, the store lock, and reads that
work on local paths and on object stores (gs://, s3://) alike.

Writes are local only (rename and flock need a POSIX filesystem; a shared volume in the cluster).
Reads of a local path use the standard library, so that the web app, which appends feedback, needs no
TensorFlow; a URI with a scheme is read through ``tf.io.gfile``.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import re
import uuid
from typing import Iterator, List

_URI = re.compile(r"^[a-z][a-z0-9+.-]*://")


def is_uri(path: str) -> bool:
    return bool(_URI.match(path))


def join(*parts: str) -> str:
    return "/".join(p.rstrip("/") for p in parts[:-1]) + "/" + parts[-1] if is_uri(parts[0]) else os.path.join(*parts)


def _gfile():
    import tensorflow as tf  # only for object-store URIs

    return tf.io.gfile


def exists(path: str) -> bool:
    return _gfile().exists(path) if is_uri(path) else os.path.exists(path)


def listdir(path: str) -> List[str]:
    """Entry names of a directory ([] when it does not exist); object stores add a trailing '/' to
    directories, which is dropped."""
    if is_uri(path):
        gfile = _gfile()
        return [name.rstrip("/") for name in gfile.listdir(path)] if gfile.isdir(path) else []
    try:
        return os.listdir(path)
    except FileNotFoundError:
        return []


def read_bytes(path: str) -> bytes:
    if is_uri(path):
        with _gfile().GFile(path, "rb") as f:
            return f.read()
    with open(path, "rb") as f:
        return f.read()


def fsync_dir(path: str) -> None:
    """Makes a rename or a new entry in ``path`` survive a power loss."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


TEMP_SUFFIX = ".part"


def atomic_write(path: str, data: bytes, sync_dir: bool = True) -> None:
    """``data`` at ``path``, never half-written: a temporary file in the same directory (named
    ``.<name>.<random>.part``, which readers skip), flushed and fsynced, then renamed over ``path``."""
    directory, name = os.path.split(path)
    temp = os.path.join(directory, f".{name}.{uuid.uuid4().hex[:8]}{TEMP_SUFFIX}")
    try:
        with open(temp, "xb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(temp)
        raise
    if sync_dir:
        fsync_dir(directory or ".")


@contextlib.contextmanager
def locked(lock_path: str) -> Iterator[None]:
    """An exclusive ``flock`` on ``lock_path`` (created if missing) for the duration of the block;
    the kernel releases it when a process dies, so a crash never leaves the store locked."""
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock
