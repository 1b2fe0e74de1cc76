"""Reading a `weakly` dataset (docs/FORMAT.md) from a local folder or any fsspec URL.

Tars are streamed member by member: nothing is extracted to disk and member names are only
matched against the key pattern, never used as paths. A member larger than the cap is skipped
rather than read into memory.
"""

from __future__ import annotations

import json
import re
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass

import fsspec
import numpy as np
import pyarrow.parquet as pq

MEMBER_RE = re.compile(r"^([A-Za-z0-9_-]+)\.(jpg|json)$")
DEFAULT_MAX_MEMBER_BYTES = 32 << 20


@dataclass(frozen=True)
class Sample:
    """One complete sample as stored in a shard."""

    key: str
    jpg: bytes
    labels: tuple[int, ...]
    weight: float


@dataclass(frozen=True)
class ShardTable:
    """The shards of one split, in `index/shards.parquet` order."""

    files: tuple[str, ...]
    n: np.ndarray
    weight_sum: np.ndarray

    @property
    def mean_size(self) -> float:
        return float(self.n.mean())


class Dataset:
    """A dataset folder: its metadata, its shard table, and a way to stream one shard."""

    def __init__(self, url: str, split: str = "train") -> None:
        self.url = str(url).rstrip("/")
        self.split = split
        self.fs, self.root = fsspec.core.url_to_fs(self.url)
        self.root = self.root.rstrip("/")
        meta_path = f"{self.root}/dataset.json"
        if not self.fs.exists(meta_path):
            raise FileNotFoundError(
                f"{self.url}/dataset.json not found: not a weakly dataset, or ingest not finished"
            )
        with self.fs.open(meta_path, "rb") as f:
            self.meta = json.load(f)
        if self.meta.get("format") != "weakly-shards" or self.meta.get("format_version") != 1:
            raise ValueError(f"{meta_path}: unsupported format {self.meta.get('format_version')}")
        self.wnids: list[str] = list(self.meta["vocabulary"]["wnids"])
        with self.fs.open(f"{self.root}/index/shards.parquet", "rb") as f:
            table = pq.read_table(f).to_pydict()
        rows = [i for i, s in enumerate(table["split"]) if s == split]
        if not rows:
            raise ValueError(f"{self.url}/index/shards.parquet: no shards for split {split!r}")
        self.shards = ShardTable(
            files=tuple(table["file"][i] for i in rows),
            n=np.asarray([table["n"][i] for i in rows], dtype=np.int64),
            weight_sum=np.asarray([table["weight_sum"][i] for i in rows], dtype=np.float64),
        )
        if not (self.shards.weight_sum > 0).any():
            raise ValueError(f"{self.url}: every shard of split {split!r} has weight_sum 0")
        split_meta = self.meta.get("splits", {}).get(split, {})
        self.mean_shard_size = float(split_meta.get("mean_shard_size") or self.shards.mean_size)

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
        """Per shard file, its (key, weight) rows in key order, from index/samples.parquet."""
        with self.fs.open(f"{self.root}/index/samples.parquet", "rb") as f:
            t = pq.read_table(f, columns=["key", "split", "shard", "weight"]).to_pydict()
        out: dict[str, list[tuple[str, float]]] = {}
        for key, split, shard, w in zip(t["key"], t["split"], t["shard"], t["weight"], strict=True):
            if split == self.split:
                out.setdefault(shard, []).append((key, float(w)))
        for rows in out.values():
            rows.sort()
        return out


def iter_tar_samples(fileobj, max_member_bytes: int = DEFAULT_MAX_MEMBER_BYTES) -> Iterator[Sample]:
    """Complete samples of a tar stream, in stored order.

    A sample is complete when its `.jpg` and `.json` arrive for the same key; anything else
    (odd names, oversize members, orphan halves, unreadable json) is dropped here so the sample
    positions agree with the index, which only lists complete samples.
    """
    key, jpg = None, None
    with tarfile.open(fileobj=fileobj, mode="r|") as tar:
        for member in tar:
            if not member.isfile() or member.size > max_member_bytes:
                continue
            m = MEMBER_RE.match(member.name)
            if m is None:
                continue
            data = tar.extractfile(member).read()
            name, ext = m.group(1), m.group(2)
            if ext == "jpg":
                key, jpg = name, data
                continue
            if name != key or jpg is None:
                continue
            try:
                meta = json.loads(data)
                sample = Sample(
                    key=name,
                    jpg=jpg,
                    labels=tuple(int(x) for x in meta["labels"]),
                    weight=float(meta["weight"]),
                )
            except (ValueError, KeyError, TypeError):
                sample = None
            key, jpg = None, None
            if sample is not None and sample.labels:
                yield sample
