"""Checkpoints: one dict per file, written atomically, verified by a checksum file.

Layout: `RUN/checkpoints/ckpt-<step>.pt` for the last `keep_last` saves, and
`RUN/checkpoints/last.pt`, always the newest, for people and scripts that just want "the latest"
without listing a folder. The checksum file is written (atomically) after the checkpoint is in
place, so it is the commit marker: a checkpoint without a matching checksum is a crash leftover
and is never resumed from. Only tensors and plain containers are stored, so
`torch.load(weights_only=True)` can read it.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import re
import shutil
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


LAST = "last.pt"


def checkpoint_dir(run_dir: str | os.PathLike) -> Path:
    return Path(run_dir) / "checkpoints"


def checkpoint_path(run_dir: str | os.PathLike, step: int) -> Path:
    return checkpoint_dir(run_dir) / f"ckpt-{step:09d}.pt"


def _write_marker(path: Path, digest: str) -> None:
    _write_atomic(
        path.with_name(path.name + ".sha256"),
        lambda f: f.write(f"{digest}  {path.name}\n".encode()),
    )


def _publish_last(path: Path, digest: str) -> None:
    """Point last.pt at `path`: a hard link swapped in atomically (a copy where links fail).

    last.pt's own checksum is written after the swap, so a crash in between leaves a last.pt
    that fails verification and resume falls back to the numbered file, never to a stale one.
    """
    last = path.with_name(LAST)
    tmp = path.with_name(LAST + ".tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(path, tmp)
    except OSError:
        shutil.copyfile(path, tmp)
    os.replace(tmp, last)
    _fsync_dir(last.parent)
    _write_marker(last, digest)


def numbered(run_dir: str | os.PathLike) -> list[tuple[int, Path]]:
    """(step, path) of the numbered checkpoints present, oldest first."""
    folder = checkpoint_dir(run_dir)
    if not folder.is_dir():
        return []
    return sorted(
        (int(m.group(1)), p) for p in folder.iterdir() if (m := _NAME.match(p.name)) is not None
    )


def prune(run_dir: str | os.PathLike, keep_last: int) -> None:
    """Delete all but the newest `keep_last` numbered checkpoints (0 keeps everything)."""
    if keep_last <= 0:
        return
    for _, path in numbered(run_dir)[:-keep_last]:
        path.with_name(path.name + ".sha256").unlink(missing_ok=True)
        path.unlink(missing_ok=True)


def save_checkpoint(run_dir: str | os.PathLike, step: int, state: dict, keep_last: int = 0) -> Path:
    path = checkpoint_path(run_dir, step)
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_atomic(path, lambda f: torch.save(state, f))
    digest = sha256_file(path)
    _write_marker(path, digest)
    _publish_last(path, digest)
    prune(run_dir, keep_last)
    return path


def is_valid(path: Path) -> bool:
    marker = path.with_name(path.name + ".sha256")
    if not path.is_file() or not marker.is_file():
        return False
    want = marker.read_text().split()[0] if marker.read_text().strip() else ""
    return want == sha256_file(path)


def latest_checkpoint(run_dir: str | os.PathLike) -> Path | None:
    """Newest checkpoint whose checksum matches; older ones are the fallback for a torn write."""
    for _, path in reversed(numbered(run_dir)):
        if is_valid(path):
            return path
    last = checkpoint_dir(run_dir) / LAST
    return last if is_valid(last) else None


def load_checkpoint(path: str | os.PathLike) -> dict:
    path = Path(path)
    if not is_valid(path):
        raise ValueError(f"{path}: checksum missing or wrong; not resuming from a torn checkpoint")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError) as exc:
        # weights_only refuses anything but tensors and plain containers: a file carrying code
        # (a pickled callable) is reported, never run.
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"{path}: not a loadable weakly checkpoint ({first})") from None


# What `save` in train/run_state.py writes, with the type each entry must have to be restored.
_ENTRIES = {
    "model": dict,
    "optimizer": dict,
    "scheduler": dict,
    "step": int,
    "loader": list,
    "wnids": list,
}


def check_checkpoint(ckpt, path: str | os.PathLike) -> None:
    """A loaded checkpoint has the entries a resume reads, of the right types: one ValueError
    line naming the file and the first that is missing or wrong (a KeyError deep in restore
    would name neither)."""
    if not isinstance(ckpt, dict):
        raise ValueError(f"{path}: a {type(ckpt).__name__}, not a weakly checkpoint")
    for name, kind in _ENTRIES.items():
        value = ckpt.get(name)
        if not isinstance(value, kind) or isinstance(value, bool):
            got = "missing" if name not in ckpt else f"a {type(value).__name__}"
            raise ValueError(f"{path}: entry {name!r} is {got}, not a {kind.__name__}")
    if ckpt["step"] < 0:
        raise ValueError(f"{path}: step {ckpt['step']} is negative")
