"""The `weakly` command: one parser; each package contributes its own subcommands.

Errors a user can fix (missing WordNet, a bad flag value, an unreadable file) print one line
naming what and where and exit 2; they never end in a stack trace.
"""

from __future__ import annotations

import argparse
import sys

from train import cli as train_cli
from train import eval_cli, export, probe
from wordnet_tools import WordNetNotFound
from wordnet_tools import cli as lexicon_cli

from . import demo, eval_index_cli, ingest_cli


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="weakly",
        description="Weakly supervised pretraining data: hashtags -> WordNet labels -> shards.",
    )
    subparsers = parser.add_subparsers(dest="command", required=True)
    lexicon_cli.add_commands(subparsers)
    ingest_cli.add_commands(subparsers, argv)
    demo.add_command(subparsers)
    eval_index_cli.add_command(subparsers)
    train_cli.add_command(subparsers)
    eval_cli.add_command(subparsers)
    export.add_command(subparsers)
    probe.add_command(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (WordNetNotFound, ValueError, FileNotFoundError, RuntimeError) as exc:
        print(f"weakly {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
