"""What the REST and gRPC fronts of one serving process (--num_serving_processes) see as the registry:
``get`` answers from the servables this process holds, ``status`` and ``reload`` ask the coordinator,
which keeps the one set of VersionManagers (one truth for every process).

Routing: the coordinator loads a version in every process, and only then *commits* it (the
version becomes routable: "latest", labels and explicit-version requests); before it unloads a
version it *retires* it everywhere. Commands arrive in order on one pipe, so a process never routes
to a version it does not hold, and once the status API says AVAILABLE every process serves it.
``get`` is a lock-free read of an immutable snapshot, as VersionManager.get is.
"""
from __future__ import annotations

import dataclasses
from types import MappingProxyType
from typing import Any, Callable, Dict, Iterable, Mapping, Optional

from serving.errors import ServingError

_ABSENT = object()


@dataclasses.dataclass(frozen=True)
class _Route:
    versions: Mapping[int, Any]  # committed versions: version -> servable
    latest: Optional[tuple]  # (version, servable) of the highest committed version
    labels: Mapping[str, int]


class WorkerRegistry:
    """The registry interface of the fronts (get, status, reload) inside a serving process. The command
    methods (load ... set_labels) are called by one thread, in the order the coordinator sent them."""

    def __init__(self, call: Callable[..., Any], loader: Callable[[str], Any],
                 unloader: Optional[Callable[[Any], None]] = None):
        self._call, self._loader, self._unloader = call, loader, unloader
        self._held: Dict[tuple, Any] = {}  # (model, version) -> servable, loaded here
        self._committed: Dict[str, set] = {}
        self._labels: Dict[str, dict] = {}
        self._routes: Mapping[str, _Route] = MappingProxyType({})

    # ------------------------------------------------------------------------------------ request path

    def get(self, model_name: str, version: Optional[int] = None, label: Optional[str] = None) -> tuple:
        """(version, servable), failing as ModelRegistry.get / VersionManager.get fail."""
        route = self._routes.get(model_name)
        if label is not None:
            if version is not None:
                raise ValueError("a ModelSpec names a version or a version label, not both")
            if route is None or label not in route.labels:
                raise ServingError(f"Unrecognized servable version label: {label}", "INVALID_ARGUMENT")
            version = route.labels[label]
        if version is None:
            if route is None or route.latest is None:
                raise ServingError(f"Servable not found for request: Latest({model_name})", "NOT_FOUND")
            return route.latest
        servable = route.versions.get(version, _ABSENT) if route is not None else _ABSENT
        if servable is _ABSENT:
            raise ServingError(f"Servable not found for request: Specific({model_name}, {version})", "NOT_FOUND")
        return version, servable

    def status(self, model_name: str, version: Optional[int] = None, label: Optional[str] = None) -> list:
        return self._call("status", model_name, version, label)

    def reload(self, specs: Iterable) -> None:
        self._call("reload", list(specs))

    def held(self) -> list:
        """(model, version) pairs loaded in this process, committed or not (for tests and logs)."""
        return sorted(self._held)

    # ------------------------------------------------------------------- commands from the coordinator

    def load(self, model_name: str, version: int, path: str) -> None:
        """Loads a version here; it is not routed to until commit(). A failure is raised as the
        ServingError VersionManager would record for it."""
        if (model_name, version) in self._held:
            return
        try:
            servable = self._loader(path)
        except ServingError:
            raise
        except Exception as e:  # noqa: BLE001 - the same conversion VersionManager._load makes
            raise ServingError(str(e) or type(e).__name__, "UNKNOWN") from None
        self._held[(model_name, version)] = servable

    def commit(self, model_name: str, version: int) -> None:
        if (model_name, version) not in self._held:
            raise ServingError(f"commit of version {version} of model {model_name}, which is not loaded here",
                               "INTERNAL")
        self._committed.setdefault(model_name, set()).add(version)
        self._publish(model_name)

    def retire(self, model_name: str, version: int) -> None:
        self._committed.get(model_name, set()).discard(version)
        self._publish(model_name)

    def unload(self, model_name: str, version: int) -> None:
        self.retire(model_name, version)
        servable = self._held.pop((model_name, version), _ABSENT)
        if servable is not _ABSENT and self._unloader is not None:
            self._unloader(servable)

    def set_labels(self, labels: Mapping[str, Mapping[str, int]]) -> None:
        """Every configured model's label map; a model left out has none (it left the config)."""
        changed = set(self._labels) | set(labels)
        self._labels = {name: dict(value) for name, value in labels.items()}
        for name in changed:
            self._publish(name)

    def _publish(self, model_name: str) -> None:
        versions = {v: self._held[(model_name, v)] for v in self._committed.get(model_name, ())}
        labels = self._labels.get(model_name, {})
        routes = dict(self._routes)
        if versions or labels:
            latest = max(versions) if versions else None
            routes[model_name] = _Route(MappingProxyType(versions),
                                        (latest, versions[latest]) if versions else None,
                                        MappingProxyType(labels))
        else:
            routes.pop(model_name, None)
        self._routes = MappingProxyType(routes)
