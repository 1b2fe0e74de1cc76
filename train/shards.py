"""Reading a `weakly` dataset (docs/FORMAT.md) from a local folder or any fsspec URL.

Tars are streamed member by member: nothing is extracted to disk and member names are only
matched against the key pattern, never used as paths. A member larger than the cap is skipped
rather than read into memory.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow.compute as pc

from weakly_base.index_tables import SAMPLES, SHARDS, index_dir, read_index
from weakly_base.shard_format import (
    DATASET_JSON,
    DEFAULT_MAX_MEMBER_BYTES,
    FORMAT_NAME,
    FORMAT_VERSION,
    MEMBER_RE,
    check_format,
    iter_tar_records,
)
from weakly_base.storage import Store

# Re-exported: train.data, train.probe_data and tests import these from here.
__all__ = [
    "DEFAULT_MAX_MEMBER_BYTES",
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "MEMBER_RE",
    "Dataset",
    "Sample",
    "ShardTable",
    "check_shard_files",
    "iter_tar_records",
    "iter_tar_samples",
]


@dataclass(frozen=True)
class Sample:
    """One complete sample as stored in a shard."""

    key: str
    jpg: bytes
    labels: tuple[int, ...]
    weight: float


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

    @property
    def mean_size(self) -> float:
        return float(self.n.mean())


class Dataset:
    """A dataset folder: its metadata, its shard table, and a way to stream one shard."""

    def __init__(self, url: str, split: str = "train") -> None:
        self.url = str(url).rstrip("/")
        self.split = split
        self.store = Store.at(self.url)
        self.fs, self.root = self.store.fs, self.store.full("")
        meta_path = f"{self.root}/{DATASET_JSON}"
        if not self.fs.exists(meta_path):
            raise FileNotFoundError(
                f"{self.url}/{DATASET_JSON} not found: not a weakly dataset, or ingest not finished"
            )
        with self.fs.open(meta_path, "rb") as f:
            self.meta = json.load(f)
        check_format(self.meta, f"{self.url}/{DATASET_JSON}")
        self.wnids: list[str] = list(self.meta["vocabulary"]["wnids"])
        table = read_index(self.store, SHARDS).to_pydict()
        rows = sorted(
            (i for i, s in enumerate(table["split"]) if s == split), key=lambda i: table["file"][i]
        )
        if not rows:
            raise ValueError(f"{self.url}/{index_dir(SHARDS)}: no shards for split {split!r}")
        self.shards = ShardTable(
            files=tuple(table["file"][i] for i in rows),
            n=np.asarray([table["n"][i] for i in rows], dtype=np.int64),
            weight_sum=np.asarray([table["weight_sum"][i] for i in rows], dtype=np.float64),
            sha256=tuple(table["sha256"][i] or "" for i in rows),
        )
        if not (self.shards.weight_sum > 0).any():
            raise ValueError(f"{self.url}: every shard of split {split!r} has weight_sum 0")
        split_meta = self.meta.get("splits", {}).get(split, {})
        self.mean_shard_size = float(split_meta.get("mean_shard_size") or self.shards.mean_size)

    @property
    def num_samples(self) -> int:
        return int(self.shards.n.sum())

    @property
    def num_classes(self) -> int:
        return len(self.wnids)

    def __getstate__(self) -> dict:
        return {"url": self.url, "split": self.split}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["url"], state["split"])

    def read_shard(
        self, index: int, max_member_bytes: int = DEFAULT_MAX_MEMBER_BYTES
    ) -> Iterator[Sample]:
        with self.fs.open(f"{self.root}/{self.shards.files[index]}", "rb") as f:
            yield from iter_tar_samples(f, max_member_bytes)

    def sample_index(self) -> dict[str, list[tuple[str, float]]]:
        """Per shard file, its (key, weight) rows in key order, from the samples index (one read
        of the whole table: the caller visits every shard)."""
        table = read_index(self.store, SAMPLES, columns=["key", "split", "shard", "weight"])
        t = table.filter(pc.equal(table["split"], self.split)).to_pydict()
        out: dict[str, list[tuple[str, float]]] = {}
        for key, shard, w in zip(t["key"], t["shard"], t["weight"], strict=True):
            out.setdefault(shard, []).append((key, float(w)))
        for rows in out.values():
            rows.sort()
        return out


def iter_tar_samples(fileobj, max_member_bytes: int = DEFAULT_MAX_MEMBER_BYTES) -> Iterator[Sample]:
    """Complete samples with at least one label (see `iter_tar_records`)."""
    for name, jpg, meta in iter_tar_records(fileobj, max_member_bytes):
        try:
            sample = Sample(
                key=name,
                jpg=jpg,
                labels=tuple(int(x) for x in meta["labels"]),
                weight=float(meta["weight"]),
            )
        except (ValueError, KeyError, TypeError):
            continue
        if sample.labels:
            yield sample


def check_shard_files(dataset: Dataset, verify: bool = False) -> None:
    """Fail before training if a shard the index lists is missing (or, with `verify`, altered).

    Without this a missing tar only surfaces when the sampler first visits it, possibly hours
    in and inside a loader worker. Existence costs one listing per folder; the sha256 check
    reads every byte, hence optional.
    """
    fs, root = dataset.fs, dataset.root
    folders = sorted({f.rpartition("/")[0] for f in dataset.shards.files})
    present: set[str] = set()
    for folder in folders:
        path = f"{root}/{folder}" if folder else root
        if fs.isdir(path):
            present |= {p.rstrip("/").rpartition("/")[2] for p in fs.ls(path, detail=False)}
    missing = [f for f in dataset.shards.files if f.rpartition("/")[2] not in present]
    if missing:
        raise FileNotFoundError(
            f"{dataset.url}: {len(missing)} of {len(dataset.shards.files)} shards listed in "
            f"{index_dir(SHARDS)} are missing, e.g. {missing[0]}"
        )
    if not verify:
        return
    hashes = dataset.shards.sha256 or ("",) * len(dataset.shards.files)
    for file, want in zip(dataset.shards.files, hashes, strict=True):
        h = hashlib.sha256()
        with fs.open(f"{root}/{file}", "rb") as f:
            for block in iter(lambda f=f: f.read(1 << 20), b""):
                h.update(block)
        if want and h.hexdigest() != want:
            raise ValueError(
                f"{dataset.url}/{file}: sha256 {h.hexdigest()[:12]}... differs from "
                f"{index_dir(SHARDS)} ({want[:12]}...); the shard was changed or truncated"
            )
