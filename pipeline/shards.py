"""Writing shards atomically through a `Store`: the bytes and stats come from the format
(weakly_base/shard_format.py: `shard_tar`, `shard_stats`); this module commits them.

Each object is written whole (weakly_base/storage.py). Per shard, the tar comes first, then its
rows of the samples index, then the `.stats.json` beside the tar, last: the stats object is the
commit marker, so a tar without it (or whose size disagrees with it) is not part of the dataset
and is rewritten on resume. The order holds on a local disk and on an object store alike.
"""

from __future__ import annotations

import json
import posixpath
from collections.abc import Iterable

import pyarrow as pa

from weakly_base.shard_format import (
    ShardRecord,
    shard_stats,
    shard_tar,
    stats_name,
    with_ranges,
)
from weakly_base.storage import StorageError, Store

from . import work_layout as lay
from .parquet_io import parquet_bytes


class WriteFailed(StorageError):
    """An output object could not be written (disk full, I/O error, permissions, a bucket
    that refuses writes); one line naming the object and the reason."""


def stats_rel(tar_rel: str) -> str:
    return posixpath.join(posixpath.dirname(tar_rel), stats_name(posixpath.basename(tar_rel)))


def committed_stats(store: Store, tar_rel: str) -> dict | None:
    """The shard's stats when it is committed: stats, samples part and a tar of the recorded
    size all exist. A tar truncated or replaced after commit is rewritten, not trusted."""
    marker = stats_rel(tar_rel)
    if not store.exists(marker):
        return None
    try:
        stats = json.loads(store.get(marker))
    except (StorageError, ValueError):
        return None
    if not isinstance(stats, dict) or store.size(tar_rel) != stats.get("bytes"):
        return None
    if not store.exists(lay.samples_part(posixpath.basename(tar_rel))):
        return None
    return stats


def write_shard(
    store: Store,
    tar_rel: str,
    records: Iterable[ShardRecord],
    split: str,
    bucket: int,
    weights: Iterable[float],
    samples_rows: pa.Table,
) -> tuple[dict, list[str]]:
    """Write one shard, its samples-index part and its commit marker; return the stats and
    the keys the shard holds, in stored order. `samples_rows` must be in stored (key) order;
    each row's `offset` and `size` (its byte range in the tar) are filled in here."""
    tar = shard_tar(records)
    tar_name = posixpath.basename(tar_rel)
    store.remove(stats_rel(tar_rel))  # a stale marker must never vouch for new bytes
    _put(store, tar_rel, tar.data)
    _put(store, lay.samples_part(tar_name), parquet_bytes(with_ranges(samples_rows, tar)))
    stats = shard_stats(tar_name, tar.data, len(tar.keys), split, bucket, weights)
    _put(store, stats_rel(tar_rel), json.dumps(stats, sort_keys=True).encode())
    return stats, tar.keys


def _put(store: Store, rel: str, data: bytes) -> None:
    try:
        store.put(rel, data)
    except StorageError as exc:
        raise WriteFailed(str(exc)) from None
