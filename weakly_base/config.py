"""One config loader for every command: defaults < `--config FILE` < the command line.

Why by *whether a flag was given* and not by comparing values: a flag given on the command line
with its default value (`--batch-size 32`) must still beat the file, and comparing a value with
the default cannot tell "given" from "left alone". argparse leaves alone any attribute already
present on the namespace it fills, so every destination is first set to a marker; whatever still
holds the marker afterwards was not on the command line.

Files are YAML, JSON or TOML (by suffix; YAML for anything else), keys named like the long
options with `-` or `_`. Every error (missing file, bad syntax, unknown key, wrong type, a value
outside the flag's choices) is one `ConfigError` line naming the file and the key.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """A config file or a value in it cannot be used; the message names file and key."""


_NOT_GIVEN = object()
CONFIG_DEST = "config"


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The file's mapping, keys with `-` turned into `_`; plain data only (no YAML tags)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"--config {path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"--config {path}: cannot be read ({exc})") from None
    try:
        if path.suffix == ".json":
            values = json.loads(text)
        elif path.suffix == ".toml":
            try:
                import tomllib
            except ImportError:  # Python 3.10
                raise ConfigError(f"--config {path}: TOML needs Python 3.11 or newer") from None
            values = tomllib.loads(text)
        else:
            values = yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:  # JSONDecodeError, TOMLDecodeError: ValueError
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"--config {path}: not valid {_kind(path)} ({first})") from None
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise ConfigError(f"--config {path}: expected a mapping of option names to values")
    return {str(k).replace("-", "_"): v for k, v in values.items()}


def _kind(path: Path) -> str:
    return {".json": "JSON", ".toml": "TOML"}.get(path.suffix, "YAML")


def _is_bool_action(action: argparse.Action) -> bool:
    return isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction))


def coerce_value(action: argparse.Action, value: Any, where: str) -> Any:
    """A config value checked against what the flag accepts on the command line.

    Strings go through the flag's own `type` (so `"0.5"` works where `0.5` does); numbers must
    be numbers of the right kind (a bool is not an int); a flag without a value takes a bool.
    For a `store_false` flag (`--no-eval`, dest `eval`) the file gives the destination's value.
    """
    name = f"{where}: {action.dest}"
    if _is_bool_action(action):
        if not isinstance(value, bool):
            raise ConfigError(f"{name}: expected true or false, got {value!r}")
        return value
    if action.nargs in ("*", "+"):
        items = value if isinstance(value, list) else [value]
        return [_coerce_one(action, v, name) for v in items]
    return _coerce_one(action, value, name)


def _coerce_one(action: argparse.Action, value: Any, name: str) -> Any:
    kind = action.type
    if value is None:
        return None
    if isinstance(value, str) and kind not in (None, str):
        try:
            value = kind(value)
        except (TypeError, ValueError, argparse.ArgumentTypeError) as exc:
            raise ConfigError(f"{name}: {value!r} is not valid ({exc})") from None
    elif kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{name}: expected an integer, got {value!r}")
    elif kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{name}: expected a number, got {value!r}")
        value = float(value)
    elif kind in (None, str):
        if not isinstance(value, str):
            raise ConfigError(f"{name}: expected a string, got {value!r}")
    if action.choices is not None and value not in action.choices:
        choices = ", ".join(map(str, action.choices))
        raise ConfigError(f"{name}: {value!r} is not one of {choices}")
    return value


def _actions(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {
        a.dest: a
        for a in parser._actions
        if a.dest not in (argparse.SUPPRESS, "help") and not isinstance(a, argparse._HelpAction)
    }


def parse_with_config(
    parser: argparse.ArgumentParser, argv: list[str] | None
) -> argparse.Namespace:
    """Parse `argv`, then fill every option not given on it from `--config` (if any), then
    from the parser's defaults. Mutually exclusive flags stay exclusive across the two: a file
    value is dropped when the command line gave another member of its group."""
    actions = _actions(parser)
    marked = argparse.Namespace(**dict.fromkeys(actions, _NOT_GIVEN))
    args = parser.parse_args(argv, namespace=marked)
    given = {d for d in actions if getattr(args, d) is not _NOT_GIVEN}
    # A positional with nargs='*' is always "consumed", even by nothing: given only if non-empty.
    for dest, action in actions.items():
        if dest in given and not action.option_strings and getattr(args, dest) in ([], None):
            given.discard(dest)
    path = getattr(args, CONFIG_DEST, None) if CONFIG_DEST in given else None
    from_file: dict[str, Any] = {}
    if path:
        raw = read_config_file(path)
        unknown = sorted(k for k in raw if k not in actions or k == CONFIG_DEST)
        if unknown:
            raise ConfigError(f"--config {path}: unknown options {', '.join(unknown)}")
        from_file = {k: coerce_value(actions[k], v, f"--config {path}") for k, v in raw.items()}
        for group in parser._mutually_exclusive_groups:
            dests = {a.dest for a in group._group_actions}
            if dests & given:
                for d in dests - given:
                    from_file.pop(d, None)
            elif len(dests & from_file.keys()) > 1:
                names = " and ".join(sorted(dests & from_file.keys()))
                raise ConfigError(f"--config {path}: {names} cannot be given together")
    for dest, action in actions.items():
        if dest in given:
            continue
        if dest in from_file:
            setattr(args, dest, from_file[dest])
        else:
            default = action.default
            if isinstance(default, str) and action.type not in (None, str):
                default = action.type(default)  # what argparse itself does with str defaults
            setattr(args, dest, [] if default is None and action.nargs == "*" else default)
    return args
