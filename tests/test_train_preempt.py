"""Preemption: a run stopped with --stop-after-steps and continued with --resume auto ends
bit-identical to one that was never stopped. Tiny model. The uninterrupted reference and the
first two segments run in-process (`train.cli.main`, the function `python -m train` calls); the
last segment resumes in a fresh `python -m train` process, as after a real preemption."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from train.checkpoint import load_checkpoint
from train.cli import main as train_main

ROOT = Path(__file__).resolve().parents[1]
torch.set_num_threads(1)  # as OMP_NUM_THREADS=1 does for the real processes


@pytest.fixture(scope="module")
def data_dir(fixture_dataset):
    return str(fixture_dataset(samples=80, seed=5))  # shared, read only


def _argv(data, out, *extra) -> list[str]:
    return [
        "--data", str(data), "--model", "tiny", "--out", str(out),
        "--batch-size", "6", "--image-size", "24", "--device", "cpu", "--shuffle-buffer", "16",
        "--log-every", "1", "--lr", "1.0", "--warmup-steps", "2", "--steps", "6",
        "--workers", "1", "--ckpt-every", "100", "--ema", "0.9", "--grad-clip", "5",
        "--keep-last", "2", *extra,
    ]  # fmt: skip


def _train(data, out, *extra) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "train", *_argv(data, out, *extra)]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    env.pop("WORLD_SIZE", None)
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


def test_stop_and_resume_ends_bit_identical(data_dir, tmp_path):
    assert train_main(_argv(data_dir, tmp_path / "full")) == 0
    part = tmp_path / "part"
    assert train_main(_argv(data_dir, part, "--stop-after-steps", "2")) == 0
    assert train_main(_argv(data_dir, part, "--resume", "auto", "--stop-after-steps", "3")) == 0
    ckpts = part / "checkpoints"
    assert load_checkpoint(ckpts / "last.pt")["step"] == 5
    assert sorted(p.name for p in ckpts.glob("ckpt-*.pt")) == [
        "ckpt-000000002.pt",
        "ckpt-000000005.pt",
    ]
    assert json.loads((part / "done-rank0.json").read_text())["finished"] is False
    proc = _train(data_dir, part, "--resume", "auto")
    assert proc.returncode == 0, proc.stderr
    assert "step 6/6" in proc.stdout  # the console progress line

    a = load_checkpoint(tmp_path / "full" / "checkpoints" / "last.pt")
    b = load_checkpoint(ckpts / "last.pt")
    assert a["step"] == b["step"] == 6
    for part_name in ("model", "ema"):
        assert a[part_name].keys() == b[part_name].keys()
        assert all(torch.equal(a[part_name][k], b[part_name][k]) for k in a[part_name])
    assert not all(torch.equal(a["model"][k], a["ema"][k]) for k in a["model"])
    done = [json.loads((d / "done-rank0.json").read_text()) for d in (tmp_path / "full", part)]
    assert done[0]["param_sha256"] == done[1]["param_sha256"] and done[1]["finished"]
    config = json.loads((part / "config.json").read_text())
    assert config["model"] == "tiny" and config["steps"] == 6 and config["total_steps"] == 6
