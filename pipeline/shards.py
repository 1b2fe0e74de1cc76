"""Writing tar shards that any tar reader and plain `webdataset` accept, atomically and
byte-for-byte reproducibly.

Members are `{key}.jpg` then `{key}.json`, contiguous, sorted by key, with fixed metadata
(mtime 0, uid/gid 0, mode 0644), so the same samples give the same bytes. The tar is written to
`.tmp`, fsynced and renamed; the `.stats.json` beside it is written last and is the commit
marker: a tar without it is not part of the dataset and is rewritten on resume.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path


@dataclass
class ShardSample:
    key: str
    jpeg: bytes
    meta: dict  # the sample json


def _member(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = size, 0, 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


class WriteFailed(RuntimeError):
    """An output file could not be written (disk full, I/O error, permissions).

    Raised with the file and the OS reason in one line, after the partial `.tmp` is removed, so
    the user sees what to fix and knows that rerunning the same command resumes cleanly.
    """


def write_failed(path: Path, exc: OSError) -> WriteFailed:
    reason = exc.strerror or str(exc) or type(exc).__name__
    return WriteFailed(
        f"could not write {path}: {reason}; nothing partial was committed, "
        "fix the cause (e.g. free space) and rerun the same command to resume"
    )


def atomic_write(path: Path, write) -> None:
    """`write(handle)` into `path.tmp`, fsync, rename: `path` is complete or absent."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise write_failed(path, exc) from None


def _fsync_write(path: Path, data: bytes) -> None:
    atomic_write(path, lambda handle: handle.write(data))


def stats_path(tar_path: Path) -> Path:
    return tar_path.with_name(tar_path.name[: -len(".tar")] + ".stats.json")


def is_committed(tar_path: Path) -> bool:
    """The stats file exists and the tar beside it has the size it records: a tar that was
    truncated or replaced after commit is rewritten on resume, not trusted."""
    marker = stats_path(tar_path)
    if not (tar_path.exists() and marker.exists()):
        return False
    try:
        return json.loads(marker.read_text())["bytes"] == tar_path.stat().st_size
    except (OSError, ValueError, KeyError, TypeError):
        return False


def write_shard(tar_path: Path, samples: Iterable[ShardSample], extra_stats: dict) -> dict:
    """Write one shard and its commit marker; return the stats written."""
    ordered = sorted(samples, key=lambda s: s.key)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for sample in ordered:
            meta = json.dumps(sample.meta, sort_keys=True, ensure_ascii=False).encode()
            tar.addfile(_member(f"{sample.key}.jpg", len(sample.jpeg)), io.BytesIO(sample.jpeg))
            tar.addfile(_member(f"{sample.key}.json", len(meta)), io.BytesIO(meta))
    data = buffer.getvalue()
    try:
        tar_path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise write_failed(tar_path.parent, exc) from None
    stats_path(tar_path).unlink(missing_ok=True)  # a stale marker must never vouch for new bytes
    _fsync_write(tar_path, data)
    stats = {
        "file": tar_path.name,
        "n": len(ordered),
        "bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        **extra_stats,
    }
    _fsync_write(stats_path(tar_path), json.dumps(stats, sort_keys=True).encode())
    return stats
