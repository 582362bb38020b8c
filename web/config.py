"""The one typed config of the draw-a-digit app: defaults, then ``DIGITS_UI_*`` variables, then flags.

    python -m web --port 8080 --server http://localhost:8501 --model-name mnist
    DIGITS_UI_SERVER=http://tf-serving:8501 python -m web
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import re
from typing import Mapping, Optional, Sequence

from serving.client.model_client import split_target

ENV_PREFIX = "DIGITS_UI_"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class ConfigError(ValueError):
    """A value the app cannot start with; the message is one line naming it and what is expected."""


def _field(default, help: str):
    return dataclasses.field(default=default, metadata={"help": help})


@dataclasses.dataclass(frozen=True)
class WebConfig:
    port: int = _field(8080, "Port the page and its API are served on.")
    host: str = _field("0.0.0.0", "Address to listen on (127.0.0.1: this machine only).")
    server: str = _field("http://localhost:8501", "The model server's REST API (TF Serving's or ours).")
    model_name: str = _field("mnist", "Model name on the model server.")
    timeout: float = _field(5.0, "Seconds to wait for the model server before saying it is not answering.")
    # Feedback (web/feedback.py): labelled digits for the next training run, in <data_root>/spans/open.
    data_root: str = _field("data", "Where labelled digits are kept (the pipeline's --data-root).")
    feedback: bool = _field(True, "Accept labels for the digits read (POST /api/feedback); false turns it off.")
    feedback_token: str = dataclasses.field(default="", repr=False, metadata={
        "help": "A token feedback must carry (Authorization: Bearer TOKEN); empty: none needed."})
    feedback_token_file: str = _field("", "A file holding that token (e.g. a mounted Kubernetes Secret).")
    feedback_per_minute: int = _field(30, "Feedback requests each client address may send a minute (0: no limit).")

    def __post_init__(self):
        if not 0 < self.port < 65536:
            raise ConfigError(f"port must be in 1..65535, got {self.port}")
        if not self.host.strip():
            raise ConfigError("host must not be empty: e.g. 0.0.0.0 or 127.0.0.1")
        scheme = self.server.partition("://")[0] if "://" in self.server else "http"
        if scheme != "http":
            raise ConfigError(f"server {self.server!r} must be an http:// URL (the REST API speaks plain HTTP), "
                              f"e.g. http://localhost:8501")
        try:
            split_target(self.server, 8501)
        except ValueError as e:
            raise ConfigError(f"server: {e}") from None
        if not _NAME.match(self.model_name):
            raise ConfigError(f"model name {self.model_name!r} must be letters, digits, '.', '_' or '-', e.g. mnist")
        if not self.timeout > 0:
            raise ConfigError(f"timeout must be a positive number of seconds, got {self.timeout:g}")
        if not self.data_root.strip() or "://" in self.data_root:
            raise ConfigError(f"data root {self.data_root!r} must be a local or mounted directory (the app writes "
                              f"feedback there), e.g. data or /data")
        if self.feedback_token and self.feedback_token_file:
            raise ConfigError("give the feedback token or a feedback token file, not both")
        if self.feedback_per_minute < 0:
            raise ConfigError(f"feedback per minute must be 0 (no limit) or more, got {self.feedback_per_minute}")

    def token(self) -> str:
        """The token feedback needs ("" for none), read from ``feedback_token_file`` when that is given."""
        if not self.feedback_token_file:
            return self.feedback_token
        try:
            with open(self.feedback_token_file, encoding="utf-8") as f:
                token = f.read().strip()
        except OSError as e:
            raise ConfigError(f"cannot read the feedback token file {self.feedback_token_file}: "
                              f"{e.strerror or e}") from None
        if not token:
            raise ConfigError(f"the feedback token file {self.feedback_token_file} is empty: put the token in it")
        return token


_BOOLS = {"true": True, "1": True, "yes": True, "on": True, "false": False, "0": False, "no": False, "off": False}


def _convert(field: dataclasses.Field, text: str, source: str):
    if str(field.type) == "bool":
        if text.strip().lower() not in _BOOLS:
            raise ConfigError(f"{source}={text!r} is not true or false: {field.metadata['help']}")
        return _BOOLS[text.strip().lower()]
    kind = {"int": int, "float": float}.get(str(field.type), str)
    try:
        return kind(text)
    except ValueError:
        noun = "an integer" if kind is int else "a number"
        raise ConfigError(f"{source}={text!r} is not {noun}: {field.metadata['help']}") from None


def parser(prog: str = "python -m web") -> argparse.ArgumentParser:
    """One flag per field, with its help, default and environment variable."""
    result = argparse.ArgumentParser(
        prog=prog, allow_abbrev=False,
        description="The draw-a-digit page: draw or upload a digit and see what the model server's model reads.")
    for field in dataclasses.fields(WebConfig):
        result.add_argument("--" + field.name.replace("_", "-"), dest=field.name, metavar=str(field.type).upper(),
                            help=f"{field.metadata['help']} (default: {field.default}; "
                                 f"env {ENV_PREFIX}{field.name.upper()})")
    return result


def from_sources(argv: Sequence[str] = (), environ: Optional[Mapping[str, str]] = None,
                 prog: str = "python -m web") -> WebConfig:
    """Defaults, then DIGITS_UI_* variables, then flags (argparse handles --help and unknown flags)."""
    environ = os.environ if environ is None else environ
    flags = parser(prog).parse_args(list(argv))
    values = {}
    for field in dataclasses.fields(WebConfig):
        env_name = ENV_PREFIX + field.name.upper()
        if env_name in environ:
            values[field.name] = _convert(field, environ[env_name], env_name)
        flag = getattr(flags, field.name)
        if flag is not None:
            values[field.name] = _convert(field, flag, "--" + field.name.replace("_", "-"))
    return WebConfig(**values)
