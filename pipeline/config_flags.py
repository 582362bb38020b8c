"""The command line and environment of PipelineConfig: one flag per field, grouped in --help, and
errors that name the flag or variable the user typed (one line, for exit status 2)."""
from __future__ import annotations

import argparse
import dataclasses
import difflib
import os
import re
import shlex
import sys
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from pipeline.config import ENV_PREFIX, ConfigError, PipelineConfig

# --help's sections, in order; every config field belongs to exactly one (a unit test checks).
GROUPS: Tuple[Tuple[str, str, Tuple[str, ...]], ...] = (
    ("run", "Names and places of this run's artifacts and pushed model.",
     ("pipeline_name", "pipeline_root", "serving_dir", "model_name", "enable_cache", "verbose")),
    ("data", "Which images ExampleGen reads and the Trainer fits on.",
     ("data_source", "data_root", "span_window", "train_examples", "eval_examples", "test_examples", "train_splits")),
    ("model", "The Keras model and how it trains.",
     ("epochs", "batch_size", "hidden_units", "learning_rate", "lr_schedule", "augment_shift", "architecture",
      "seed")),
    ("tuning", "TFX's Tuner: a search for how the model trains best, which later runs reuse.",
     ("tune", "tune_trials")),
    ("gate", "What a model must reach on the test split to be blessed and pushed.",
     ("accuracy_floor", "max_accuracy_drop", "mnist_accuracy_floor", "max_new_data_drop", "min_slice_examples",
      "significance_level", "baseline")),
    ("validation", "What stops a run before training: broken spans, and (if asked) drift.",
     ("max_blank_share", "max_saturated_share", "max_label_share", "drift_threshold", "drift_stops_run")),
    ("Beam", "Where Apache Beam runs ExampleGen, StatisticsGen, Transform and the Evaluator.",
     ("beam_preset", "beam_direct_workers", "dataflow_project", "dataflow_region", "dataflow_temp_location",
      "dataflow_setup_file", "flink_master", "flink_environment_type", "flink_environment_config", "beam_args")),
    ("Kubeflow", "Kubeflow Pipelines v2 (digits kfp, digits schedule) and scheduling (digits schedule --local).",
     ("pipeline_image", "image_source_dir", "kfp_pipeline_root", "kfp_serving_dir", "kfp_data_root", "schedule",
      "kfp_endpoint", "kfp_experiment", "run_on_open_span")),
)

_EXPECTED = {"int": "an integer", "float": "a number", "bool": "true or false",
             "Tuple[int, ...]": "a comma-separated list of integers such as 128,128"}


def flag_fields() -> List[dataclasses.Field]:
    """The config fields a flag and a DIGITS_* variable set (all but bookkeeping such as ``explicit``)."""
    return [field for field in dataclasses.fields(PipelineConfig) if field.metadata.get("flag", True)]


def flag_name(field_name: str) -> str:
    return "--" + field_name.replace("_", "-")


class OneLineParser(argparse.ArgumentParser):
    """argparse's own errors (a flag without its value, ...) as one line, exit status 2."""

    def error(self, message: str):  # noqa: D102 - argparse's hook
        self.exit(2, f"{self.prog}: {message}\n")


def _parse(field: dataclasses.Field, text: str, source: str) -> Any:
    """Turns one textual override into the field's type, or says, naming ``source``, what was expected."""
    kind = field.type
    try:
        if kind == "bool":
            lowered = text.strip().lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off"):
                return False
            raise ValueError(text)
        if kind == "int":
            return int(text)
        if kind == "float":
            return float(text)
        if kind == "Tuple[int, ...]":
            return tuple(int(part) for part in text.replace(" ", "").split(",") if part)
        if kind == "Tuple[str, ...]":
            return tuple(shlex.split(text))
    except ValueError:
        raise ConfigError(f"{source}: {text!r} is not {_EXPECTED.get(kind, 'valid')}") from None
    choices = field.metadata.get("choices")
    if choices and text not in choices:
        raise ConfigError(f"{source}: {text!r} is not one of {', '.join(choices)}")
    return text


def unknown_message(unknown: Sequence[str], known: Sequence[str], prog: str) -> str:
    """"unknown option --epoch: did you mean --epochs?" for the first unknown option (or argument)."""
    options = [arg for arg in unknown if arg.startswith("-")]
    if not options:
        return f"unexpected argument {unknown[0]!r}; options take the form --name VALUE, see '{prog} --help'"
    typed = options[0].split("=", 1)[0]
    close = difflib.get_close_matches(typed, known, n=1)
    if close:
        return f"unknown option {typed}: did you mean {close[0]}?"
    return f"unknown option {typed}; see '{prog} --help'"


def _known_options(parser: argparse.ArgumentParser) -> List[str]:
    return [option for action in parser._actions for option in action.option_strings]  # no public listing


def from_sources(argv: Sequence[str] = (), environ: Mapping[str, str] = os.environ,
                 prog: str = "digits run") -> PipelineConfig:
    """Defaults, then DIGITS_* environment variables, then command-line flags."""
    parser = OneLineParser(prog=prog, add_help=False, allow_abbrev=False)
    add_arguments(parser)
    flags, unknown = parser.parse_known_args(list(argv))
    if unknown:
        raise ConfigError(unknown_message(unknown, _known_options(parser) + ["--help"], prog))
    return from_flags(flags, environ)


def from_flags(flags: argparse.Namespace, environ: Mapping[str, str] = os.environ) -> PipelineConfig:
    """Like from_sources, for a command whose own parser (set up by add_arguments, plus flags of its
    own such as --output-dir) already parsed the command line."""
    values: Dict[str, Any] = {}
    sources: Dict[str, str] = {}  # field -> the flag or environment variable its value came from
    for field in flag_fields():
        env_name = ENV_PREFIX + field.name.upper()
        if env_name in environ:
            sources[field.name] = env_name
            values[field.name] = _parse(field, environ[env_name], env_name)
        text = getattr(flags, field.name, None)
        if text is not None:
            sources[field.name] = flag_name(field.name)
            values[field.name] = _parse(field, text, sources[field.name])
    try:
        return PipelineConfig(**values, explicit=tuple(sorted(sources.items())))
    except ConfigError as error:
        raise ConfigError("; ".join(_named(problem, sources) for problem in error.problems)) from None


def _named(problem: str, sources: Mapping[str, str]) -> str:
    """``problem`` led by the flag or variable that set the field it is about: "--epochs: epochs must be ..."."""
    field = re.match(r"[a-z_]+", problem)
    source = sources.get(field.group(0)) if field else None
    return f"{source}: {problem}" if source else problem


def command_line(prog: str, description: str, argv: Optional[Sequence[str]],
                 own_options: Callable[[argparse.ArgumentParser], None]) -> Tuple[PipelineConfig, argparse.Namespace]:
    """Parses a command that takes every config flag plus ``own_options``; a config that cannot be
    used ends the command with one line and exit status 2, as ``digits run`` does."""
    parser = OneLineParser(
        prog=prog, allow_abbrev=False, usage="%(prog)s [options]",
        description=f"{description} Options override DIGITS_* environment variables, which override the defaults.")
    add_arguments(parser)
    own_options(parser)
    args, unknown = parser.parse_known_args(sys.argv[1:] if argv is None else list(argv))
    try:
        if unknown:
            raise ConfigError(unknown_message(unknown, _known_options(parser), prog))
        return from_flags(args), args
    except ConfigError as error:
        print(f"{prog}: {error}", file=sys.stderr)
        raise SystemExit(2) from None


def _shown_default(field: dataclasses.Field) -> str:
    default = field.default
    if isinstance(default, tuple):
        shown = ",".join(map(str, default)) if field.type == "Tuple[int, ...]" else shlex.join(default)
    else:
        shown = str(default).lower() if isinstance(default, bool) else str(default)
    shown = shown if shown != "" else "''"
    if "choices" in field.metadata:
        shown = f"{shown}; one of {', '.join(field.metadata['choices'])}"
    return shown


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per config field, in --help's groups, with its help text and visible default."""
    fields = {field.name: field for field in dataclasses.fields(PipelineConfig)}
    for title, description, names in GROUPS:
        group = parser.add_argument_group(f"{title} options", description)
        for name in names:
            field = fields[name]
            flag_options = {"nargs": "?", "const": "true"} if field.type == "bool" else {}  # --verbose alone = true
            group.add_argument(
                flag_name(name), dest=name, **flag_options,
                metavar=field.type.upper() if "[" not in field.type else "LIST",
                help=f"{field.metadata['help']} (default: {_shown_default(field)}; env {ENV_PREFIX}{name.upper()})")
