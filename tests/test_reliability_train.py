"""The trainer under SIGKILL and torn or corrupted checkpoints: real `python -m train` processes
killed at arbitrary points (mid step, and the moment a checkpoint write starts), resumed with
`--resume auto`, ending bit-identical to a run that was never killed. The never-killed reference
and the final resume run in-process (`train.cli.main`); every killed run is a real process."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from train.checkpoint import latest_checkpoint, load_checkpoint
from train.cli import main as train_main

ROOT = Path(__file__).resolve().parents[1]
torch.set_num_threads(1)  # as OMP_NUM_THREADS=1 does for the real processes
STEPS = 12


@pytest.fixture(scope="module")
def data_dir(fixture_dataset):
    return str(fixture_dataset(samples=80, seed=5))  # shared, read only


def _cmd(data, out, *extra) -> list[str]:
    return [
        sys.executable, "-m", "train", "--data", str(data), "--model", "tiny", "--out", str(out),
        "--batch-size", "6", "--image-size", "24", "--device", "cpu", "--shuffle-buffer", "16",
        "--log-every", "1", "--lr", "1.0", "--warmup-steps", "2", "--steps", str(STEPS),
        "--workers", "1", "--ckpt-every", "1", "--ema", "0.9", "--keep-last", "3", *extra,
    ]  # fmt: skip


ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
ENV.pop("WORLD_SIZE", None)


@pytest.fixture(scope="module")
def reference(data_dir, tmp_path_factory):
    """The never-killed run, in-process (`train.cli.main`, what `python -m train` calls)."""
    out = tmp_path_factory.mktemp("kill") / "reference"
    assert train_main(_cmd(data_dir, out)[3:]) == 0
    return out


def _same_weights(a_dir: Path, b_dir: Path) -> None:
    a = load_checkpoint(a_dir / "checkpoints" / "last.pt")
    b = load_checkpoint(b_dir / "checkpoints" / "last.pt")
    assert a["step"] == b["step"] == STEPS
    for part in ("model", "ema"):
        assert all(torch.equal(a[part][k], b[part][k]) for k in a[part])
    done = [json.loads((d / "done-rank0.json").read_text()) for d in (a_dir, b_dir)]
    assert done[0]["param_sha256"] == done[1]["param_sha256"] and done[1]["finished"]


def _kill_when(data, out, ready) -> str:
    """Start a run, SIGKILL it the moment `ready(names in checkpoints/)` holds; say what the
    folder held at that moment."""
    proc = subprocess.Popen(
        _cmd(data, out, "--resume", "auto"), env=ENV, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    folder = out / "checkpoints"
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            names = os.listdir(folder) if folder.is_dir() else []
            if ready(names):
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
                return " ".join(sorted(names))
            assert proc.poll() is None, "the run finished before it could be killed"
            time.sleep(0.001)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    raise AssertionError("kill condition never held")


def test_sigkill_mid_step_and_mid_checkpoint_write(data_dir, reference, tmp_path):
    out = tmp_path / "killed"
    # 1: as soon as step 4's checkpoint is committed, i.e. inside step 5 or publishing last.pt
    _kill_when(data_dir, out, lambda names: "ckpt-000000004.pt.sha256" in names)
    assert load_checkpoint(latest_checkpoint(out))["step"] >= 4
    # 2: the moment a checkpoint write has begun (a .tmp exists) at step 6 or later
    seen = _kill_when(
        data_dir,
        out,
        lambda names: any(n.endswith(".tmp") and "ckpt-000000006" <= n < "d" for n in names),
    )
    torn = [n for n in seen.split() if n.endswith(".tmp") and n.startswith("ckpt-")]
    assert torn, seen
    step = load_checkpoint(latest_checkpoint(out))["step"]
    if torn[0].endswith(".pt.tmp"):  # killed inside torch.save: the previous step is resumed
        assert step == int(torn[0][5:14]) - 1, seen
    else:  # killed writing its marker: that checkpoint is not committed yet either
        assert int(torn[0][5:14]) - 1 <= step <= int(torn[0][5:14]), seen
    # 3: then the newest good checkpoint rots on disk: resume falls back one more step
    newest = latest_checkpoint(out)
    if newest.name != "last.pt":
        newest.write_bytes(_flip(newest.read_bytes()))
        assert load_checkpoint(latest_checkpoint(out))["step"] < step
    # Finish from what the killed processes left on disk (in-process: nothing to kill here).
    assert train_main(_cmd(data_dir, out, "--resume", "auto")[3:]) == 0
    _same_weights(reference, out)


def _torn_copy(reference: Path, tmp_path: Path, name: str) -> Path:
    out = tmp_path / name
    shutil.copytree(reference, out)
    (out / "done-rank0.json").unlink()
    return out


def test_torn_and_corrupted_checkpoints_fall_back_to_the_previous(reference, tmp_path):
    def newest(out: Path) -> Path:
        return out / "checkpoints" / f"ckpt-{STEPS:09d}.pt"

    damage = {
        "flipped": lambda p: p.write_bytes(_flip(p.read_bytes())),
        "truncated": lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]),
        "no_marker": lambda p: p.with_name(p.name + ".sha256").unlink(),
        "empty": lambda p: p.write_bytes(b""),
    }
    for name, hurt in damage.items():
        out = _torn_copy(reference, tmp_path, name)
        hurt(newest(out))
        (out / "checkpoints" / "ckpt-000000013.pt.tmp").write_bytes(b"half a checkpoint")
        found = latest_checkpoint(out)
        assert found is not None and found.name == f"ckpt-{STEPS - 1:09d}.pt", name
        if name != "no_marker":
            with pytest.raises(ValueError, match="checksum"):
                load_checkpoint(newest(out))
    # every numbered one torn: last.pt (here a separate copy) is the fallback; torn too: none
    out = _torn_copy(reference, tmp_path, "all")
    for p in (out / "checkpoints").glob("ckpt-*.pt"):
        p.write_bytes(_flip(p.read_bytes()))
    assert latest_checkpoint(out).name == "last.pt"
    last = out / "checkpoints" / "last.pt"
    last.write_bytes(_flip(last.read_bytes()))
    assert latest_checkpoint(out) is None


def _flip(data: bytes) -> bytes:
    middle = len(data) // 2
    return data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1 :]
