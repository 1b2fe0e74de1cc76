"""The training loop: exact resume, checkpoints, config, CLI, and real multi-process runs."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from train.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from train.cli import build_parser
from train.config import TrainConfig
from train.loop import train
from weakly.fixtures import build_fixture
from weakly_base.config import ConfigError, parse_with_config

ROOT = Path(__file__).resolve().parents[1]
torch.set_num_threads(1)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return str(build_fixture(tmp_path_factory.mktemp("loop") / "ds", samples=100, seed=7))


def _argv(data, out, *extra):
    return [
        "--data", str(data), "--model", "tiny", "--out", str(out), "--batch-size", "6",
        "--image-size", "24", "--device", "cpu", "--shuffle-buffer", "16", "--log-every", "2",
        "--lr", "1.0", "--warmup-steps", "2", *extra,
    ]  # fmt: skip


def _config(data, out, **extra) -> TrainConfig:
    """The Python API counterpart of `_argv`."""
    return TrainConfig(
        data=str(data), model="tiny", out=str(out), batch_size=6, image_size=24, device="cpu",
        shuffle_buffer=16, log_every=2, lr=1.0, warmup_steps=2, **extra,
    )  # fmt: skip


def _keys(run_dir):
    lines = (Path(run_dir) / "keys-rank0.jsonl").read_text().splitlines()
    return {row["step"]: row["keys"] for row in map(json.loads, lines)}


def test_resume_continues_exactly_like_an_uninterrupted_run(data_dir, tmp_path):
    common = {"steps": 7, "workers": 2, "record_keys": True}
    full = train(_config(data_dir, tmp_path / "full", **common, ckpt_every=3))
    part = tmp_path / "part"
    part.mkdir()
    (part / "checkpoints").mkdir()
    for name in ("ckpt-000000003.pt", "ckpt-000000003.pt.sha256"):
        shutil.copy(tmp_path / "full" / "checkpoints" / name, part / "checkpoints" / name)
    resumed = train(_config(data_dir, part, **common, ckpt_every=100, resume="auto"))
    want, got = _keys(tmp_path / "full"), _keys(part)
    assert sorted(got) == [4, 5, 6, 7]
    assert all(got[s] == want[s] for s in got)
    assert resumed["step"] == full["step"] == 7
    assert resumed["param_sha256"] == full["param_sha256"]
    a = load_checkpoint(tmp_path / "full" / "checkpoints" / "ckpt-000000007.pt")["model"]
    b = load_checkpoint(part / "checkpoints" / "last.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_torn_checkpoint_is_never_resumed(tmp_path):
    save_checkpoint(tmp_path, 1, {"step": 1})
    save_checkpoint(tmp_path, 2, {"step": 2})
    ckpts = tmp_path / "checkpoints"
    assert load_checkpoint(ckpts / "last.pt")["step"] == 2
    with open(ckpts / "ckpt-000000002.pt", "ab") as f:
        f.write(b"torn")
    (ckpts / "ckpt-000000003.pt").write_bytes(b"no checksum file")
    assert latest_checkpoint(tmp_path).name == "ckpt-000000001.pt"
    with pytest.raises(ValueError, match="checksum"):
        load_checkpoint(ckpts / "ckpt-000000002.pt")


def test_keep_last_prunes_old_numbered_checkpoints(tmp_path):
    for step in range(1, 6):
        save_checkpoint(tmp_path, step, {"step": step}, keep_last=2)
    names = sorted(p.name for p in (tmp_path / "checkpoints").glob("*.pt"))
    assert names == ["ckpt-000000004.pt", "ckpt-000000005.pt", "last.pt"]
    assert load_checkpoint(tmp_path / "checkpoints" / "last.pt")["step"] == 5


def test_config_file_fills_flags_and_flags_win(data_dir, tmp_path):
    cfg = tmp_path / "run.yaml"
    cfg.write_text(f"data: {data_dir}\nmodel: tiny\nout: {tmp_path}/o\nsteps: 3\nlr: 0.5\n")
    args = parse_with_config(build_parser(), ["--config", str(cfg), "--lr", "0.2"])
    assert (args.model, args.steps, args.lr) == ("tiny", 3, 0.2)
    cfg.write_text("modle: tiny\n")
    with pytest.raises(ConfigError, match="unknown options modle"):
        parse_with_config(build_parser(), ["--config", str(cfg)])


def test_weakly_train_subcommand_uses_the_same_arguments(data_dir, tmp_path):
    from weakly.cli import parse

    args = parse(["train", *_argv(data_dir, tmp_path, "--steps", "2")])
    assert args.command == "train" and args.model == "tiny" and args.steps == 2
    assert callable(args.func)


def _env():
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    env.pop("WORLD_SIZE", None)
    return env


def test_python_m_train_end_to_end(data_dir, tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "train", *_argv(data_dir, out, "--steps", "4", "--workers", "1")]
    proc = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [2, 4]
    for r in rows:
        assert {"loss", "lr", "samples_per_s", "data_wait_frac"} <= set(r)
        assert r["loss"] > 0 and 0 <= r["data_wait_frac"] <= 1
    ckpt = torch.load(out / "checkpoints" / "last.pt", weights_only=True)
    assert ckpt["step"] == 4 and len(ckpt["wnids"]) == 12 and len(ckpt["loader"]) == 1
    assert set(ckpt) >= {"model", "optimizer", "scheduler", "args"}


def test_bad_input_is_one_line_error(tmp_path, capsys):
    from train.cli import main

    assert main(_argv(tmp_path / "nope", tmp_path / "o", "--steps", "1")) == 2
    err = capsys.readouterr().err
    assert err.startswith("train: error:") and "dataset.json" in err and err.count("\n") == 1


def test_torchrun_two_ranks_stay_in_sync(data_dir, tmp_path):
    out = tmp_path / "ddp"
    torchrun = Path(sys.executable).with_name("torchrun")
    cmd = [
        str(torchrun), "--standalone", "--nproc_per_node", "2", "-m", "train",
        *_argv(data_dir, out, "--steps", "5", "--workers", "0", "--record-keys", "--ckpt-every", "3"),
    ]  # fmt: skip
    proc = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    done = [json.loads((out / f"done-rank{r}.json").read_text()) for r in (0, 1)]
    assert done[0]["step"] == done[1]["step"] == 5
    assert done[0]["param_sha256"] == done[1]["param_sha256"]
    keys0 = (out / "keys-rank0.jsonl").read_text()
    keys1 = (out / "keys-rank1.jsonl").read_text()
    assert len(keys0.splitlines()) == len(keys1.splitlines()) == 5 and keys0 != keys1
    ckpt = load_checkpoint(out / "checkpoints" / "ckpt-000000003.pt")
    assert [s["rank"] for s in ckpt["loader"]] == [0, 1]
