"""Checking what a dataset says about itself before the trainer believes it.

`dataset.json` and the shards table steer everything the loader does: which files it opens,
how many classes there are, how often each shard is visited and how many copies a sample gets.
A hostile or damaged value there (a list for an object, a path that leaves the dataset, a NaN
weight sum, a mean shard size outside its shards' range) used to surface as a traceback, a file read outside the
dataset, or a sampler that spins without ever yielding. Each is refused here, at open, in one
line naming the dataset and what is wrong.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass

import numpy as np

from weakly_base.shard_format import check_format

# A dataset.json of a million-class vocabulary is tens of MB; past this it is not one.
MAX_DATASET_JSON_BYTES = 64 << 20
# One path component of a shard file: what the writer produces (`shards/train-03-000012.tar`),
# never `..`, never empty, nothing a URL or another filesystem would read as special.
_COMPONENT = re.compile(r"[A-Za-z0-9_.-]{1,255}")


@dataclass(frozen=True)
class ShardTable:
    """The shards of one split, sorted by file.

    Sorted by the reader, not taken in stored order: a version-2 index is stored in weight-bucket
    parts, so only a sort gives the sampler the same shard numbering on any layout (version 1
    was written sorted by file, so its datasets sample exactly as before)."""

    files: tuple[str, ...]
    n: np.ndarray
    weight_sum: np.ndarray
    sha256: tuple[str, ...] = ()
    weight_max: np.ndarray | None = None  # per shard; None when the table has no such column
    nbytes: tuple[int | None, ...] = ()  # the tar's size, where the table says (else None)

    @property
    def mean_size(self) -> float:
        return float(self.n.mean())


def parse_dataset_json(data: bytes, where: str) -> dict:
    """dataset.json as a dict whose format, vocabulary and splits have the shapes the trainer
    reads; anything else is one ValueError naming `where`."""
    if len(data) > MAX_DATASET_JSON_BYTES:
        raise ValueError(
            f"{where}: {len(data)} bytes; a dataset.json is at most {MAX_DATASET_JSON_BYTES}"
        )
    try:
        meta = json.loads(data)
    except (ValueError, RecursionError) as exc:
        reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)[:120]
        raise ValueError(f"{where}: not readable JSON ({reason})") from None
    if not isinstance(meta, dict):
        raise ValueError(f"{where}: a JSON {type(meta).__name__}, not an object")
    check_format(meta, where)
    vocabulary = meta.get("vocabulary")
    wnids = vocabulary.get("wnids") if isinstance(vocabulary, dict) else None
    if not isinstance(wnids, list) or not wnids or not all(isinstance(w, str) for w in wnids):
        raise ValueError(f"{where}: no vocabulary.wnids (a non-empty list of strings)")
    splits = meta.get("splits", {})
    if not isinstance(splits, dict) or not all(isinstance(s, dict) for s in splits.values()):
        raise ValueError(f"{where}: splits is not an object of objects")
    return meta


def is_confined(rel: str) -> bool:
    """Whether `rel` names a file inside the dataset: relative, no `..`, no URL, no
    backslash or control character. Applied to every path the index hands the reader."""
    if not isinstance(rel, str) or not rel:
        return False
    parts = rel.split("/")
    return all(_COMPONENT.fullmatch(p) and p not in (".", "..") for p in parts)


def _number(value, *, integer: bool = False) -> float | None:
    """A finite number (an int when `integer`), else None; bools are not numbers here."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if integer and not isinstance(value, int):
        return None
    return value if math.isfinite(value) else None


def shard_table(table: dict[str, list], url: str, index_name: str, split: str) -> ShardTable:
    """The rows of `split` in the shards table, sorted by file, each checked: a confined `.tar`
    path, `n` >= 0, `weight_sum` finite and >= 0. One bad row refuses the dataset: the index is
    written with the shards, so a bad row means the index cannot be trusted."""
    where = f"{url}/{index_name}"
    rows = sorted(
        (i for i, s in enumerate(table["split"]) if s == split),
        key=lambda i: table["file"][i] or "",
    )
    if not rows:
        raise ValueError(f"{where}: no shards for split {split!r}")
    for i in rows:
        file, n, ws = table["file"][i], table["n"][i], table["weight_sum"][i]
        if not is_confined(file) or not file.endswith(".tar"):
            raise ValueError(
                f"{where}: shard file {file!r} is not a .tar path inside the dataset; "
                "refusing to read anything outside it"
            )
        if _number(n, integer=True) is None or n < 0:
            raise ValueError(f"{where}: shard {file} has n = {n!r}")
        if _number(ws) is None or ws < 0:
            raise ValueError(f"{where}: shard {file} has weight_sum = {ws!r}")
    shards = ShardTable(
        files=tuple(table["file"][i] for i in rows),
        n=np.asarray([table["n"][i] for i in rows], dtype=np.int64),
        weight_sum=np.asarray([table["weight_sum"][i] for i in rows], dtype=np.float64),
        sha256=tuple(table["sha256"][i] or "" for i in rows),
        weight_max=_weight_max(table, rows),
        nbytes=tuple(_size(table["bytes"][i]) if "bytes" in table else None for i in rows),
    )
    if not (shards.weight_sum > 0).any():
        raise ValueError(f"{url}: every shard of split {split!r} has weight_sum 0")
    return shards


def _size(value) -> int | None:
    """A tar's byte count from the table, or None when it is not a positive integer."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def _weight_max(table: dict[str, list], rows: list[int]) -> np.ndarray | None:
    """The shards' largest weights, which set how many times an epoch visits each shard; a
    value that is not a finite number >= 0 counts as unknown (NaN: the sampler then visits as
    often as the shard's mean copies say)."""
    column = table.get("weight_max")
    if column is None:
        return None
    values = [_number(column[i]) for i in rows]
    return np.asarray([v if v is not None and v >= 0 else np.nan for v in values], dtype=float)


def mean_shard_size(meta: dict, shards: ShardTable, url: str, split: str) -> float:
    """`splits.<split>.mean_shard_size` from dataset.json (the shards' mean when absent).

    The epoch sampler plans from the shards table and no longer reads it; it is still
    checked so that a damaged dataset.json is refused at open rather than trusted elsewhere
    (`Dataset.mean_shard_size`). A true mean lies between the smallest and the largest shard,
    so anything outside that range is refused."""
    value = meta.get("splits", {}).get(split, {}).get("mean_shard_size")
    if value is None:
        return shards.mean_size
    low, high = int(shards.n.min()), int(shards.n.max())
    number = _number(value)
    if number is None or number <= 0 or not low * (1 - 1e-9) <= number <= high * (1 + 1e-9):
        raise ValueError(
            f"{url}/dataset.json: split {split!r} has mean_shard_size {value!r}; the shards "
            f"of the index hold {low} to {high} samples each, so it must lie in that range"
        )
    return float(number)
