"""Which versions of a model to serve, read from its base path as TF Serving 2.16's
FileSystemStoragePathSource reads it (PollFileSystemForServable, IndexChildrenByVersion,
AspireLatestVersions / AspireAllVersions / AspireSpecificVersions, strings::safe_strto64)."""
from __future__ import annotations

import errno
import logging
import os
import re
from typing import Optional

from serving.errors import ServingError
from serving.model_servers.server_config import ModelSpec

log = logging.getLogger(__name__)

_INT64_MIN, _INT64_MAX = -2**63, 2**63 - 1
_VERSION_NAME = re.compile(r"[ \t\n\v\f\r]*(-?[0-9]+)[ \t\n\v\f\r]*")  # safe_strto64: C isspace, '-', digits
_ERRNO_CODES = {errno.ENOENT: "NOT_FOUND", errno.EACCES: "PERMISSION_DENIED", errno.EPERM: "PERMISSION_DENIED",
                errno.ENOTDIR: "FAILED_PRECONDITION", errno.ENAMETOOLONG: "INVALID_ARGUMENT"}


def parse_version(name: str) -> Optional[int]:
    """A version directory's number, as strings::safe_strto64 reads it, or None (the child is ignored)."""
    match = _VERSION_NAME.fullmatch(name)
    if not match:
        return None
    value = int(match.group(1))
    return value if _INT64_MIN <= value <= _INT64_MAX else None


def _io_error(path: str, e: OSError) -> ServingError:
    """tensorflow::IOError(context, errno): '<path>; <strerror>' with the code the errno maps to."""
    return ServingError(f"{path}; {e.strerror or e}", _ERRNO_CODES.get(e.errno, "UNKNOWN"))


def aspired_versions(spec: ModelSpec) -> dict:
    """{version: path} that the spec's version policy aspires to, from the children of spec.base_path;
    raises ServingError when the base path cannot be read (PollFileSystemForServable)."""
    base = spec.base_path
    try:
        os.stat(base)  # Env::FileExists
    except OSError as e:
        err = _io_error(base, e)
        raise ServingError(f"Could not find base path {base} for servable {spec.name} with error "
                           f"{err.status()}", "INVALID_ARGUMENT") from None
    try:
        children = os.listdir(base)  # GetChildren: files as well as directories
    except OSError as e:
        raise _io_error(base, e) from None
    by_version = {}
    for child in sorted({c.split("/")[0] for c in children}):  # IndexChildrenByVersion: the last name wins
        version = parse_version(child)
        if version is not None:
            if version in by_version:
                log.warning("Duplicate version directories detected. Version %d will be loaded from %s, %s will "
                            "be ignored.", version, child, by_version[version])
            by_version[version] = child
    policy = spec.version_policy
    if policy.kind == "all":
        chosen = by_version
    elif policy.kind == "specific":
        chosen = {v: c for v, c in by_version.items() if v in set(policy.versions)}
        for missing in sorted(set(policy.versions) - set(chosen)):
            log.warning("Version %d of servable %s, which was requested to be served as a 'specific' version in "
                        "the servable's version policy, was not found in the file system", missing, spec.name)
    else:
        keep = sorted(by_version, reverse=True)[:max(policy.num_versions or 1, 1)]
        chosen = {v: by_version[v] for v in keep}
    found = chosen if policy.kind == "specific" else by_version  # at_least_one_version_found
    if not found:
        log.warning("No versions of servable %s found under base path %s. Did you forget to name your leaf "
                    "directory as a number (eg. '/1/')?", spec.name, base)
    return {v: os.path.join(base, c) for v, c in chosen.items()}
