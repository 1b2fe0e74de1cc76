"""Optimiser options, non-finite steps, TOML configs, and one clear message per bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from train.cli import build_parser, main
from train.models import TinyNet
from train.optim import lr_factor, param_groups
from weakly.fixtures import build_fixture, write_index_table
from weakly_base.config import parse_with_config
from weakly_base.index_tables import SHARDS, read_index

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def source_dir(tmp_path_factory):
    return build_fixture(tmp_path_factory.mktemp("options") / "ds", samples=40, seed=3)


@pytest.fixture
def data_dir(source_dir, tmp_path):
    """A private copy, so that a test may break it."""
    return shutil.copytree(source_dir, tmp_path / "ds")


def _argv(data, out, *extra):
    return [
        "--data", str(data), "--model", "tiny", "--out", str(out), "--batch-size", "4",
        "--image-size", "16", "--device", "cpu", "--shuffle-buffer", "8", "--log-every", "1",
        "--workers", "0", "--steps", "3", *extra,
    ]  # fmt: skip


def _error(capsys, argv) -> str:
    """Run the CLI expecting exit code 2 and a single `train: error:` line; return it."""
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("train: error:") and err.count("\n") == 1, err
    assert "Traceback" not in err
    return err


def test_no_weight_decay_on_norm_layers_and_biases():
    model = TinyNet(5)
    decay, no_decay = param_groups(model, 1e-4)
    assert decay["weight_decay"] == 1e-4 and no_decay["weight_decay"] == 0.0
    names = {id(p): n for n, p in model.named_parameters()}
    assert {names[id(p)] for p in decay["params"]} == {
        "features.0.weight",
        "features.3.weight",
        "features.6.weight",
        "fc.weight",
    }
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))
    assert all(p.ndim == 1 for p in no_decay["params"])


def test_step_schedule_halves():
    f = [lr_factor(s, 2, 42, "step", halve_every=10) for s in range(42)]
    assert f[:2] == [0.5, 1.0] and f[2] == f[11] == 1.0
    assert f[12] == 0.5 and f[22] == 0.25 and f[41] == 0.125
    assert lr_factor(99, 0, 100, "step") == 0.125  # default: four quarters of the run


def test_nonfinite_loss_stops_naming_the_step(data_dir, tmp_path, capsys):
    err = _error(capsys, _argv(data_dir, tmp_path / "o", "--lr", "1e12", "--steps", "6"))
    assert "at step" in err and "--skip-nonfinite" in err


def test_skip_nonfinite_skips_and_counts(data_dir, tmp_path, capsys):
    out = tmp_path / "o"
    assert main(_argv(data_dir, out, "--lr", "1e12", "--steps", "6", "--skip-nonfinite")) == 0
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["step"] == 6 and rows[-1]["nonfinite_skipped"] > 0
    assert "skipped" in capsys.readouterr().out
    done = json.loads((out / "done-rank0.json").read_text())
    assert done["nonfinite_skipped"] == rows[-1]["nonfinite_skipped"]


def test_toml_config(tmp_path):
    cfg = tmp_path / "run.toml"
    cfg.write_text('data = "d"\nmodel = "tiny"\nout = "o"\nsteps = 3\nschedule = "step"\n')
    args = parse_with_config(build_parser(), ["--config", str(cfg), "--steps", "5"])
    assert (args.model, args.steps, args.schedule) == ("tiny", 5, "step")


def test_missing_or_empty_dataset_folder(tmp_path, capsys):
    assert "dataset.json" in _error(capsys, _argv(tmp_path / "nope", tmp_path / "o"))
    (tmp_path / "empty").mkdir()
    assert "dataset.json" in _error(capsys, _argv(tmp_path / "empty", tmp_path / "o"))


def test_empty_shard_folder(data_dir, tmp_path, capsys):
    for tar in Path(data_dir, "shards").glob("*.tar"):
        tar.unlink()
    err = _error(capsys, _argv(data_dir, tmp_path / "o"))
    assert "shards listed in index/shards are missing" in err


def test_shard_listed_in_index_but_missing(data_dir, tmp_path, capsys):
    victim = sorted(Path(data_dir, "shards").glob("*.tar"))[0]
    victim.unlink()
    err = _error(capsys, _argv(data_dir, tmp_path / "o"))
    assert "1 of" in err and victim.name in err


def test_altered_shard_fails_verify_shards(data_dir, tmp_path, capsys):
    victim = sorted(Path(data_dir, "shards").glob("*.tar"))[0]
    with open(victim, "ab") as f:
        f.write(b"\0" * 512)
    err = _error(capsys, _argv(data_dir, tmp_path / "o", "--verify-shards"))
    assert "sha256" in err and victim.name in err


def test_other_format_version(data_dir, tmp_path, capsys):
    meta_path = Path(data_dir, "dataset.json")
    meta = json.loads(meta_path.read_text())
    meta["format_version"] = 3
    meta_path.write_text(json.dumps(meta))
    err = _error(capsys, _argv(data_dir, tmp_path / "o"))
    assert "version 3" in err and "this code reads 'weakly-shards' versions 1, 2" in err


def test_index_with_no_shards_for_the_split(data_dir, tmp_path, capsys):
    write_index_table(data_dir, SHARDS, read_index(data_dir, SHARDS).schema.empty_table())
    assert "no shards for split" in _error(capsys, _argv(data_dir, tmp_path / "o"))


def test_unknown_model(data_dir, tmp_path, capsys):
    argv = _argv(data_dir, tmp_path / "o")
    argv[argv.index("tiny")] = "resnet9000"
    assert "unknown model 'resnet9000'" in _error(capsys, argv)


def test_batch_larger_than_dataset(data_dir, tmp_path, capsys):
    err = _error(capsys, _argv(data_dir, tmp_path / "o", "--batch-size", "41"))
    assert "larger than the 40 samples" in err


def test_nonsense_numbers(data_dir, tmp_path, capsys):
    assert "--workers must be at least 0" in _error(
        capsys, _argv(data_dir, tmp_path / "o", "--workers", "-1")
    )


def test_resume_with_other_streams_is_refused(data_dir, tmp_path, capsys):
    """More ranks x workers than shards is fine (every stream is endless and visits are dealt
    round-robin, so no stream ever runs dry); what cannot work is resuming with another
    ranks x workers layout, since the saved stream states would not map onto the new ones."""
    out = tmp_path / "o"
    assert main(_argv(data_dir, out, "--steps", "2", "--workers", "0")) == 0
    capsys.readouterr()
    err = _error(capsys, _argv(data_dir, out, "--resume", "auto", "--workers", "2"))
    assert "n_streams" in err and "same value" in err


def test_more_streams_than_shards_trains(data_dir, tmp_path):
    """Two ranks' worth of streams would be the same story: each deals itself every n-th visit
    of an endless sequence, so streams outnumbering shards only means shards are revisited."""
    one = read_index(data_dir, SHARDS).slice(0, 1)
    write_index_table(data_dir, SHARDS, one)  # one shard left, two streams
    assert main(_argv(data_dir, tmp_path / "o", "--workers", "2", "--batch-size", "2")) == 0


def test_tensorboard_only_when_installed(data_dir, tmp_path, capsys):
    out = tmp_path / "o"
    assert main(_argv(data_dir, out, "--steps", "1", "--tensorboard")) == 0
    try:
        import torch.utils.tensorboard  # noqa: F401
    except ImportError:
        assert "tensorboard is not installed" in capsys.readouterr().err
    else:
        assert any((out / "tensorboard").iterdir())
