"""A Pusher whose versions appear atomically and only grow, as TF Serving's file-system poller needs.

TFX's stock Pusher copies straight into ``<base>/<unix time>``: a server polling the directory can
see that version half-written, and a clock set back can make a smaller version. Here the model is
copied under a hidden staging name (which TF Serving ignores: not an integer), then renamed into
place in one step. A model identical to the newest served version is not pushed again.

Each staging name is the pusher's own and names it (``.staging-<version>-<pid>-<host>``), with an owner
record beside it (``<staging name>.owner``: also the run's PushedModel URI), written before the copy
starts and removed once the version is in place: the next run can tell a dead push's leftovers from a
live pusher's work (pipeline/runs/crash_cleanup.py). The name is what proves the owner (it appears in one
step); the record may be empty if its writer was killed while writing it.
"""
from __future__ import annotations

import json
import os
import re
import socket
import time
from typing import Any, Dict, List, Optional

from absl import logging
from tfx import types
from tfx.components.pusher import executor as pusher_executor
from tfx.dsl.io import fileio
from tfx.proto import pusher_pb2
from tfx.types import artifact_utils, standard_component_specs
from tfx.utils import io_utils, proto_utils

STAGING_PREFIX = ".staging-"
OWNER_SUFFIX = ".owner"  # <staging name>.owner: who copies into it (JSON: pid, host, started, pushed_model)


# On the PushedModel artifact: 1 when this push made a new version, 0 when the newest one already served it.
NEW_VERSION_PROPERTY = "new_version"

def existing_versions(model_dir: str) -> List[int]:
    """Integer version directories, as TF Serving discovers them (other names are ignored)."""
    if not fileio.exists(model_dir):
        return []
    names = (name.rstrip("/") for name in fileio.listdir(model_dir))
    return sorted(int(name) for name in names if name.isdigit())


def next_version(model_dir: str) -> int:
    """The current Unix time, or one more than the largest version if the clock is behind it."""
    return max([int(time.time())] + [version + 1 for version in existing_versions(model_dir)])


def _tree(root: str) -> Dict[str, bytes]:
    files = {}
    for directory, _, names in fileio.walk(root):
        for name in names:
            path = os.path.join(directory, name)
            files[os.path.relpath(path, root)] = io_utils.read_bytes_file(path)
    return files


def newest_identical_version(model_path: str, model_dir: str) -> Optional[str]:
    """The newest served version's path if it holds exactly ``model_path``'s files, else None."""
    versions = existing_versions(model_dir)
    if not versions:
        return None
    newest = os.path.join(model_dir, str(versions[-1]))
    return newest if _tree(newest) == _tree(model_path) else None


def host_name() -> str:
    """This host's name as staging names carry it (characters other than letters, digits, '.', '-', '_' as '_')."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", socket.gethostname()) or "_"


def owner_of(staging_name: str, marker: Optional[str] = None) -> Optional[Dict[str, Any]]:
    """Who made the staging copy ``staging_name`` ({"pid", "host", ...}): the name's pid and host, with
    what the owner record at ``marker`` adds; None for a name that carries no owner (older pushers')."""
    parts = staging_name[len(STAGING_PREFIX):].split("-", 2)
    if not staging_name.startswith(STAGING_PREFIX) or len(parts) != 3 or not parts[1].isdigit():
        return None
    owner: Dict[str, Any] = {}
    if marker is not None:
        try:
            with fileio.open(marker, "r") as f:
                record = json.loads(f.read())
            owner.update(record if isinstance(record, dict) else {})
        except Exception:  # noqa: BLE001 - absent, or empty because its writer died writing it
            pass
    owner.update(pid=int(parts[1]), host=parts[2])
    return owner


def push_atomically(model_path: str, model_dir: str, pushed_model: Optional[str] = None) -> str:
    """Copies ``model_path`` to ``model_dir/<next version>`` via a staging name; returns the new path.
    ``pushed_model`` (the run's PushedModel URI, under its pipeline root) goes into the owner record."""
    fileio.makedirs(model_dir)
    version = next_version(model_dir)
    staging = os.path.join(model_dir, f"{STAGING_PREFIX}{version}-{os.getpid()}-{host_name()}")
    marker = staging + OWNER_SUFFIX
    target = os.path.join(model_dir, str(version))
    if fileio.exists(staging):
        fileio.rmtree(staging)  # this process's own name: left by a dead process that had our pid
    owner = {"pid": os.getpid(), "host": host_name(), "started": int(time.time()), "pushed_model": pushed_model}
    with fileio.open(marker, "w") as f:  # before the copy: a staging directory always has its owner
        f.write(json.dumps(owner))
    try:
        io_utils.copy_dir(model_path, staging)
        fileio.rename(staging, target)
    except BaseException:
        if fileio.exists(staging):
            fileio.rmtree(staging)
        raise
    finally:
        if fileio.exists(marker):
            fileio.remove(marker)
    return target


class Executor(pusher_executor.Executor):
    """Pushes a blessed model to the file-system destination with :func:`push_atomically`."""

    def Do(self, input_dict: Dict[str, List[types.Artifact]], output_dict: Dict[str, List[types.Artifact]],
           exec_properties: Dict[str, Any]) -> None:
        self._log_startup(input_dict, output_dict, exec_properties)
        model_push = artifact_utils.get_single_instance(output_dict[standard_component_specs.PUSHED_MODEL_KEY])
        if not self.CheckBlessing(input_dict):
            self._MarkNotPushed(model_push)
            return
        model_path = self.GetModelPath(input_dict)
        destination = pusher_pb2.PushDestination()
        proto_utils.json_to_proto(exec_properties[standard_component_specs.PUSH_DESTINATION_KEY], destination)
        if destination.WhichOneof("destination") != "filesystem":
            raise NotImplementedError("this Pusher writes to a file-system destination only")
        model_dir = destination.filesystem.base_directory
        target = newest_identical_version(model_path, model_dir)
        already_served = target is not None
        if already_served:
            logging.info("Pusher: %s already serves this model; no new version", target)
        else:
            target = push_atomically(model_path, model_dir, pushed_model=model_push.uri)
            logging.info("Pusher: model %s is now served from %s", model_path, target)
        io_utils.copy_dir(model_path, model_push.uri)  # archived with the push, as TFX's Pusher does
        self._MarkPushed(model_push, pushed_destination=target, pushed_version=os.path.basename(target))
        model_push.set_int_custom_property(NEW_VERSION_PROPERTY, 0 if already_served else 1)
