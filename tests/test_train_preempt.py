"""Preemption: a run stopped with --stop-after-steps and continued with --resume auto ends
bit-identical to one that was never stopped. Real `python -m train` processes, tiny model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from train.checkpoint import load_checkpoint
from weakly.fixtures import build_fixture

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return str(build_fixture(tmp_path_factory.mktemp("preempt") / "ds", samples=80, seed=5))


def _train(data, out, *extra) -> subprocess.CompletedProcess:
    cmd = [
        sys.executable, "-m", "train", "--data", str(data), "--model", "tiny", "--out", str(out),
        "--batch-size", "6", "--image-size", "24", "--device", "cpu", "--shuffle-buffer", "16",
        "--log-every", "1", "--lr", "1.0", "--warmup-steps", "2", "--steps", "6",
        "--workers", "1", "--ckpt-every", "100", "--ema", "0.9", "--grad-clip", "5",
        "--keep-last", "2", *extra,
    ]  # fmt: skip
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    env.pop("WORLD_SIZE", None)
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


def test_stop_and_resume_ends_bit_identical(data_dir, tmp_path):
    full = _train(data_dir, tmp_path / "full")
    assert full.returncode == 0, full.stderr
    part = tmp_path / "part"
    for extra in (["--stop-after-steps", "2"], ["--resume", "auto", "--stop-after-steps", "3"]):
        proc = _train(data_dir, part, *extra)
        assert proc.returncode == 0, proc.stderr
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
