"""Writing shards atomically: the bytes and stats come from the format (weakly_base/shard_format.py:
`shard_bytes`, `shard_stats`); this module commits them.

The tar is written to `.tmp`, fsynced and renamed; the `.stats.json` beside it is written last
and is the commit marker: a tar without it is not part of the dataset and is rewritten on
resume.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path

from weakly_base.shard_format import ShardRecord, shard_bytes, shard_stats, stats_name


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
    return tar_path.with_name(stats_name(tar_path.name))


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


def write_shard(
    tar_path: Path,
    records: Iterable[ShardRecord],
    split: str,
    bucket: int,
    weights: Iterable[float],
) -> tuple[dict, list[str]]:
    """Write one shard and its commit marker; return the stats written and the keys the shard
    holds, in stored order."""
    data, keys = shard_bytes(records)
    try:
        tar_path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise write_failed(tar_path.parent, exc) from None
    stats_path(tar_path).unlink(missing_ok=True)  # a stale marker must never vouch for new bytes
    _fsync_write(tar_path, data)
    stats = shard_stats(tar_path.name, data, len(keys), split, bucket, weights)
    _fsync_write(stats_path(tar_path), json.dumps(stats, sort_keys=True).encode())
    return stats, keys
