"""One model's versions, managed as tensorflow_model_server 2.16 manages them.

Pure logic: the loader (path -> servable) and unloader are injected, so this module never imports
TensorFlow. The parts of TF Serving it follows:

* which versions to serve: FileSystemStoragePathSource (PollFileSystemForServable,
  AspireLatestVersions / AspireAllVersions / AspireSpecificVersions, safe_strto64 for names);
* when to load and unload: AspiredVersionsManager with the AvailabilityPreservingPolicy that
  server.cc installs (a new version loads before an old one is unloaded; a failed load leaves the
  old one serving), LoaderHarness::Load's Retry (max_num_load_retries, load_retry_interval_micros)
  and no reload of an errored version while it stays aspired (enable_reload_servables_with_error
  is false in tensorflow_model_server); a version no longer aspired has its load retries cancelled
  (ProcessAspiredVersionsRequest -> CancelLoadServableRetry);
* what clients see: BasicManager's ServingMap ("Servable not found for request: ..."),
  ServerCore::GetModelVersionForLabel, GetModelStatusImpl and the ServableStateMonitor, which
  remembers every version it has seen (unloaded ones as END): ``serving.core.serving_map``, whose
  ``get()`` is a lock-free read of an immutable snapshot that the polling side swaps whole.

Loads run one at a time on the polling thread (num_load_threads=0), so while a failed load waits to
retry, that wait polls the base path every poll_seconds itself (FileSystemStoragePathSource runs in its
own thread in TF Serving): a newer version that un-aspires the failing one ends the wait at once
instead of after max_num_load_retries x load_retry_interval. Unlike TF Serving, whose status stays
LOADING with an OK status until the retries end, the status shows the last attempt's error meanwhile.
"""
from __future__ import annotations

import dataclasses
import logging
import threading
import time
from typing import Any, Callable, Mapping, Optional

from serving.errors import ServingError
from serving.model_servers.server_config import ModelSpec
from serving.core.serving_map import ABSENT, STATES, ServingMap, VersionStatus  # noqa: F401 - re-exported
from serving.core.version_source import aspired_versions, parse_version  # noqa: F401 - re-exported

log = logging.getLogger(__name__)


@dataclasses.dataclass
class _Harness:
    """LoaderHarness, reduced to what the policy looks at; touched only by the poller."""
    version: int
    path: str
    aspired: bool = True
    state: str = "new"  # new, loading, ready, error
    servable: Any = None
    cancel: threading.Event = dataclasses.field(default_factory=threading.Event)  # cancel_load_retry


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
        self._map = ServingMap(spec.name, spec.version_labels)  # what requests read
        self._harnesses: dict = {}  # changed only under _request_lock, by the thread holding _poll_lock
        self._pending: Optional[dict] = None  # the last aspired-versions request, not yet processed
        self._poll_lock = threading.Lock()  # one manager at a time (loads, unloads)
        self._source_lock = threading.Lock()  # one file-system scan at a time
        self._request_lock = threading.Lock()  # _pending, the harness map, cancelling retries
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
        return self._map.labels

    def available_versions(self) -> tuple:
        return self._map.available_versions()

    # ------------------------------------------------------------------------------------ request path

    def get(self, version: Optional[int] = None, label: Optional[str] = None) -> tuple:
        """(version, servable): the given version, the one the label names, or the highest available."""
        return self._map.get(version, label)

    def status(self, version: Optional[int] = None, label: Optional[str] = None) -> list:
        """GetModelStatus: one version, or every version ever seen, highest first. 2.16's
        GetModelStatusWithModelSpec looks only at ModelSpec.version, so a label is accepted and ignored."""
        return self._map.status(version)

    # ----------------------------------------------------------------------------------- configuration

    def set_labels(self, labels: Mapping[str, int]) -> None:
        """Replaces the label map (checked beforehand, as UpdateModelVersionLabelMap does)."""
        self._map.set_labels(labels)

    def update_spec(self, spec: ModelSpec) -> None:
        """New base path or version policy, used from the next poll on (labels go through set_labels)."""
        if spec.name != self.name:
            raise ValueError(f"spec for model {spec.name} given to the manager of {self.name}")
        self._spec = spec

    # ----------------------------------------------------------------------------------------- polling

    def poll_once(self) -> None:
        """Scans the base path, then loads and unloads until the policy has nothing left to do. A base path
        that cannot be read changes nothing (TF Serving emits no aspired versions then) but is kept in
        last_error and logged. The scan comes first, so one that un-aspires a version waiting to retry a
        failed load (say on the polling thread) cancels that wait."""
        self._poll_source()
        with self._poll_lock:
            self._manage()

    def retire(self) -> None:
        """The model left the config: stop polling and unload every version (their states stay, as END)."""
        self.stop()
        self._request({})
        with self._poll_lock:
            self._manage()

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
        with self._request_lock:
            for harness in self._harnesses.values():
                if harness.state == "loading":
                    harness.cancel.set()
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

    # ------------------------------------------------------------------------------------------ source

    def _poll_source(self) -> None:
        """FileSystemStoragePathSource's poll: the aspired versions, handed to _request()."""
        with self._source_lock:
            try:
                aspired = aspired_versions(self._spec)
            except ServingError as e:
                self.last_error = e
                log.error("FileSystemStoragePathSource encountered a filesystem access error: %s", e.message)
                return
            self.last_error = None
            self._request(aspired)

    def _request(self, aspired: dict) -> None:
        """EnqueueAspiredVersionsRequest, from any thread: kept for the manager, and every version left out
        has its load retries cancelled now, as ProcessAspiredVersionsRequest's CancelLoadServableRetry."""
        with self._request_lock:
            self._pending = dict(aspired)
            for version, harness in self._harnesses.items():
                if version not in aspired:
                    harness.cancel.set()

    # --------------------------------------------------------------------- manager (poll lock held)

    def _manage(self) -> None:
        """HandlePendingAspiredVersionsRequests, FlushServables, then InvokePolicyAndExecuteAction until idle."""
        while True:
            self._process_request()
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

    def _process_request(self) -> None:
        """ProcessAspiredVersionsRequest: marks the aspired versions and adds the new ones."""
        with self._request_lock:
            aspired, self._pending = self._pending, None
            if aspired is None:
                return
            for version, harness in self._harnesses.items():
                harness.aspired = version in aspired
            added = [v for v in sorted(aspired) if v not in self._harnesses]
            for version in added:  # errored versions that stay aspired are not re-added
                self._harnesses[version] = _Harness(version, aspired[version])
        for version in added:
            self._publish(version, "START")

    def _flush(self) -> None:
        with self._request_lock:
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
        """LoaderHarness::Load with Retry(): 1 + max_num_load_retries attempts; between them the last
        error is the version's status, and un-aspiring the version or stop() ends the retries."""
        with self._request_lock:
            harness.state = "loading"
            if self._stop.is_set():
                harness.cancel.set()
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
                if attempts <= self.max_num_load_retries and not harness.cancel.is_set():
                    self._publish(harness.version, "LOADING", error.code, error.message)
                    if self._wait_to_retry(harness):
                        continue
                if harness.cancel.is_set():
                    log.info("Retrying of Loading servable: {name: %s version: %d} was cancelled.", self.name,
                             harness.version)
                harness.state = "error"
                self._publish(harness.version, "END", error.code, error.message)
                return
        harness.state, harness.servable = "ready", servable
        log.info("Successfully loaded servable version {name: %s version: %d}", self.name, harness.version)
        self._publish(harness.version, "AVAILABLE", servable=servable)

    def _wait_to_retry(self, harness: _Harness) -> bool:
        """Sleeps load_retry_interval_seconds before a retry (False: cancelled meanwhile). With periodic
        polling, the base path is polled every poll_seconds during the wait, so that a newer version can
        un-aspire this one; that sets harness.cancel, which ends the wait at once."""
        deadline = time.monotonic() + self.load_retry_interval_seconds
        while not harness.cancel.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return True
            polling = self.poll_seconds > 0
            if harness.cancel.wait(min(remaining, self.poll_seconds) if polling else remaining):
                break
            if polling:
                self._poll_source()
        return False

    def _unload(self, harness: _Harness) -> None:
        servable, harness.servable = harness.servable, None
        self._publish(harness.version, "UNLOADING", servable=None)  # out of the serving map first
        with self._request_lock:
            del self._harnesses[harness.version]
        if self._unloader is not None:
            try:
                self._unloader(servable)
            except Exception:  # noqa: BLE001 - TF Serving's Unload() has no failure path either
                log.exception("unloading version %d of model %s failed", harness.version, self.name)
        self._publish(harness.version, "END")

    def _publish(self, version: int, state: str, code: str = "OK", message: str = "",
                 servable: Any = ABSENT) -> None:
        self._map.publish(version, state, code, message, servable)
