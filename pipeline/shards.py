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


def _fsync_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def stats_path(tar_path: Path) -> Path:
    return tar_path.with_name(tar_path.name[: -len(".tar")] + ".stats.json")


def is_committed(tar_path: Path) -> bool:
    return tar_path.exists() and stats_path(tar_path).exists()


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
    tar_path.parent.mkdir(parents=True, exist_ok=True)
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
