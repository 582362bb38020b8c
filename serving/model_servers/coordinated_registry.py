"""The coordinator's ModelRegistry (--num_serving_processes): the usual VersionManagers, whose loads and unloads
go to every serving process through the Coordinator."""
from __future__ import annotations

import collections
import functools
from types import MappingProxyType

from serving.core.model_registry import ModelRegistry
from serving.errors import ServingError

Loaded = collections.namedtuple("Loaded", "model version path")  # what the VersionManagers hold


def _never(path: str):
    raise ServingError(f"internal error: {path} was loaded without a model name (CoordinatedRegistry)", "INTERNAL")


class CoordinatedRegistry(ModelRegistry):
    """ModelRegistry whose versions live in the serving processes. ModelRegistry gives its loader only a
    path, so each model's VersionManager gets its own loader, which knows the model's name (this wraps
    ModelRegistry._make and sets VersionManager._loader/_unloader: tests/unit/test_serving_processes.py
    fails if they change); every reload re-sends the label maps. ``coordinator`` provides ``metrics``,
    ``load(model, path) -> Loaded``, ``unload(Loaded)`` and ``push_labels()``."""

    def __init__(self, coordinator, specs, **kwargs):
        self._coordinator = coordinator
        super().__init__((), _never, None, **kwargs)
        plain = self._make

        def make(spec):
            manager = plain(spec)
            manager._loader = coordinator.metrics.instrument_loader(functools.partial(coordinator.load, spec.name))
            manager._unloader = coordinator.unload
            return manager
        self._make = make
        self._managers = MappingProxyType({spec.name: make(spec) for spec in specs})

    def reload(self, specs) -> None:
        try:
            super().reload(specs)
        finally:
            self._coordinator.push_labels()
