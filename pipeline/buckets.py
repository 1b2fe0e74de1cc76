"""Shards, one Ray task per weight bucket: read the bucket's chunk parts in order, cut shards
as rows arrive, write each (pipeline/shards.py) with its rows of the samples index, and write
the bucket's rows of the shards index last. Returns only per-split totals: the driver never
holds per-sample or per-shard lists."""

from __future__ import annotations

import json

import pyarrow as pa

from weakly_base.shard_format import (
    SAMPLES_RANGE_COLUMNS,
    SAMPLES_SCHEMA,
    SHARD_DIR,
    SHARDS_SCHEMA,
    ShardRecord,
)
from weakly_base.shard_format import shard_name as tar_name
from weakly_base.storage import Store

from . import work_layout as lay
from .parquet_io import put_parquet, read_parquet
from .shards import committed_stats, write_shard
from .split import split_of, splits_for

BUCKET_COLUMNS = ["key", "weight", "meta", "jpeg", "labels", "phash"]
BUCKET_SCHEMA = pa.schema(
    [
        ("key", pa.string()),
        ("weight", pa.float64()),
        ("meta", pa.string()),
        ("jpeg", pa.binary()),
        ("labels", pa.list_(pa.int32())),
        ("phash", pa.uint64()),
    ]
)


def _samples_rows(rows: list[tuple], split: str, shard_file: str) -> pa.Table:
    """The shard's rows of the samples index, in key order (the order stored in the tar);
    `write_shard` adds their byte ranges in the tar."""
    ordered = sorted(rows, key=lambda r: r[0])
    return pa.table(
        {
            "key": [r[0] for r in ordered],
            "split": [split] * len(ordered),
            "shard": [f"{SHARD_DIR}/{shard_file}"] * len(ordered),
            "labels": [r[4] for r in ordered],
            "weight": [r[1] for r in ordered],
            "phash": [r[5] for r in ordered],
        },
        schema=pa.schema([f for f in SAMPLES_SCHEMA if f.name not in SAMPLES_RANGE_COLUMNS]),
    )


def _flush(store: Store, split: str, bucket: int, n: int, rows: list[tuple]) -> dict:
    """Write one shard from bucket rows, or take it as committed; its stats."""
    name = tar_name(split, bucket, n)
    rel = f"{SHARD_DIR}/{name}"
    stats = committed_stats(store, rel)
    if stats is not None:
        return stats
    records = [ShardRecord(r[0], r[3], json.loads(r[2])) for r in rows]
    stats, _ = write_shard(
        store, rel, records, split, bucket, [r[1] for r in rows], _samples_rows(rows, split, name)
    )
    return stats


def write_bucket(store: Store, bucket: int, shard_size: int, holdout: float = 0.0) -> dict:
    """Write every shard of one weight bucket (skipping committed ones) and its shards-index
    part; return {split: {samples, shards, weight_sum, bytes}}.

    Parts are read one at a time in (file, chunk) order and each split's shards cut as its
    rows arrive, so a worker holds at most one part and one pending shard per split, however
    large the bucket (BENCHMARKS.md, load). Each shard is sorted by key inside.
    """
    stats: list[dict] = []
    pending: dict[str, list[tuple]] = {split: [] for split in splits_for(holdout)}
    cut: dict[str, int] = dict.fromkeys(pending, 0)

    def flush(split: str, rows: list[tuple]) -> None:
        stats.append(_flush(store, split, bucket, cut[split], rows))
        cut[split] += 1

    folder = lay.bucket_dir(bucket)
    for name in store.list(folder):
        t = read_parquet(store, f"{folder}/{name}", BUCKET_COLUMNS)
        for row in zip(*(t[c].to_pylist() for c in BUCKET_COLUMNS), strict=True):
            pending[split_of(row[0], holdout)].append(row)
        del t
        for split, rows in pending.items():
            while len(rows) >= shard_size:
                flush(split, rows[:shard_size])
                del rows[:shard_size]
    for split, rows in pending.items():
        if rows:
            flush(split, rows)
    stats.sort(key=lambda s: s["file"])
    table = {name: [s[name] for s in stats] for name in SHARDS_SCHEMA.names}
    table["file"] = [f"{SHARD_DIR}/{f}" for f in table["file"]]
    put_parquet(store, lay.shards_part(bucket), pa.table(table, schema=SHARDS_SCHEMA))
    return bucket_totals(stats)


def bucket_totals(stats: list[dict]) -> dict:
    out: dict[str, dict] = {}
    for s in stats:
        t = out.setdefault(s["split"], {"samples": 0, "shards": 0, "weight_sum": 0.0, "bytes": 0})
        t["samples"] += s["n"]
        t["shards"] += 1
        t["weight_sum"] += float(s["weight_sum"])
        t["bytes"] += int(s["bytes"])
    return out
