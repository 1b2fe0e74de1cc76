"""The `weakly` command: one umbrella over the subcommands of every package.

Each subcommand's module is imported only when that subcommand runs (or its `--help` is
asked for), so the data side (`lexicon`, `synth`, `eval-index`, `ingest`, `demo` up to its
training step) runs where torch is not installed, and `weakly --help` costs no heavy import.
A subcommand whose package is missing says which extra to install, in one line.

Errors a user can fix (missing WordNet, a bad flag value, an unreadable file) print one line
naming what and where and exit 2; they never end in a stack trace.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from dataclasses import dataclass

from weakly_base.config import parse_with_config


@dataclass(frozen=True)
class Subcommand:
    """Where a subcommand lives: `register(subparsers)` in `module` adds its parser."""

    name: str
    help: str
    module: str
    register: str = "add_command"
    extra: str = "ingest"  # the pip extra whose packages it needs


SUBCOMMANDS: tuple[Subcommand, ...] = (
    Subcommand("lexicon", "WordNet lexicon: build, lookup, stats", "wordnet_tools.cli", "add_commands"),
    Subcommand("ingest", "manifests -> weighted WebDataset shards (Ray)", "pipeline.ingest_cli"),
    Subcommand("synth", "synthetic manifest of real-looking photos with tags", "weakly.synth_cli", extra="photos"),
    Subcommand("demo", "run the end-to-end demo on bundled data", "weakly.demo", extra="all"),
    Subcommand("eval-index", "build and query the eval-set near-duplicate index", "pipeline.eval_index_cli"),
    Subcommand("train", "pretrain a model on weakly shards", "train.cli", extra="train"),
    Subcommand("eval", "hashtag top-1/top-5 and mAP of a checkpoint", "train.eval_cli", extra="train"),
    Subcommand("export", "checkpoint trunk -> torchvision state_dict", "train.export", extra="train"),
    Subcommand("probe", "linear-probe transfer of a checkpoint's trunk", "train.probe", extra="train"),
)  # fmt: skip
BY_NAME = {c.name: c for c in SUBCOMMANDS}


class MissingExtra(RuntimeError):
    """A subcommand's module needs a package that is not installed."""


def load_subcommand(command: Subcommand, subparsers: argparse._SubParsersAction) -> None:
    """Import the subcommand's module and let it add its full parser."""
    try:
        module = importlib.import_module(command.module)
    except ModuleNotFoundError as exc:
        raise missing_extra(command, exc) from None
    getattr(module, command.register)(subparsers)


OWN_PACKAGES = ("weakly", "weakly_base", "pipeline", "train", "wordnet_tools")


def missing_extra(command: Subcommand, exc: ModuleNotFoundError) -> Exception:
    """One line naming the missing package and the extra that brings it; our own missing
    modules are bugs, not installation choices, and keep their traceback."""
    if not exc.name or exc.name.split(".")[0] in OWN_PACKAGES:
        return exc
    return MissingExtra(
        f"weakly {command.name} needs the Python package {exc.name!r}, which is not "
        f"installed here: pip install 'weakly[{command.extra}]'"
    )


def build_parser(load: str | tuple[str, ...] = ()) -> argparse.ArgumentParser:
    """The umbrella parser; the subcommands named in `load` ("all": every one) get their full
    arguments, the others only their name and one-line help."""
    parser = argparse.ArgumentParser(
        prog="weakly",
        description="Weakly supervised pretraining: hashtags -> WordNet labels -> shards -> models.",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    wanted = {c.name for c in SUBCOMMANDS} if load == "all" else set(load)
    for command in SUBCOMMANDS:
        if command.name in wanted:
            load_subcommand(command, subparsers)
        else:
            subparsers.add_parser(command.name, help=command.help, add_help=False)
    return parser


def parse(argv: list[str]) -> argparse.Namespace:
    """Parse with the one config loader: for a subcommand that has `--config`, flags given on
    the command line beat the file, which beats the defaults (weakly_base/config.py)."""
    name = argv[0] if argv and argv[0] in BY_NAME else None
    parser = build_parser((name,) if name else ())
    if name is None:
        return parser.parse_args(argv)  # --help, or argparse's own "invalid choice" line
    sub = _subparser(parser, name)
    if any(a.dest == "config" for a in sub._actions):
        args = parse_with_config(sub, argv[1:])
        args.command = name
        return args
    return parser.parse_args(argv)


def _subparser(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action.choices[name]
    raise KeyError(name)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    from wordnet_tools.locate import WordNetNotFound

    try:
        args = parse(argv)
        try:
            return int(args.func(args) or 0)
        except ModuleNotFoundError as exc:  # e.g. `weakly train` reaching for torch
            raise missing_extra(BY_NAME[args.command], exc) from None
    except MissingExtra as exc:
        print(f"weakly: error: {exc}", file=sys.stderr)
        return 2
    except (WordNetNotFound, ValueError, FileNotFoundError, RuntimeError) as exc:
        name = argv[0] if argv else "weakly"
        print(f"weakly {name}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C: what is committed stays, a rerun resumes from it
        name = argv[0] if argv else "weakly"
        print(f"weakly {name}: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
