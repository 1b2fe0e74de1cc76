"""The one config loader (weakly_base/config.py): defaults < file < command line, decided by
whether a flag was given, with one clear line for every bad file or value."""

from __future__ import annotations

import argparse

import pytest

from weakly_base.config import ConfigError, parse_with_config


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="t")
    p.add_argument("inputs", nargs="*")
    p.add_argument("--config")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--name", default="run")
    p.add_argument("--mode", choices=["a", "b"], default="a")
    p.add_argument("--fast", action="store_true")
    p.add_argument("--no-eval", dest="eval", action="store_false")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--steps", type=int)
    group.add_argument("--samples", type=int)
    return p


def _write(tmp_path, text: str, suffix: str = ".yaml"):
    path = tmp_path / f"c{suffix}"
    path.write_text(text)
    return str(path)


def test_a_flag_given_with_its_default_value_beats_the_file(tmp_path):
    cfg = _write(tmp_path, "batch_size: 3\nlr: 0.5\n")
    args = parse_with_config(_parser(), ["--config", cfg, "--batch-size", "32"])
    assert args.batch_size == 32  # given on the command line, though equal to the default
    assert args.lr == 0.5  # not given: the file wins over the default


def test_defaults_fill_what_neither_gives(tmp_path):
    args = parse_with_config(_parser(), ["--config", _write(tmp_path, "name: x\n")])
    assert (args.batch_size, args.lr, args.name, args.mode, args.fast, args.eval) == (
        32, 0.1, "x", "a", False, True,
    )  # fmt: skip
    assert args.inputs == [] and args.steps is None


@pytest.mark.parametrize(
    ("suffix", "text"),
    [
        (".yaml", "batch-size: 7\nfast: true\neval: false\nmode: b\ninputs: [m1, m2]\n"),
        (".json", '{"batch_size": 7, "fast": true, "eval": false, "mode": "b", "inputs": ["m1", "m2"]}'),
        (".toml", 'batch_size = 7\nfast = true\neval = false\nmode = "b"\ninputs = ["m1", "m2"]\n'),
    ],
)  # fmt: skip
def test_yaml_json_and_toml_files(tmp_path, suffix, text):
    args = parse_with_config(_parser(), ["--config", _write(tmp_path, text, suffix)])
    assert (args.batch_size, args.fast, args.eval, args.mode) == (7, True, False, "b")
    assert args.inputs == ["m1", "m2"]


def test_positionals_on_the_command_line_beat_the_file(tmp_path):
    cfg = _write(tmp_path, "inputs: [from_file]\n")
    assert parse_with_config(_parser(), ["--config", cfg, "cli"]).inputs == ["cli"]


def test_strings_go_through_the_flags_type(tmp_path):
    args = parse_with_config(
        _parser(), ["--config", _write(tmp_path, "lr: '0.25'\nbatch_size: '4'\n")]
    )
    assert args.lr == 0.25 and args.batch_size == 4


def test_mutually_exclusive_flags_across_file_and_command_line(tmp_path):
    cfg = _write(tmp_path, "samples: 100\n")
    args = parse_with_config(_parser(), ["--config", cfg, "--steps", "5"])
    assert (args.steps, args.samples) == (5, None)  # the command line's choice of the pair wins
    both = _write(tmp_path, "samples: 100\nsteps: 5\n")
    with pytest.raises(ConfigError, match="samples and steps cannot be given together"):
        parse_with_config(_parser(), ["--config", both])


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("batch_size: many\n", "batch_size: 'many' is not valid"),
        ("batch_size: 2.5\n", "batch_size: expected an integer, got 2.5"),
        ("batch_size: true\n", "batch_size: expected an integer, got True"),
        ("lr: [1]\n", "lr: expected a number"),
        ("name: 3\n", "name: expected a string, got 3"),
        ("mode: c\n", "mode: 'c' is not one of a, b"),
        ("fast: 1\n", "fast: expected true or false"),
        ("not_an_option: 1\nalso_not: 2\n", "unknown options also_not, not_an_option"),
        ("config: other.yaml\n", "unknown options config"),
        ("- a\n- b\n", "expected a mapping"),
        ("a: [1,\n", "not valid YAML"),
    ],
)
def test_bad_values_are_one_line_naming_file_and_key(tmp_path, text, message):
    cfg = _write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        parse_with_config(_parser(), ["--config", cfg])
    assert message in str(info.value) and cfg in str(info.value)
    assert "\n" not in str(info.value)


def test_missing_file_and_code_carrying_yaml(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        parse_with_config(_parser(), ["--config", str(tmp_path / "absent.yaml")])
    evil = _write(tmp_path, "name: !!python/object/apply:os.system ['touch owned']\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        parse_with_config(_parser(), ["--config", evil])
    assert not (tmp_path / "owned").exists()


def test_without_config_it_is_plain_argparse():
    args = parse_with_config(_parser(), ["--lr", "0.3", "a"])
    expected = _parser().parse_args(["--lr", "0.3", "a"])
    assert vars(args) == vars(expected)
