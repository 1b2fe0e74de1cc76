"""Shards, one Ray task per weight bucket: read the bucket's rows part by part, cut shards as
they come, write each atomically (pipeline/shards.py), and report what went where."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq

from weakly_base.shard_format import ShardRecord, shard_name

from .pass2 import BUCKET_COLUMNS, bucket_part
from .shards import is_committed, stats_path, write_shard
from .split import split_of, splits_for


@dataclass(frozen=True)
class WrittenShard:
    """One shard of the dataset: its stats (the `.stats.json` commit marker) and the keys of
    the samples it holds, in stored order. The index is built from these, never by cutting
    the rows again."""

    stats: dict
    keys: list[str]


def _flush(path: Path, split: str, bucket: int, rows: list[tuple]) -> WrittenShard:
    """Write one shard from (key, weight, meta, jpeg) rows, or take it as committed."""
    if is_committed(path):
        return WrittenShard(json.loads(stats_path(path).read_text()), sorted(r[0] for r in rows))
    records = [ShardRecord(key, jpeg, json.loads(meta)) for key, _, meta, jpeg in rows]
    stats, keys = write_shard(path, records, split, bucket, [w for _, w, _, _ in rows])
    return WrittenShard(stats, keys)


def write_bucket(
    bucket: int, part_paths: list[str], shard_dir: str, shard_size: int, holdout: float = 0.0
) -> list[WrittenShard]:
    """Write every shard of one weight bucket (skipping committed ones); return each shard's
    stats and keys.

    Parts are read one at a time in part order and each split's shards cut as its rows arrive,
    so a worker holds at most one part and one pending shard per split, however large the
    bucket (BENCHMARKS.md, load). Each shard is sorted by key inside.
    """
    written: list[WrittenShard] = []
    pending: dict[str, list[tuple]] = {split: [] for split in splits_for(holdout)}
    cut: dict[str, int] = dict.fromkeys(pending, 0)

    def flush(split: str, rows: list[tuple]) -> None:
        path = Path(shard_dir) / shard_name(split, bucket, cut[split])
        cut[split] += 1
        written.append(_flush(path, split, bucket, rows))

    for part in part_paths:
        file = bucket_part(Path(part), bucket)
        if not file.exists():
            continue
        t = pq.read_table(file, columns=BUCKET_COLUMNS)
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
    return written
