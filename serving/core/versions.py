"""One model's versions, managed as tensorflow_model_server 2.16 manages them.

Pure logic: the loader (path -> servable) and unloader are injected, so this module never imports
TensorFlow. The parts of TF Serving it follows:

* which versions to serve: FileSystemStoragePathSource (PollFileSystemForServable,
  AspireLatestVersions / AspireAllVersions / AspireSpecificVersions, safe_strto64 for names);
* when to load and unload: AspiredVersionsManager with the AvailabilityPreservingPolicy that
  server.cc installs (a new version loads before an old one is unloaded; a failed load leaves the
  old one serving), LoaderHarness::Load's Retry (max_num_load_retries, load_retry_interval_micros)
  and no reload of an errored version while it stays aspired (enable_reload_servables_with_error
  is false in tensorflow_model_server);
* what clients see: BasicManager's ServingMap ("Servable not found for request: ..."),
  ServerCore::GetModelVersionForLabel, GetModelStatusImpl and the ServableStateMonitor, which
  remembers every version it has seen (unloaded ones as END).

``get()`` is a lock-free read of an immutable snapshot that the polling side swaps whole.
"""
from __future__ import annotations

import dataclasses
import logging
import threading
from types import MappingProxyType
from typing import Any, Callable, Mapping, Optional

from serving.errors import ServingError
from serving.model_servers.server_config import ModelSpec
from serving.core.version_source import aspired_versions, parse_version  # noqa: F401 - re-exported

log = logging.getLogger(__name__)

STATES = ("START", "LOADING", "AVAILABLE", "UNLOADING", "END")  # ModelVersionStatus.State


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


@dataclasses.dataclass
class _Harness:
    """LoaderHarness, reduced to what the policy looks at; touched only by the poller."""
    version: int
    path: str
    aspired: bool = True
    state: str = "new"  # new, loading, ready, error
    servable: Any = None


_ABSENT = object()


class VersionManager:
    """The versions of one model: poll_once() scans, loads and unloads; get() and status() answer requests."""

    def __init__(self, spec: ModelSpec, loader: Callable[[str], Any],
                 unloader: Optional[Callable[[Any], None]] = None, poll_seconds: float = 1.0, *,
                 max_num_load_retries: int = 5, load_retry_interval_seconds: float = 60.0):
        self._spec = spec
        self._loader, self._unloader = loader, unloader
        self.poll_seconds = poll_seconds  # >0 periodic, 0 once, <0 never (file_system_poll_wait_seconds)
        self.max_num_load_retries = max(int(max_num_load_retries), 0)
        self.load_retry_interval_seconds = load_retry_interval_seconds
        self._serving = _Serving(MappingProxyType({}), None, MappingProxyType(dict(spec.version_labels)))
        self._states: Mapping[int, VersionStatus] = MappingProxyType({})
        self._harnesses: dict = {}
        self._poll_lock = threading.Lock()  # one poll (scan + loads + unloads) at a time
        self._publish_lock = threading.Lock()  # read-modify-write of the snapshots
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self.last_error: Optional[ServingError] = None  # the last poll's file-system error, None once it reads

    @property
    def name(self) -> str:
        return self._spec.name

    @property
    def spec(self) -> ModelSpec:
        return self._spec

    @property
    def labels(self) -> dict:
        return dict(self._serving.labels)

    def available_versions(self) -> tuple:
        return tuple(sorted(self._serving.versions))

    # ------------------------------------------------------------------------------------ request path

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
        servable = serving.versions.get(version, _ABSENT)
        if servable is _ABSENT:
            raise ServingError(f"Servable not found for request: Specific({self.name}, {version})", "NOT_FOUND")
        return version, servable

    def status(self, version: Optional[int] = None, label: Optional[str] = None) -> list:
        """GetModelStatus: one version, or every version ever seen, highest first. 2.16's
        GetModelStatusWithModelSpec looks only at ModelSpec.version, so a label is accepted and ignored."""
        states = self._states
        if version is not None:
            if version not in states:
                raise ServingError(f"Could not find version {version} of model {self.name}", "NOT_FOUND")
            return [states[version]]
        if not states:
            raise ServingError(f"Could not find any versions of model {self.name}", "NOT_FOUND")
        return [states[v] for v in sorted(states, reverse=True)]

    # ----------------------------------------------------------------------------------- configuration

    def set_labels(self, labels: Mapping[str, int]) -> None:
        """Replaces the label map (checked beforehand, as UpdateModelVersionLabelMap does)."""
        with self._publish_lock:
            self._serving = dataclasses.replace(self._serving, labels=MappingProxyType(dict(labels)))

    def update_spec(self, spec: ModelSpec) -> None:
        """New base path or version policy, used from the next poll on (labels go through set_labels)."""
        if spec.name != self.name:
            raise ValueError(f"spec for model {spec.name} given to the manager of {self.name}")
        self._spec = spec

    # ----------------------------------------------------------------------------------------- polling

    def poll_once(self) -> None:
        """Scans the base path, then loads and unloads until the policy has nothing left to do. A base path
        that cannot be read changes nothing (TF Serving emits no aspired versions then) but is kept in
        last_error and logged."""
        with self._poll_lock:
            spec = self._spec
            try:
                aspired = aspired_versions(spec)
            except ServingError as e:
                self.last_error = e
                log.error("FileSystemStoragePathSource encountered a filesystem access error: %s", e.message)
                return
            self.last_error = None
            self._aspire(aspired)

    def retire(self) -> None:
        """The model left the config: stop polling and unload every version (their states stay, as END)."""
        self.stop()
        with self._poll_lock:
            self._aspire({})

    def start(self) -> None:
        """Polls in a background thread every poll_seconds (once if 0, never if negative)."""
        if self._thread is not None or self.poll_seconds < 0:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=f"versions-{self.name}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Ends polling and load retries and joins the thread (a load in progress is let finish)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self._stop.clear()

    def _run(self) -> None:
        while True:
            try:
                self.poll_once()
            except Exception:  # noqa: BLE001 - the poller must outlive a bad poll, as PeriodicFunction does
                log.exception("polling the versions of model %s failed", self.name)
            if self.poll_seconds == 0 or self._stop.wait(self.poll_seconds):
                return

    # --------------------------------------------------------------------- manager (poll lock held)

    def _aspire(self, aspired: dict) -> None:
        """ProcessAspiredVersionsRequest, FlushServables, then InvokePolicyAndExecuteAction until idle."""
        for version, harness in self._harnesses.items():
            harness.aspired = version in aspired
        for version, path in sorted(aspired.items()):
            if version not in self._harnesses:  # errored versions that stay aspired are not re-added
                self._harnesses[version] = _Harness(version, path)
                self._publish(version, "START")
        while True:
            self._flush()
            action = self._next_action()
            if action is None:
                return
            kind, harness = action
            if kind == "unload":
                self._unload(harness)
            elif self._stop.is_set():
                return  # stopping: no new loads
            else:
                self._load(harness)

    def _flush(self) -> None:
        for version in [v for v, h in self._harnesses.items() if not h.aspired and h.state in ("new", "error")]:
            del self._harnesses[version]  # no event: the monitor keeps the last state (START or END)

    def _next_action(self) -> Optional[tuple]:
        """AvailabilityPreservingPolicy::GetNextAction."""
        harnesses = self._harnesses.values()
        aspired = [h for h in harnesses if h.aspired]
        unaspired_ready = [h for h in harnesses if not h.aspired and h.state == "ready"]
        if unaspired_ready and (not aspired or any(h.state == "ready" for h in aspired)
                                or len(unaspired_ready) > 1):
            return "unload", min(unaspired_ready, key=lambda h: h.version)
        new = [h for h in aspired if h.state == "new"]
        return ("load", max(new, key=lambda h: h.version)) if new else None

    def _load(self, harness: _Harness) -> None:
        """LoaderHarness::Load with Retry(): 1 + max_num_load_retries attempts, interrupted by stop()."""
        harness.state = "loading"
        self._publish(harness.version, "LOADING")
        attempts = 0
        while True:
            try:
                servable = self._loader(harness.path)
                break
            except Exception as e:  # noqa: BLE001 - any loader failure is the version's status
                error = e if isinstance(e, ServingError) else ServingError(str(e) or type(e).__name__, "UNKNOWN")
                attempts += 1
                log.error("Loading servable: {name: %s version: %d} failed: %s", self.name, harness.version,
                          error.status())
                if attempts > self.max_num_load_retries or self._stop.wait(self.load_retry_interval_seconds):
                    harness.state = "error"
                    self._publish(harness.version, "END", error.code, error.message)
                    return
        harness.state, harness.servable = "ready", servable
        self._publish(harness.version, "AVAILABLE", servable=servable)

    def _unload(self, harness: _Harness) -> None:
        servable, harness.servable = harness.servable, None
        self._publish(harness.version, "UNLOADING", servable=None)  # out of the serving map first
        del self._harnesses[harness.version]
        if self._unloader is not None:
            try:
                self._unloader(servable)
            except Exception:  # noqa: BLE001 - TF Serving's Unload() has no failure path either
                log.exception("unloading version %d of model %s failed", harness.version, self.name)
        self._publish(harness.version, "END")

    def _publish(self, version: int, state: str, code: str = "OK", message: str = "",
                 servable: Any = _ABSENT) -> None:
        """Swaps in a new serving snapshot (when servable is given; None removes) and a new state map."""
        with self._publish_lock:
            if servable is not _ABSENT:
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
