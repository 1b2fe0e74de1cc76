"""Checkpoints: one dict per file, written atomically, verified by a checksum file.

The checksum file is written (atomically) after the checkpoint is in place, so it is the commit
marker: a checkpoint without a matching checksum is a crash leftover and is never resumed from.
Only tensors and plain containers are stored, so `torch.load(weights_only=True)` can read it.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

import torch

_NAME = re.compile(r"^ckpt-(\d{9})\.pt$")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_atomic(path: Path, write) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def checkpoint_path(run_dir: Path, step: int) -> Path:
    return Path(run_dir) / f"ckpt-{step:09d}.pt"


def save_checkpoint(run_dir: str | os.PathLike, step: int, state: dict) -> Path:
    path = checkpoint_path(Path(run_dir), step)
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_atomic(path, lambda f: torch.save(state, f))
    digest = sha256_file(path)
    _write_atomic(
        path.with_name(path.name + ".sha256"),
        lambda f: f.write(f"{digest}  {path.name}\n".encode()),
    )
    return path


def is_valid(path: Path) -> bool:
    marker = path.with_name(path.name + ".sha256")
    if not path.is_file() or not marker.is_file():
        return False
    want = marker.read_text().split()[0] if marker.read_text().strip() else ""
    return want == sha256_file(path)


def latest_checkpoint(run_dir: str | os.PathLike) -> Path | None:
    """Newest checkpoint whose checksum matches; older ones are the fallback for a torn write."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return None
    found = sorted(
        (int(m.group(1)), p) for p in run_dir.iterdir() if (m := _NAME.match(p.name)) is not None
    )
    for _, path in reversed(found):
        if is_valid(path):
            return path
    return None


def load_checkpoint(path: str | os.PathLike) -> dict:
    path = Path(path)
    if not is_valid(path):
        raise ValueError(f"{path}: checksum missing or wrong; not resuming from a torn checkpoint")
    return torch.load(path, map_location="cpu", weights_only=True)
