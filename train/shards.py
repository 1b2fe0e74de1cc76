"""Reading a `weakly` dataset (docs/FORMAT.md) from a local folder or any fsspec URL.

Tars are streamed member by member through `weakly_base.tar_reader`: nothing is extracted to
disk, member names are only matched against the key pattern, never used as paths, and no member
or extended header costs more than its cap. What dataset.json and the shards table say is
checked at open (train/dataset_meta.py); each shard's samples are its samples-index rows, with
the tar's records checked against them (train/sample_checks.py), so one bad record costs one
sample. On an object store a visit's samples are fetched by the byte ranges the samples index
gives them (train/ranged.py) when it has them; otherwise, and on a local disk, the tar is
streamed and the other members skipped by seeking.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Container, Iterator, Sequence

import numpy as np
import pyarrow.compute as pc

from weakly_base.index_tables import (
    SAMPLES,
    SHARDS,
    index_dir,
    read_index,
    read_shard_samples,
    samples_part,
)
from weakly_base.shard_format import (
    DATASET_JSON,
    DEFAULT_MAX_MEMBER_BYTES,
    FORMAT_NAME,
    FORMAT_VERSION,
    MEMBER_RE,
    SAMPLES_RANGE_COLUMNS,
    check_format,
    iter_shard_records,
    iter_tar_records,
)
from weakly_base.storage import Store
from weakly_base.tar_reader import TarError

from .dataset_meta import (
    MAX_DATASET_JSON_BYTES,
    ShardTable,
    mean_shard_size,
    parse_dataset_json,
    shard_table,
)
from .ranged import FetchStats, max_range, read_ranged
from .sample_checks import (
    IndexRow,
    Sample,
    Skip,
    check_labels,
    check_weight,
    join_shard,
    sampling_weight,
)

# On an object store, the least a read fetches (fsspec's read-ahead block): big enough that a
# visit reading most of a shard makes few requests, small enough that skipped members mostly
# stay unfetched.
REMOTE_BLOCK = 1 << 20
_CACHED_SHARDS = 256  # shards whose index weights a Dataset keeps (a few MB at most)
_CACHED_ROWS = 32  # shards whose index rows (keys, labels) a Dataset keeps

# Re-exported: train.data, train.probe_data and tests import these from here.
__all__ = [
    "DEFAULT_MAX_MEMBER_BYTES",
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "MEMBER_RE",
    "DataStop",
    "Dataset",
    "Sample",
    "ShardTable",
    "Skip",
    "check_format",
    "check_shard_files",
    "iter_tar_records",
    "iter_tar_samples",
]


class DataStop(ValueError):
    """The loader cannot go on with this dataset; the message is one line naming it and why.
    Raised where the data is read (possibly in a loader worker) and reported as-is."""


class Dataset:
    """A dataset folder: its metadata, its shard table, and a way to stream one shard."""

    def __init__(self, url: str, split: str = "train") -> None:
        self.url = str(url).rstrip("/")
        self.split = split
        self._open_store()
        self.root = self._store.full("")
        meta_path = f"{self.root}/{DATASET_JSON}"
        if not self.fs.exists(meta_path):
            raise FileNotFoundError(
                f"{self.url}/{DATASET_JSON} not found: not a weakly dataset, or ingest not finished"
            )
        with self.fs.open(meta_path, "rb") as f:
            data = f.read(MAX_DATASET_JSON_BYTES + 1)
        self.meta = parse_dataset_json(data, f"{self.url}/{DATASET_JSON}")
        self.wnids: list[str] = list(self.meta["vocabulary"]["wnids"])
        table = read_index(self.store, SHARDS).to_pydict()
        self.shards = shard_table(table, self.url, index_dir(SHARDS), split)
        self.mean_shard_size = mean_shard_size(self.meta, self.shards, self.url, split)
        self._v1_rows: dict[str, list[IndexRow]] | None = None
        self._weights: dict[int, np.ndarray] = {}
        # Per shard: its index rows and their byte ranges in the tar (None: the index has none).
        self._rows: dict[int, tuple[list[IndexRow], list[tuple[int, int]] | None]] = {}
        self.fetch_stats = FetchStats()  # what ranged reads (object stores) fetched
        self._rows_lock = threading.Lock()  # object-store read-ahead threads share the cache
        self._sizes = dict(zip(self.shards.files, self.shards.nbytes, strict=False))

    def _open_store(self) -> None:
        self._store, self._pid = Store.at(self.url), os.getpid()

    @property
    def store(self) -> Store:
        """The dataset's store, opened again in a forked loader worker: the parent's s3fs
        client (its event loop and connections) is not fork-safe, and fsspec hands a new
        process a new one."""
        if self._pid != os.getpid():
            self._open_store()
        return self._store

    @property
    def fs(self):
        return self.store.fs

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

    def index_rows(self, index: int) -> list[IndexRow]:
        """The samples-index rows of shard `index`, sorted by key: one small part read
        (version 2; the last `_CACHED_ROWS` shards' rows are kept, as a shard is visited
        several times an epoch); a version-1 index is one file, read once and kept."""
        return self._shard_rows(index)[0]

    def sample_ranges(self, index: int) -> list[tuple[int, int]] | None:
        """(offset, size) in the tar of each of shard `index`'s index rows, in row order, or
        None when its samples index has no byte ranges (written before they existed, or a
        version-1 index): then the tar is streamed."""
        return self._shard_rows(index)[1]

    def _shard_rows(self, index: int) -> tuple[list[IndexRow], list[tuple[int, int]] | None]:
        with self._rows_lock:
            entry = self._rows.get(index)
        if entry is None:
            entry = self._read_rows(index)
            with self._rows_lock:
                self._rows[index] = entry
                while len(self._rows) > _CACHED_ROWS:
                    self._rows.pop(next(iter(self._rows)))
        return entry

    def _read_rows(self, index: int) -> tuple[list[IndexRow], list[tuple[int, int]] | None]:
        file = self.shards.files[index]
        columns = ["key", "labels", "weight"]
        try:
            if self.meta["format_version"] == 1:
                if self._v1_rows is None:
                    self._v1_rows = self._all_rows(columns)
                return self._v1_rows.get(file, []), None
            columns += SAMPLES_RANGE_COLUMNS
            t = read_shard_samples(self.store, file, columns=columns).to_pydict()
        except (ValueError, FileNotFoundError) as exc:
            raise DataStop(
                f"{self.url}: the samples index of {file} is unreadable: {exc}"
            ) from None
        rows = [_row(*values) for values in zip(t["key"], t["labels"], t["weight"], strict=True)]
        offsets, sizes = t["offset"], t["size"]
        if None in offsets or None in sizes:
            return rows, None
        return rows, list(zip(offsets, sizes, strict=True))

    def _all_rows(self, columns: list[str]) -> dict[str, list[IndexRow]]:
        table = read_index(self.store, SAMPLES, columns=[*columns, "split", "shard"])
        t = table.filter(pc.equal(table["split"], self.split)).sort_by("key").to_pydict()
        out: dict[str, list[IndexRow]] = {}
        for key, labels, weight, shard in zip(
            t["key"], t["labels"], t["weight"], t["shard"], strict=True
        ):
            out.setdefault(shard, []).append(_row(key, labels, weight))
        return out

    def _records(self, file: str, max_member_bytes: int, keys: Container[str] | None = None):
        """The tar's records (of `keys` only, when given: the others' bytes are skipped by
        seeking); a missing or broken tar ends them with TarError naming it."""
        try:
            handle = self.open_shard(file)
        except FileNotFoundError:
            raise TarError(f"{file}: not found") from None
        with handle:
            try:
                yield from iter_shard_records(handle, max_member_bytes, keys)
            except TarError as exc:
                raise TarError(f"{file}: {exc}") from None

    def open_shard(self, file: str):
        """A binary file object on a shard. On an object store reads go out as ranged GETs of
        at least `REMOTE_BLOCK` bytes (fsspec's read-ahead cache): a member skipped by a seek
        past the cached range is never fetched, at one request per such gap. On s3 the size
        comes from the shards table's `bytes` (a wrong one reads as a truncated tar: its rows
        `shard_unreadable`, as for a cut shard)."""
        path = f"{self.root}/{file}"
        if self.store.is_local:
            return self.fs.open(path, "rb")
        options = {"block_size": REMOTE_BLOCK, "cache_type": "readahead"}
        size = self._sizes.get(file)
        if size is not None and self.store.protocol in ("s3", "s3a"):
            options["size"] = size  # s3fs: no HEAD request per open
        return self.fs.open(path, "rb", **options)

    def weights(self, index: int) -> np.ndarray:
        """The sampling weights of shard `index`'s index rows, in row order (no tar read);
        unusable index weights are replaced as `sampling_weight` says."""
        cached = self._weights.get(index)
        if cached is None:
            rows = self.index_rows(index)
            ws = float(self.shards.weight_sum[index])
            cached = np.asarray(
                [sampling_weight(r, ws, len(rows))[0] for r in rows], dtype=np.float64
            )
            self._weights[index] = cached
            while len(self._weights) > _CACHED_SHARDS:
                self._weights.pop(next(iter(self._weights)))
        return cached

    def read_positions(
        self,
        index: int,
        positions: Sequence[int],
        max_member_bytes: int = DEFAULT_MAX_MEMBER_BYTES,
    ) -> Iterator[Sample | Skip]:
        """Sample or Skip for each of `positions` (index rows of shard `index`, ascending,
        repeats allowed), reading only those samples' members, and the tar no further than the
        last of them."""
        rows = self.index_rows(index)
        wanted = sorted(set(positions))
        if not wanted:
            return
        if wanted[0] < 0 or wanted[-1] >= len(rows):
            raise DataStop(
                f"{self.url}: position {wanted[-1]} outside the {len(rows)} index rows of "
                f"{self.shards.files[index]}"
            )
        chosen = [rows[i] for i in wanted]
        file = self.shards.files[index]
        weight_sum = float(self.shards.weight_sum[index])
        ranges = self._visit_ranges(index, wanted, max_member_bytes)
        if ranges is not None:  # an object store: fetch the chosen samples' bytes alone
            items = read_ranged(
                self.fs, f"{self.root}/{file}", file, chosen, ranges,
                num_classes=self.num_classes, weight_sum=weight_sum,
                shard_bytes=self._sizes.get(file), max_member_bytes=max_member_bytes,
                stats=self.fetch_stats,
            )  # fmt: skip
            close = items.close
        else:
            keys = frozenset(r.key for r in chosen)
            records = self._records(file, max_member_bytes, keys)
            joined = join_shard(chosen, records, self.num_classes, weight_sum)
            items = (item for _, item in joined)
            close = records.close  # the tar's handle, now, not when collected
        pairs = zip(wanted, items, strict=True)
        try:
            at, item = -1, None
            for pos in positions:  # ascending: each sample is read once, when first needed
                while at != pos:
                    at, item = next(pairs)
                yield item
        finally:
            close()

    def _visit_ranges(
        self, index: int, wanted: list[int], max_member_bytes: int
    ) -> list[tuple[int, int]] | None:
        """The byte ranges of a visit's samples when they are to be read by range: on an
        object store, when the index has them and none is larger than two members within the
        cap could be (a streamed read skips big members without fetching them)."""
        if self.store.is_local:
            return None  # seeks are cheap; the stream reads just the members it wants
        ranges = self.sample_ranges(index)
        if ranges is None:
            return None
        chosen = [ranges[i] for i in wanted]
        largest = max_range(max_member_bytes)
        return None if any(size > largest for _, size in chosen) else chosen

    def read_rows(
        self, index: int, max_member_bytes: int = DEFAULT_MAX_MEMBER_BYTES
    ) -> Iterator[tuple[float, Sample | Skip]]:
        """(sampling weight, Sample or Skip) for every index row of shard `index`, in key
        order: the positions and weights the sampler draws from (train/sample_checks.py)."""
        rows = self.index_rows(index)
        records = self._records(self.shards.files[index], max_member_bytes)
        try:
            weight_sum = float(self.shards.weight_sum[index])
            yield from join_shard(rows, records, self.num_classes, weight_sum)
        finally:
            records.close()

    def read_shard(
        self, index: int, max_member_bytes: int = DEFAULT_MAX_MEMBER_BYTES
    ) -> Iterator[Sample]:
        """The usable samples of shard `index` in key order (evaluation reads these)."""
        for _, item in self.read_rows(index, max_member_bytes):
            if isinstance(item, Sample):
                yield item

    def sample_index(self) -> dict[str, list[tuple[str, float]]]:
        """Per shard file, its (key, weight) rows in key order, from the samples index (one read
        of the whole table: the caller visits every shard)."""
        table = read_index(self.store, SAMPLES, columns=["key", "split", "shard", "weight"])
        t = table.filter(pc.equal(table["split"], self.split)).to_pydict()
        out: dict[str, list[tuple[str, float]]] = {}
        for key, shard, w in zip(t["key"], t["shard"], t["weight"], strict=True):
            out.setdefault(shard, []).append((key, float(w) if w is not None else float("nan")))
        for rows in out.values():
            rows.sort()
        return out


def _row(key: str, labels: list[int] | None, weight: float | None) -> IndexRow:
    return IndexRow(key, tuple(labels) if labels is not None else None, weight)


def iter_tar_samples(fileobj, max_member_bytes: int = DEFAULT_MAX_MEMBER_BYTES) -> Iterator[Sample]:
    """Complete samples of a tar alone (no index), with valid labels and weight (see
    `iter_tar_records`)."""
    for name, jpg, meta in iter_tar_records(fileobj, max_member_bytes):
        labels = check_labels(meta.get("labels"), None)
        weight = check_weight(meta.get("weight"))
        if not isinstance(labels, str) and not isinstance(weight, str):
            yield Sample(key=name, jpg=jpg, labels=labels, weight=weight)


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
    if dataset.meta["format_version"] >= 2:
        parts = set(dataset.store.list(index_dir(SAMPLES)))
        lacking = [
            f for f in dataset.shards.files if samples_part(f).rpartition("/")[2] not in parts
        ]
        if lacking:
            raise FileNotFoundError(
                f"{dataset.url}: {len(lacking)} of {len(dataset.shards.files)} shards have no "
                f"samples part in {index_dir(SAMPLES)}, e.g. {samples_part(lacking[0])}"
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
