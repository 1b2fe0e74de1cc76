"""The `weakly` dataset format, defined once (docs/FORMAT.md is its prose).

Everything a writer must produce and a reader may rely on lives here: the format name and
version, file and member naming, the key rule, the weight-bucket rule, the index schemas, the
fixed tar member headers, and the primitives that write one shard's bytes and read samples back.
The ingest job, the trainer and the test fixtures all import these, so a change to the format is
a change to this one file.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import tarfile
from collections.abc import Container, Iterable, Iterator
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import pyarrow as pa

from . import tar_reader
from .tar_reader import TarMember

FORMAT_NAME = "weakly-shards"
# Version 2 made each index table a folder of parquet parts (weakly_base/index_tables.py);
# version 1 datasets (one parquet file per table) stay readable, so both are accepted.
FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)

TRAIN = "train"
VAL = "val"

# -- keys and member names ------------------------------------------------------------------

KEY_MAX_LEN = 90  # USTAR names are 100 bytes; the longest member is "{key}.json"
KEY_CHARS = "A-Za-z0-9_-"  # a regex character class body: no dots, slashes or controls
KEY_RE = re.compile(f"[{KEY_CHARS}]{{1,{KEY_MAX_LEN}}}")
# The same rule for Arrow's RE2, where `$` matches only at the very end (Python's `$` also
# matches before a final newline, which is why `KEY_RE` is used with fullmatch).
KEY_PATTERN = "^" + KEY_RE.pattern + "$"
IMAGE_EXT = "jpg"
META_EXT = "json"
MEMBER_RE = re.compile(rf"^([{KEY_CHARS}]+)\.({IMAGE_EXT}|{META_EXT})$")


def is_valid_key(key: str) -> bool:
    return KEY_RE.fullmatch(key) is not None


def member_names(key: str) -> tuple[str, str]:
    """The two members of a sample, in the order they are stored."""
    return f"{key}.{IMAGE_EXT}", f"{key}.{META_EXT}"


# -- files ----------------------------------------------------------------------------------

DATASET_JSON = "dataset.json"
CONFIG_JSON = "config.json"
SHARD_DIR = "shards"
INDEX_DIR = "index"
# The version-1 index files. Version 2 keeps each table in a folder of parts instead (the
# names, parts and reading live in weakly_base/index_tables.py); these stay for v1 readers and
# for writers until they switch.
SHARDS_INDEX = f"{INDEX_DIR}/shards.parquet"
SAMPLES_INDEX = f"{INDEX_DIR}/samples.parquet"
REJECTS_INDEX = f"{INDEX_DIR}/rejects.parquet"
EVAL_MATCHES_INDEX = f"{INDEX_DIR}/eval_matches.parquet"
STATS_SUFFIX = ".stats.json"


def shard_name(split: str, bucket: int, n: int) -> str:
    """`{split}-{bucket:02d}-{n:06d}.tar`: the file name of the n-th shard of a weight bucket."""
    return f"{split}-{bucket:02d}-{n:06d}.tar"


def stats_name(tar_name: str) -> str:
    """The per-shard commit marker beside a tar (`x.tar` -> `x.stats.json`)."""
    return tar_name[: -len(".tar")] + STATS_SUFFIX


# -- weight buckets -------------------------------------------------------------------------

BUCKET_FACTOR = 2.0
MAX_BUCKETS = 100


def weight_bucket(weight: float, max_weight: float) -> int:
    """Log-scale bucket: bucket b holds weights in (max/2^(b+1), max/2^b].

    Shards are cut within a bucket, so a shard's weights differ by at most a factor of 2 and a
    sampler that visits shards by their weight sum reads almost every byte it fetches.
    """
    if weight <= 0 or max_weight <= 0:
        raise ValueError("weights must be positive")
    ratio = max_weight / weight
    b = int(math.floor(math.log(ratio, BUCKET_FACTOR) + 1e-9))
    return min(MAX_BUCKETS - 1, max(0, b))


# -- index tables ---------------------------------------------------------------------------

SHARDS_SCHEMA = pa.schema(
    [
        ("file", pa.string()),
        ("split", pa.string()),
        ("bucket", pa.int32()),
        ("n", pa.int64()),
        ("weight_sum", pa.float64()),
        ("weight_max", pa.float64()),
        ("bytes", pa.int64()),
        ("sha256", pa.string()),
    ]
)
SAMPLES_SCHEMA = pa.schema(
    [
        ("key", pa.string()),
        ("split", pa.string()),
        ("shard", pa.string()),
        ("labels", pa.list_(pa.int32())),
        ("weight", pa.float64()),
        ("phash", pa.uint64()),
        ("offset", pa.int64()),
        ("size", pa.int64()),
    ]
)
# Where each sample lies in its tar: `offset` of its first member's header and `size`, the
# bytes from there to the end of its last member's padded data (the `.jpg` and `.json` members
# are contiguous), so an object-store reader can fetch a sample alone. Added within format
# version 2 without a version bump: a part written before has neither column and reads with
# both null (weakly_base/index_tables.py), and a reader then streams the tar as before.
SAMPLES_RANGE_COLUMNS = ("offset", "size")
REJECTS_SCHEMA = pa.schema(
    [
        ("source", pa.string()),
        ("row", pa.int64()),
        ("key", pa.string()),
        ("reason", pa.string()),
        ("detail", pa.string()),
    ]
)
EVAL_MATCHES_SCHEMA = pa.schema(
    [
        ("key", pa.string()),
        ("eval_set", pa.string()),
        ("eval_id", pa.string()),
        ("distance", pa.int32()),
    ]
)


# -- dataset.json ---------------------------------------------------------------------------


def check_format(meta: dict, where: str) -> None:
    """Refuse a dataset.json of another format or an unreadable version, saying what this code
    reads."""
    fmt, version = meta.get("format"), meta.get("format_version")
    if fmt != FORMAT_NAME or type(version) is not int or version not in READABLE_VERSIONS:
        readable = ", ".join(str(v) for v in READABLE_VERSIONS)
        raise ValueError(
            f"{where}: format {fmt!r} version {version!r}; this code reads {FORMAT_NAME!r} "
            f"versions {readable} (re-run ingest, or use a matching version of weakly)"
        )


def dataset_header(version: int = FORMAT_VERSION) -> dict:
    """The fields every dataset.json starts with; `version` other than the current one only
    for writing test fixtures of an older, still readable version."""
    if version not in READABLE_VERSIONS:
        raise ValueError(f"format version {version!r} is not one of {READABLE_VERSIONS}")
    return {"format": FORMAT_NAME, "format_version": version}


# -- tar members ----------------------------------------------------------------------------


def member_header(name: str, size: int) -> tarfile.TarInfo:
    """A member header with fixed metadata (mtime 0, uid/gid 0, mode 0644, no owner names), so
    the same samples always give the same bytes."""
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = size, 0, 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


@dataclass(frozen=True)
class ShardRecord:
    """One sample as a writer hands it over: its key, image bytes and sample json."""

    key: str
    jpg: bytes
    meta: dict


def encode_meta(meta: dict) -> bytes:
    return json.dumps(meta, sort_keys=True, ensure_ascii=False).encode()


@dataclass(frozen=True)
class ShardTar:
    """One shard as written: its bytes, and per sample in stored (key) order its key and the
    byte range its two members take (`offsets[i]` of the `.jpg` header, `sizes[i]` to the end
    of the `.json` member's padded data): the samples index's `offset` and `size`."""

    data: bytes
    keys: list[str]
    offsets: list[int]
    sizes: list[int]


def shard_bytes(records: Iterable[ShardRecord]) -> tuple[bytes, list[str]]:
    """A whole shard as USTAR tar bytes, members sorted by key; returns the bytes and the keys
    in stored order. Plain `tarfile` and `webdataset` read it."""
    tar = shard_tar(records)
    return tar.data, tar.keys


def shard_tar(records: Iterable[ShardRecord]) -> ShardTar:
    """`shard_bytes` with each sample's byte range in the tar (`ShardTar`)."""
    ordered = sorted(records, key=lambda r: r.key)
    # The bytes `tarfile.open(mode="w", format=USTAR_FORMAT)` + `addfile` + `close` write,
    # assembled here: addfile copies each header and streams each payload through a file
    # object, ~40% of a shard task's CPU at ~2 members a sample (BENCHMARKS.md, issue 17).
    parts: list[bytes] = []
    offsets: list[int] = []
    sizes: list[int] = []
    at = 0
    for record in ordered:
        if not is_valid_key(record.key):
            raise ValueError(f"sample key {record.key!r} does not match {KEY_RE.pattern}")
        meta = encode_meta(record.meta)
        jpg_name, json_name = member_names(record.key)
        offsets.append(at)
        for name, payload in ((jpg_name, record.jpg), (json_name, meta)):
            header = member_header(name, len(payload)).tobuf(
                tarfile.USTAR_FORMAT, tarfile.ENCODING, "surrogateescape"
            )
            pad = -len(payload) % tarfile.BLOCKSIZE
            parts += (header, payload, tarfile.NUL * pad)
            at += len(header) + len(payload) + pad
        sizes.append(at - offsets[-1])
    end = tarfile.NUL * (2 * tarfile.BLOCKSIZE)  # end of archive, then fill the last record
    parts += (end, tarfile.NUL * (-(at + len(end)) % tarfile.RECORDSIZE))
    return ShardTar(b"".join(parts), [r.key for r in ordered], offsets, sizes)


def with_ranges(samples: pa.Table, tar: ShardTar) -> pa.Table:
    """A shard's samples-index rows (in stored order) with `offset` and `size` from its tar,
    cast to `SAMPLES_SCHEMA`; rows that are not the tar's keys in its order are refused."""
    if samples["key"].to_pylist() != tar.keys:
        raise ValueError(
            f"the samples rows ({samples.num_rows}) are not the shard's {len(tar.keys)} keys in "
            "stored order"
        )
    base = samples.drop_columns([c for c in SAMPLES_RANGE_COLUMNS if c in samples.column_names])
    base = base.append_column("offset", pa.array(tar.offsets, pa.int64()))
    base = base.append_column("size", pa.array(tar.sizes, pa.int64()))
    return base.select(SAMPLES_SCHEMA.names).cast(SAMPLES_SCHEMA)


def shard_stats(
    file: str, data: bytes, n: int, split: str, bucket: int, weights: Iterable[float]
) -> dict:
    """The per-shard stats: the `.stats.json` commit marker and the row of the shards index table
    (where `file` is prefixed with `shards/`).

    `weight_sum` is numpy's float64 sum of `weights` in the order given (pairwise summation,
    which can differ from Python's `sum` in the last bit): what ingest has always written, so
    the same samples keep giving the same bytes."""
    w = np.asarray([float(x) for x in weights], dtype=np.float64)
    return {
        "file": file,
        "split": split,
        "bucket": int(bucket),
        "n": int(n),
        "weight_sum": float(w.sum()),
        "weight_max": float(w.max()) if len(w) else 0.0,
        "bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
    }


# -- reading --------------------------------------------------------------------------------

DEFAULT_MAX_MEMBER_BYTES = 32 << 20


class TarRecord(NamedTuple):  # a tuple: one is built per sample read
    """One sample as found in a shard: its key, and either its bytes and parsed json or the
    reason it cannot be used (`problem`; then `jpg`/`meta` may be None)."""

    key: str
    jpg: bytes | None
    meta: dict | None
    problem: str | None = None


def _parse_meta(data: bytes) -> tuple[dict | None, str | None]:
    """The sample json, or why not. Deep nesting raises RecursionError, not ValueError."""
    try:
        meta = json.loads(data)
    except (ValueError, RecursionError) as exc:
        return None, f"sample json unreadable ({type(exc).__name__})"
    if not isinstance(meta, dict):
        return None, f"sample json is a {type(meta).__name__}, not an object"
    return meta, None


def _member_problem(member: TarMember) -> str | None:
    if member.kind != tar_reader.FILE and member.kind != tar_reader.SPARSE:
        return f"member {member.name!r} is a {member.kind}, not a file"
    return member.skipped


def iter_shard_records(
    fileobj,
    max_member_bytes: int = DEFAULT_MAX_MEMBER_BYTES,
    keys: Container[str] | None = None,
) -> Iterator[TarRecord]:
    """Every sample a shard names (only those in `keys` when given), in stored order, usable or
    not. Members of other keys are passed over unread: their headers are parsed, their data
    skipped by a seek (`tar_reader.iter_members`), so a reader that wants a tenth of a shard
    reads about a tenth of its bytes.

    Members are paired as written: `{key}.jpg` then `{key}.json`. A pair whose halves are both
    readable regular files and whose json is an object is usable; a pair with a skipped half
    (over the cap, sparse, a link, an oversized extended header) or unreadable json, and a
    half without its partner, come with the reason. Members whose names do not match the key
    rule are not samples and are passed over. Reading goes through
    `weakly_base.tar_reader`, so no member costs more than the cap, and a broken archive ends
    with `TarError` (a ValueError) after the records before it.
    """
    key, jpg, jpg_problem = None, None, None

    matched: list = [None, None]  # the last name `want` matched, and its match

    def want(name: str) -> bool:
        m = MEMBER_RE.match(name)
        matched[0], matched[1] = name, m
        return m is not None and (keys is None or m.group(1) in keys)

    members = tar_reader.iter_members(fileobj, want, max_member_bytes)
    for member in members:
        m = matched[1] if matched[0] is member.name else MEMBER_RE.match(member.name)
        if m is None:
            continue
        name, ext = m.group(1), m.group(2)
        if keys is not None and name not in keys:
            continue
        problem = _member_problem(member)
        if ext == IMAGE_EXT:
            if key is not None:
                yield TarRecord(key, None, None, "no json member after the image")
            key, jpg, jpg_problem = name, member.data, problem
            continue
        if name != key:
            if key is not None:
                yield TarRecord(key, None, None, "no json member after the image")
            yield TarRecord(name, None, None, "no image member before the json")
            key, jpg, jpg_problem = None, None, None
            continue
        record_jpg, key, jpg = jpg, None, None
        if jpg_problem or problem:
            yield TarRecord(name, None, None, jpg_problem or problem)
            continue
        meta, bad = _parse_meta(member.data)
        yield TarRecord(name, record_jpg, meta, bad)
    if key is not None:
        yield TarRecord(key, None, None, "no json member after the image")


def iter_tar_records(
    fileobj, max_member_bytes: int = DEFAULT_MAX_MEMBER_BYTES
) -> Iterator[tuple[str, bytes, dict]]:
    """(key, jpg bytes, parsed json) of every complete sample of a tar stream, in stored order.

    A sample is complete when its `.jpg` and `.json` arrive for the same key; anything else
    (odd names, oversize members, orphan halves, unreadable json) is dropped here
    (`iter_shard_records` says why). Member names are only matched against the key rule, never
    used as paths. A broken archive raises `TarError` after the samples before the break.
    """
    for record in iter_shard_records(fileobj, max_member_bytes):
        if record.problem is None:
            yield record.key, record.jpg, record.meta
