"""Every served model's VersionManager, by name, with ServerCore's request routing and config reloads
(ServerCore::ServableRequestFromModelSpec, GetModelStatusImpl, ServerCore::ReloadConfig as
HandleReloadConfigRequest runs it)."""
from __future__ import annotations

import logging
import threading
from types import MappingProxyType
from typing import Any, Callable, Iterable, Optional

from serving.errors import ServingError
from serving.model_servers.options import OptionsError
from serving.model_servers.server_config import ModelSpec, is_relative_uri, check_version_labels
from serving.core.versions import VersionManager

log = logging.getLogger(__name__)


class ModelRegistry:
    """One VersionManager per model. get() is lock-free (one read of an immutable name -> manager map)."""

    def __init__(self, specs: Iterable[ModelSpec], loader: Callable[[str], Any],
                 unloader: Optional[Callable[[Any], None]] = None, poll_seconds: float = 1.0, *,
                 allow_version_labels_for_unavailable_models: bool = False,
                 max_num_load_retries: int = 5, load_retry_interval_seconds: float = 60.0):
        self._loader, self._unloader, self._poll_seconds = loader, unloader, poll_seconds
        self._retries = dict(max_num_load_retries=max_num_load_retries,
                             load_retry_interval_seconds=load_retry_interval_seconds)
        self.allow_unavailable_labels = allow_version_labels_for_unavailable_models
        self._managers = MappingProxyType({spec.name: self._make(spec) for spec in specs})
        self._retired: dict = {}  # models removed by a reload: their versions stay visible in status, as END
        self._reload_lock = threading.Lock()
        self._started = False

    def loaders_for(self, spec: ModelSpec) -> tuple:
        """(loader, unloader) of one model's VersionManager. A registry whose versions load elsewhere (the
        coordinator of several serving processes) overrides this to give each model its own pair."""
        return self._loader, self._unloader

    def _make(self, spec: ModelSpec) -> VersionManager:
        loader, unloader = self.loaders_for(spec)
        return VersionManager(spec, loader, unloader, self._poll_seconds, **self._retries)

    # ------------------------------------------------------------------------------------ request path

    def manager(self, model_name: str) -> Optional[VersionManager]:
        return self._managers.get(model_name)

    def model_names(self) -> list:
        return sorted(self._managers)

    def get(self, model_name: str, version: Optional[int] = None, label: Optional[str] = None) -> tuple:
        """(version, servable) for a ModelSpec; an unknown model fails as TF Serving's manager fails it."""
        manager = self._managers.get(model_name)
        if manager is not None:
            return manager.get(version, label)
        if label is not None:  # the label map is consulted before the manager
            raise ServingError(f"Unrecognized servable version label: {label}", "INVALID_ARGUMENT")
        request = f"Specific({model_name}, {version})" if version is not None else f"Latest({model_name})"
        raise ServingError(f"Servable not found for request: {request}", "NOT_FOUND")

    def status(self, model_name: str, version: Optional[int] = None, label: Optional[str] = None) -> list:
        """GetModelStatus for one model (label ignored, as in 2.16)."""
        manager = self._managers.get(model_name) or self._retired.get(model_name)
        if manager is not None:
            return manager.status(version, label)
        if version is not None:
            raise ServingError(f"Could not find version {version} of model {model_name}", "NOT_FOUND")
        raise ServingError(f"Could not find any versions of model {model_name}", "NOT_FOUND")

    # ----------------------------------------------------------------------------------------- polling

    def poll_once(self) -> None:
        for manager in self._managers.values():
            manager.poll_once()

    def start_and_wait(self, stopping: Optional[threading.Event] = None) -> None:
        """ServerCore::Create: polls until every model has a version AVAILABLE, raising ServingError (as
        WaitUntilModelsAvailable) when a model's version ended without loading; then polls in the background.
        A model with no version on disk is waited for, as TF Serving waits, re-polling every poll_seconds
        (at least 1 s), until it appears or ``stopping`` is set."""
        stopping = stopping or threading.Event()
        waiting = list(self._managers.values())
        while waiting and not stopping.is_set():
            for manager in waiting:
                manager.poll_once()
            self._check_available(waiting)
            waiting = [m for m in waiting if not m.available_versions()]
            if waiting:
                log.warning("Waiting for a version of %s to appear: the model server opens its ports once every "
                            "model has one.", ", ".join(f"{m.name} under {m.spec.base_path}" for m in waiting))
                stopping.wait(max(min(m.poll_seconds for m in waiting), 1.0))
        self.start()

    def start(self) -> None:
        self._started = True
        for manager in self._managers.values():
            manager.start()

    def stop(self) -> None:
        self._started = False
        for manager in self._managers.values():
            manager.stop()

    # ------------------------------------------------------------------------------------------ reload

    def reload(self, specs: Iterable[ModelSpec]) -> None:
        """ServerCore::ReloadConfig for a new ModelConfigList: checks names, base paths and labels (then
        changes nothing if one fails), removes models no longer listed (their versions unload), passes new
        policies and base paths to existing models (used from their next poll), sets labels, and loads new
        models before returning, as WaitUntilModelsAvailable waits for them."""
        specs = list(specs)
        with self._reload_lock:
            self._validate(specs)
            current = self._managers
            for spec in specs:  # UpdateModelVersionLabelMap, against the versions available now
                manager = current.get(spec.name)
                try:
                    check_version_labels(spec, manager.available_versions() if manager else (),
                                         manager.labels if manager else {}, self.allow_unavailable_labels)
                except OptionsError as e:
                    raise ServingError(str(e), "FAILED_PRECONDITION") from None
            managers, new = {}, []
            for spec in specs:
                manager = current.get(spec.name)
                if manager is None:
                    manager = self._retired.pop(spec.name, None)
                    if manager is None:
                        manager = self._make(spec)
                    new.append(manager)
                manager.update_spec(spec)
                manager.set_labels(spec.version_labels)
                managers[spec.name] = manager
            for name in set(current) - set(managers):
                self._retired[name] = current[name]
            self._managers = MappingProxyType(managers)
            for name in set(current) - set(managers):
                current[name].retire()
            for manager in new:
                manager.poll_once()
                if self._started:
                    manager.start()
            self._check_available(new)

    @staticmethod
    def _validate(specs: list) -> None:
        """ValidateModelConfigList."""
        names = set()
        for spec in specs:
            if spec.name in names:
                raise ServingError(f"Illegal to list model {spec.name} multiple times in config list",
                                   "INVALID_ARGUMENT")
            names.add(spec.name)
        for spec in specs:
            if is_relative_uri(spec.base_path):
                raise ServingError(f"Expected model {spec.name} to have an absolute path or URI; got "
                                   f"base_path()={spec.base_path}", "INVALID_ARGUMENT")

    @staticmethod
    def _check_available(managers: list) -> None:
        """WaitUntilModelsAvailable's error, for new models whose latest version ended without loading. (A
        model with no version on disk makes TF Serving wait for ever; here the reload just returns.)"""
        failed = []
        for manager in managers:
            if manager.available_versions():
                continue
            try:
                statuses = manager.status()
            except ServingError:
                continue
            ended = [s for s in statuses if s.state == "END"]
            if ended:
                s = ended[0]
                error = f" due to error: {s.error_code}: {s.error_message}" if s.error_code != "OK" else ""
                failed.append(f"{{{{name: {manager.name} version: {s.version}}}{error}}}, ")
        if failed:
            raise ServingError(f"{len(failed)} model(s) did not become available: {{{''.join(failed)}}}", "UNKNOWN")
