"""What requests read of one model's versions: BasicManager's ServingMap (the AVAILABLE servables, the
highest of them, ServerCore's label map) and the ServableStateMonitor's states (every version ever seen,
unloaded ones as END), each an immutable snapshot that ``publish()`` swaps whole, so reads take no lock.
The manager (``serving.core.versions``) is the only writer."""
from __future__ import annotations

import dataclasses
import threading
from types import MappingProxyType
from typing import Any, Mapping, Optional

from serving.errors import ServingError

STATES = ("START", "LOADING", "AVAILABLE", "UNLOADING", "END")  # ModelVersionStatus.State
ABSENT = object()  # publish(): the serving map is left as it is


@dataclasses.dataclass(frozen=True)
class VersionStatus:
    """One ModelVersionStatus of a GetModelStatusResponse; error_code is the gRPC code name."""
    version: int
    state: str
    error_code: str = "OK"
    error_message: str = ""


@dataclasses.dataclass(frozen=True)
class _Serving:
    """What requests read: the AVAILABLE servables, the highest of them, and the label map."""
    versions: Mapping[int, Any]
    latest: Optional[tuple]
    labels: Mapping[str, int]


class ServingMap:
    """One model's serving snapshot and version states, with TF Serving's lookups and their errors."""

    def __init__(self, name: str, labels: Mapping[str, int]):
        self.name = name
        self._serving = _Serving(MappingProxyType({}), None, MappingProxyType(dict(labels)))
        self._states: Mapping[int, VersionStatus] = MappingProxyType({})
        self._lock = threading.Lock()  # read-modify-write of the snapshots

    @property
    def labels(self) -> dict:
        return dict(self._serving.labels)

    def available_versions(self) -> tuple:
        return tuple(sorted(self._serving.versions))

    def get(self, version: Optional[int] = None, label: Optional[str] = None) -> tuple:
        """(version, servable): the given version, the one the label names, or the highest available."""
        serving = self._serving  # one atomic read; everything below uses this snapshot
        if label is not None:
            if version is not None:
                raise ValueError("a ModelSpec names a version or a version label, not both")
            if label not in serving.labels:  # ServerCore::GetModelVersionForLabel
                raise ServingError(f"Unrecognized servable version label: {label}", "INVALID_ARGUMENT")
            version = serving.labels[label]
        if version is None:
            if serving.latest is None:
                raise ServingError(f"Servable not found for request: Latest({self.name})", "NOT_FOUND")
            return serving.latest
        servable = serving.versions.get(version, ABSENT)
        if servable is ABSENT:
            raise ServingError(f"Servable not found for request: Specific({self.name}, {version})", "NOT_FOUND")
        return version, servable

    def status(self, version: Optional[int] = None) -> list:
        """GetModelStatus: one version, or every version ever seen, highest first."""
        states = self._states
        if version is not None:
            if version not in states:
                raise ServingError(f"Could not find version {version} of model {self.name}", "NOT_FOUND")
            return [states[version]]
        if not states:
            raise ServingError(f"Could not find any versions of model {self.name}", "NOT_FOUND")
        return [states[v] for v in sorted(states, reverse=True)]

    def set_labels(self, labels: Mapping[str, int]) -> None:
        with self._lock:
            self._serving = dataclasses.replace(self._serving, labels=MappingProxyType(dict(labels)))

    def publish(self, version: int, state: str, code: str = "OK", message: str = "",
                servable: Any = ABSENT) -> None:
        """A version's new state; with ``servable`` (None: out of the map) a new serving snapshot too."""
        with self._lock:
            if servable is not ABSENT:
                versions = dict(self._serving.versions)
                if state == "AVAILABLE":
                    versions[version] = servable
                else:
                    versions.pop(version, None)
                latest = max(versions) if versions else None
                self._serving = _Serving(MappingProxyType(versions),
                                         (latest, versions[latest]) if versions else None, self._serving.labels)
            states = dict(self._states)
            states[version] = VersionStatus(version, state, code, message)
            self._states = MappingProxyType(states)
