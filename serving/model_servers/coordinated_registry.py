"""The coordinator's ModelRegistry (--num_serving_processes): the usual VersionManagers, whose loads and unloads
go to every serving process through the Coordinator."""
from __future__ import annotations

import collections
import functools

from serving.core.model_registry import ModelRegistry

Loaded = collections.namedtuple("Loaded", "model version path")  # what the VersionManagers hold


class CoordinatedRegistry(ModelRegistry):
    """ModelRegistry whose versions live in the serving processes: each model's VersionManager loads and
    unloads through the Coordinator, by model name (ModelRegistry's loader is given only a path), and every
    reload re-sends the label maps. ``coordinator`` provides ``metrics``, ``load(model, path) -> Loaded``,
    ``unload(Loaded)`` and ``push_labels()``."""

    def __init__(self, coordinator, specs, **kwargs):
        self._coordinator = coordinator  # before ModelRegistry makes the managers through loaders_for()
        super().__init__(specs, loader=None, **kwargs)  # loaders_for() gives each model its own

    def loaders_for(self, spec) -> tuple:
        coordinator = self._coordinator
        return coordinator.metrics.instrument_loader(functools.partial(coordinator.load, spec.name)), \
            coordinator.unload

    def reload(self, specs) -> None:
        try:
            super().reload(specs)
        finally:
            self._coordinator.push_labels()
