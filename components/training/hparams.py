"""The Trainer's hyper-parameters, apart from TensorFlow so the config and the CLI can name them."""
from __future__ import annotations

import dataclasses
from typing import Any, Dict, Optional, Tuple

ARCHITECTURES = ("mlp", "cnn")
LR_SCHEDULES = ("cosine", "constant")


@dataclasses.dataclass(frozen=True)
class HParams:
    """How the model trains. The defaults train the seed's network to ~0.986 on MNIST's test set
    (README, Benchmark): Adam with a cosine-decayed rate and +-1 px shifts, 15 epochs of 128. They are
    the pipeline's too: PipelineConfig's training fields take their defaults from here."""

    epochs: int = 15
    batch_size: int = 128
    hidden_units: Tuple[int, ...] = (128, 128)
    learning_rate: float = 0.003
    lr_schedule: str = "cosine"  # cosine: decays to 0 over all steps; constant: the seed's fixed rate
    augment_shift: int = 1  # each training digit moved by up to this many pixels; 0 = the seed's unshifted digits
    architecture: str = "mlp"  # mlp: the seed's network; cnn: a small convolutional one (README, Benchmark)
    seed: int = 42

    @classmethod
    def from_custom_config(cls, custom_config: Dict[str, Any] | None) -> "HParams":
        known = {field.name for field in dataclasses.fields(cls)}
        values = {k: v for k, v in (custom_config or {}).items() if k in known}
        if "hidden_units" in values:
            values["hidden_units"] = tuple(values["hidden_units"])
        return cls(**values)


# What TFX's Tuner searches (components/training/tuner.py); the architecture and normalization stay fixed.
TUNABLE = ("learning_rate", "lr_schedule", "batch_size", "augment_shift", "epochs")
EXPLICIT_KEY = "explicit"  # custom_config: {field: the flag or DIGITS_* variable that set it}
TRIALS_KEY = "tune_trials"  # the Tuner's custom_config: its trial budget
DEFAULT, TUNED, CONFIG = "default", "tuned", "config"
NETWORK_KEY = "network"  # in a tuned result: the network its values were found for (network())


def network(hparams: HParams) -> str:
    """What a tuned result depends on besides the data: "mlp 128,128" (architecture, hidden units)."""
    return f"{hparams.architecture} {','.join(map(str, hparams.hidden_units))}"


def tuned_for_another_network(custom_config: Dict[str, Any] | None, tuned: Dict[str, Any] | None) -> Optional[str]:
    """The network ``tuned`` was found for if the config trains another (its values are then not used:
    a rate found for the MLP says little about the CNN), else None. A result that names no network
    (tuned before it was recorded) is taken as the config's."""
    wanted = network(HParams.from_custom_config(custom_config))
    found = (tuned or {}).get(NETWORK_KEY, wanted)
    return None if found == wanted else found


def resolve(custom_config: Dict[str, Any] | None,
            tuned: Dict[str, Any] | None = None) -> Tuple["HParams", Dict[str, Dict[str, Any]]]:
    """The hyper-parameters the Trainer uses and where each came from: a value the user set explicitly
    (flag or variable) wins over a tuned one, which wins over the config's default. Returns the
    HParams and {field: {"value": ..., "source": "default" | "tuned" | "config" | "--flag" | "DIGITS_..."}}
    ("config": set in code, not by a flag, variable or the Tuner). A result tuned for another network is
    not used (tuned_for_another_network)."""
    config = dict(custom_config or {})
    explicit = dict(config.get(EXPLICIT_KEY) or {})
    defaults = HParams()
    if tuned_for_another_network(config, tuned):
        tuned = None
    overlay = {name: value for name, value in (tuned or {}).items() if name in TUNABLE and name not in explicit}
    hparams = HParams.from_custom_config({**config, **overlay})
    origins = {}
    for field in dataclasses.fields(HParams):
        value = getattr(hparams, field.name)
        if field.name in explicit:
            source = explicit[field.name]
        elif field.name in overlay:
            source = TUNED
        else:
            source = DEFAULT if value == getattr(defaults, field.name) else CONFIG
        origins[field.name] = {"value": list(value) if isinstance(value, tuple) else value, "source": source}
    return hparams, origins


def describe(origins: Dict[str, Dict[str, Any]]) -> str:
    """"epochs 12 (tuned), batch_size 64 (--batch-size), ..." for the console and the report."""
    parts = []
    for name, origin in origins.items():
        value = origin["value"]
        shown = ",".join(map(str, value)) if isinstance(value, list) else f"{value:g}" if isinstance(value, float) \
            else str(value)
        parts.append(f"{name} {shown}" + ("" if origin["source"] == DEFAULT else f" ({origin['source']})"))
    return ", ".join(parts)
