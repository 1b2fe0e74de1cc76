"""`python -m weakly.cli_reference [--check]`: docs/CLI.md generated from the argparse parser.

Why generated from the parser's actions rather than from `--help` text: argparse's help layout
changes between Python versions and terminal widths, and a reference that must be byte-stable
(a test compares the committed file) cannot depend on either.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

DOC = Path(__file__).resolve().parents[1] / "docs" / "CLI.md"
HEADER = """# Command-line reference

Generated from the parser by `python -m weakly.cli_reference`; do not edit by hand
(`tests/test_docs.py` fails when this file is out of date). `weakly train` takes exactly the
arguments of `python -m train` and `torchrun ... -m train`.
"""


def _subcommands(parser: argparse.ArgumentParser) -> list[tuple[str, str, argparse.ArgumentParser]]:
    """(name, one-line help, parser) of each subcommand, in the order they were added."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {choice.dest: choice.help for choice in action._choices_actions}
            return [(name, helps.get(name) or "", p) for name, p in action.choices.items()]
    return []


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _option(action: argparse.Action) -> str:
    names = ", ".join(f"`{s}`" for s in action.option_strings) or f"`{action.dest}`"
    if action.option_strings and action.nargs != 0:
        if action.choices:
            names += " {" + ",".join(map(str, action.choices)) + "}"
        else:
            names += " " + (action.metavar or action.dest.upper())
    elif not action.option_strings and action.nargs in ("*", "+", "?"):
        names += " ..." if action.nargs != "?" else " (optional)"
    return names


def _default(action: argparse.Action) -> str:
    """The default, unless the help already says it (e.g. one that depends on the machine)."""
    if action.nargs == 0 or action.default in (None, argparse.SUPPRESS, "", []):
        return ""
    if "default" in (action.help or ""):
        return ""
    return f"`{action.default}`"


def _table(parser: argparse.ArgumentParser) -> list[str]:
    rows = [
        action
        for action in parser._actions
        if not isinstance(action, (argparse._HelpAction, argparse._SubParsersAction))
        and action.help != argparse.SUPPRESS  # hidden from --help: hidden here too
    ]
    if not rows:
        return []
    lines = ["| argument | default | meaning |", "| --- | --- | --- |"]
    for action in rows:
        required = (
            " (required)" if getattr(action, "required", False) and action.option_strings else ""
        )
        lines.append(
            f"| {_cell(_option(action))} | {_cell(_default(action))} "
            f"| {_cell(((action.help or '') + required).strip())} |"
        )
    return lines


def _section(path: list[str], help_line: str, parser: argparse.ArgumentParser) -> list[str]:
    out = [f"{'#' * min(len(path) + 1, 4)} `{' '.join(path)}`", ""]
    if help_line:
        out += [help_line[0].upper() + help_line[1:] + ".", ""]
    table = _table(parser)
    if table:
        out += [*table, ""]
    for name, sub_help, sub in _subcommands(parser):
        out += _section([*path, name], sub_help, sub)
    return out


def render() -> str:
    from .cli import build_parser

    lines = [HEADER]
    weakly = build_parser("all")
    lines += ["## Commands", ""]
    lines += [
        f"- [`weakly {name}`](#weakly-{name}): {text}" for name, text, _ in _subcommands(weakly)
    ]
    lines += [""]
    for name, text, sub in _subcommands(weakly):
        lines += _section(["weakly", name], text, sub)
    return "\n".join(lines).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m weakly.cli_reference", description=__doc__)
    parser.add_argument("--out", default=str(DOC))
    parser.add_argument("--check", action="store_true", help="exit 1 if the file is not current")
    args = parser.parse_args(argv)
    text, path = render(), Path(args.out)
    if args.check:
        current = path.exists() and path.read_text() == text
        if not current:
            print(f"{path} is out of date: run python -m weakly.cli_reference", file=sys.stderr)
        return 0 if current else 1
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
