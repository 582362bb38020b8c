"""``digits data``: the spans of labelled digits that runs train on besides MNIST.

    digits data                       # = digits data list: spans, digits per label, which runs used them
    digits data add PATH [--source NAME]   # a folder PATH/<label>/<name>.png (or IDX files) as a new span
    digits data seal                  # the open span (feedback from the page) becomes a sealed span
    digits data drop SPAN [--force]   # removes a span ('open' = the open span's digits)
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from typing import Dict, List, Optional, Sequence

from pipeline import config_flags
from pipeline.config import ENV_PREFIX, ConfigError, PipelineConfig

_COMMANDS = ("list", "add", "seal", "drop")


def _config_flags(parser: argparse.ArgumentParser) -> None:
    fields = {field.name: field for field in dataclasses.fields(PipelineConfig)}
    for name in ("data_root", "pipeline_root"):
        field = fields[name]
        parser.add_argument(config_flags.flag_name(name), dest=name, metavar="DIR",
                            help=f"{field.metadata['help']} (default: {field.default}; env {ENV_PREFIX}{name.upper()})")


def _parser(prog: str) -> argparse.ArgumentParser:
    parser = config_flags.OneLineParser(
        prog=prog, allow_abbrev=False, description="The spans of labelled digits that runs train on besides MNIST "
        "(span 0). Options override DIGITS_* environment variables, which override the defaults.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    listing = commands.add_parser("list", allow_abbrev=False, help="the spans: digits per label, open or sealed, "
                                  "which runs used them (the default command)")
    add = commands.add_parser("add", allow_abbrev=False, help="a folder PATH/<label>/<name>.png (or MNIST IDX "
                              "files) as a new sealed span, each image prepared as digits predict prepares it")
    add.add_argument("path", metavar="PATH", help="a folder of label folders 0..9 holding .png/.jpg/.jpeg/.bmp/.gif "
                     "images, an MNIST IDX images file (its labels file beside it), or a folder of IDX pairs")
    add.add_argument("--source", default="import", help="the name the run's Evaluator slices these digits by "
                     "(default: import)")
    seal = commands.add_parser("seal", allow_abbrev=False, help="seal the open span (feedback) so the next run "
                               "trains on it")
    drop = commands.add_parser("drop", allow_abbrev=False, help="remove a span (its digits are deleted)")
    drop.add_argument("span", metavar="SPAN", help="the span's number, or 'open' for the open span's digits")
    drop.add_argument("--force", action="store_true", help="remove it even if runs used it")
    for sub in (listing, add, seal, drop):
        _config_flags(sub)
    return parser


def main(argv: Optional[Sequence[str]] = None, prog: str = "digits data") -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or (argv[0] not in _COMMANDS and argv[0] not in ("-h", "--help")):
        argv = ["list"] + argv
    parser = _parser(prog)
    args, unknown = parser.parse_known_args(argv)
    try:
        if unknown:
            known = ["--data-root", "--pipeline-root", "--source", "--force", "--help"]
            raise ConfigError(config_flags.unknown_message(unknown, known, f"{prog} {args.command}"))
        config = config_flags.from_flags(args)
    except ConfigError as error:
        print(f"{prog}: {error}", file=sys.stderr)
        return 2
    from components.data.spans import SpanStore

    store = SpanStore(config.data_root, metadata_path=config.metadata_path)
    command = {"list": _list, "add": _add, "seal": _seal, "drop": _drop}[args.command]
    try:
        return command(store, config, args, prog)
    except ValueError as error:  # SpanError, DataSourceError, a bad --source: said in one line
        print(f"{prog} {args.command}: {error}", file=sys.stderr)
        return 1


def _labels(per_label: Dict[int, int]) -> str:
    return " ".join(f"{per_label.get(digit, 0):>4}" for digit in range(10))


def _list(store, config: PipelineConfig, args, prog: str) -> int:
    from components.data import span_usage
    from components.data.spans import SpanError

    print(f"data root: {config.data_root}   (span 0 is MNIST, the base data set: not stored here)")
    if not os.path.exists(config.metadata_path):
        runs, note = {}, f"no runs yet (no ML Metadata at {config.metadata_path})"
    else:
        try:
            runs, note = span_usage.runs_by_span(config.metadata_path), None
        except SpanError as error:
            runs, note = {}, str(error)
    sealed, open_count = store.sealed(), store.open_count()
    if not sealed and not open_count:
        print(f"no spans yet: add labelled digits with '{prog} add PATH', or send feedback from the page")
    else:
        print(f"{'span':>5}  {'source':<10} {'digits':>6}  " + " ".join(f"{d:>4}" for d in range(10))
              + f"  {'state':<28} used by")
        for info in sealed:
            used = ", ".join(runs.get(info.number, [])) or "-"
            print(f"{info.number:>5}  {info.source:<10} {info.count:>6}  {_labels(info.per_label)}  "
                  f"{'sealed ' + info.sealed_at[:19] + 'Z':<28} {used}")
        if open_count:
            print(f"{'open':>5}  {'-':<10} {open_count:>6}  {_labels(store.open_per_label())}  "
                  f"{'open (next run seals it)':<28} -")
    if note:
        print(note)
    return 0


def _add(store, config: PipelineConfig, args, prog: str) -> int:
    from components.data import image_import
    from components.data.spans import check_source

    try:
        check_source(args.source)
    except ValueError as error:
        print(f"{prog} add: --source: {error}", file=sys.stderr)
        return 2
    imported = image_import.import_path(args.path)
    for name, reason in imported.rejects:
        print(f"rejected {name}: {reason}")
    if not len(imported.images):
        print(f"{prog} add: nothing usable in {args.path}: {len(imported.rejects)} files rejected (reasons above); "
              f"lay images out as {args.path}/<digit>/<name>.png, one digit per image", file=sys.stderr)
        return 1
    before = {info.number for info in store.sealed()}
    info = store.add(imported.images, imported.labels, source=args.source, origin=os.path.abspath(args.path),
                     files=imported.files)
    if info.number in before:
        print(f"these {info.count} digits are span {info.number} already (sealed {info.sealed_at}): nothing added")
        return 0
    print(f"span {info.number} ({info.source}): {info.count} digits, {len(imported.rejects)} rejected")
    print("  label  " + " ".join(f"{d:>4}" for d in range(10)) + "\n  count  " + _labels(info.per_label))
    return 0


def _seal(store, config: PipelineConfig, args, prog: str) -> int:
    info = store.seal()
    if info is None:
        print("the open span is empty: nothing to seal")
        return 0
    print(f"sealed span {info.number}: {info.count} digits; the next run trains on it")
    print("  label  " + " ".join(f"{d:>4}" for d in range(10)) + "\n  count  " + _labels(info.per_label))
    return 0


def _drop(store, config: PipelineConfig, args, prog: str) -> int:
    span = args.span
    if span != "open":
        if not span.isdigit():
            print(f"{prog} drop: SPAN is a span number such as 3, or 'open'; got {span!r}", file=sys.stderr)
            return 2
        span = int(span)
        if span == 0:
            print(f"{prog} drop: span 0 is MNIST, the base data set: it is not stored in the data root and cannot "
                  f"be dropped", file=sys.stderr)
            return 2
    if span == "open":
        count = store.open_count()
        store.drop("open")
        print(f"dropped the open span: {count} digits deleted")
        return 0
    runs: List[str] = store.drop(span, force=args.force)
    used = f"; it was used by runs {', '.join(runs)}, whose models keep what they learned" if runs else ""
    print(f"dropped span {span}: its digits are deleted{used}")
    return 0


if __name__ == "__main__":
    sys.exit(main(prog="python -m pipeline.data_cli"))
