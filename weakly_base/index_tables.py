"""The index tables of a dataset, read the same way whatever the format version.

Format version 1 kept each table in one file (`index/samples.parquet`), which one process must
write; at billions of rows none can. Version 2 keeps each table in a folder of parquet parts
written by many tasks (`index/samples/train-03-000012.parquet`, one per shard), which
`pyarrow.dataset`, pandas and duckdb read as one table. Every reader in this repository goes
through `read_index`, so it reads both versions and no reader spells a layout of its own.

Order: a table's rows are its parts concatenated in part-name order; nothing is sorted across
parts, so a reader that needs an order sorts. Types: every part is cast to the table's schema
(weakly_base/shard_format.py), so a part written with, say, int64 where the schema says int32,
or an all-null column, reads as the schema says. Columns added to a schema after datasets
were written with it (`OPTIONAL`) read as nulls from a part that lacks them.
"""

from __future__ import annotations

import json
import os
import posixpath
from concurrent.futures import ThreadPoolExecutor

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from . import shard_format as fmt
from .storage import Store

SHARDS = "shards"
SAMPLES = "samples"
REJECTS = "rejects"
EVAL_MATCHES = "eval_matches"
SCHEMAS: dict[str, pa.Schema] = {
    SHARDS: fmt.SHARDS_SCHEMA,
    SAMPLES: fmt.SAMPLES_SCHEMA,
    REJECTS: fmt.REJECTS_SCHEMA,
    EVAL_MATCHES: fmt.EVAL_MATCHES_SCHEMA,
}
TABLES = tuple(SCHEMAS)
# Columns a part may lack (written before they existed): they read as nulls.
OPTIONAL: dict[str, tuple[str, ...]] = {SAMPLES: fmt.SAMPLES_RANGE_COLUMNS}
_ALL_OPTIONAL = frozenset(c for cols in OPTIONAL.values() for c in cols)
PART_SUFFIX = ".parquet"
_READ_THREADS = 16  # parts are read concurrently: on object stores each read is a round trip


def _check_name(name: str) -> None:
    if name not in SCHEMAS:
        raise ValueError(f"no index table {name!r}; the tables are {', '.join(TABLES)}")


def index_dir(name: str) -> str:
    """`index/<name>`: the folder of a table's parts (version 2)."""
    _check_name(name)
    return f"{fmt.INDEX_DIR}/{name}"


def v1_index_file(name: str) -> str:
    """`index/<name>.parquet`: the whole table in one file (version 1)."""
    _check_name(name)
    return f"{fmt.INDEX_DIR}/{name}{PART_SUFFIX}"


def samples_part(shard_file: str) -> str:
    """The samples part of one shard: `index/samples/<tar name minus .tar>.parquet`.

    `shard_file` is the `file` column of the shards table (`shards/x.tar`) or the bare tar name;
    one part per shard lets a reader fetch one shard's rows without reading any other's."""
    tar = posixpath.basename(shard_file)
    if not tar.endswith(".tar"):
        raise ValueError(f"{shard_file!r} is not a shard file (a .tar)")
    return f"{index_dir(SAMPLES)}/{tar[: -len('.tar')]}{PART_SUFFIX}"


def shards_part(bucket: int) -> str:
    """The shards part of one weight bucket: `index/shards/b{bucket:02d}.parquet`."""
    return f"{index_dir(SHARDS)}/b{int(bucket):02d}{PART_SUFFIX}"


def is_part_name(file_name: str) -> bool:
    """A part is a `.parquet` file whose name does not start with `.` or `_`: the files that
    `pyarrow.dataset` and pandas read from a folder (they skip `.`/`_` names as hidden)."""
    return file_name.endswith(PART_SUFFIX) and not file_name.startswith((".", "_"))


def as_store(dataset: Store | str | os.PathLike) -> Store:
    return dataset if isinstance(dataset, Store) else Store.at(dataset)


def index_parts(store: Store, name: str) -> list[str]:
    """Relative paths of a table's version-2 parts, in part-name order; [] when there are none
    (a version-1 dataset, or a version-2 table with no rows)."""
    folder = index_dir(name)
    return [f"{folder}/{n}" for n in store.list(folder) if is_part_name(n)]


def declared_version(store: Store) -> int | None:
    """`format_version` from dataset.json, or None when it is missing or unreadable."""
    try:
        meta = json.loads(store.get(fmt.DATASET_JSON))
    except Exception:  # noqa: BLE001 - absent, unreadable or not json: nothing is declared
        return None
    version = meta.get("format_version") if isinstance(meta, dict) else None
    return version if type(version) is int else None


def _columns(name: str, columns: list[str] | None) -> list[str]:
    _check_name(name)
    schema = SCHEMAS[name]
    if columns is None:
        return list(schema.names)
    unknown = [c for c in columns if c not in schema.names]
    if unknown:
        raise ValueError(
            f"index table {name!r} has no column {', '.join(map(repr, unknown))}; "
            f"its columns are {', '.join(schema.names)}"
        )
    return list(columns)


def _target(name: str, columns: list[str]) -> pa.Schema:
    schema = SCHEMAS[name]
    return pa.schema([schema.field(c) for c in columns])


def _read_file(store: Store, rel: str, target: pa.Schema) -> pa.Table:
    """One parquet file's `target` columns, cast to `target`; errors are one line naming it."""
    where = store.url_of(rel)
    try:
        with store.open(rel) as handle:
            parquet = pq.ParquetFile(handle)
            present = parquet.schema_arrow.names
            missing = [c for c in target.names if c not in present]
            required = [c for c in missing if c not in _optional(target)]
            if required:
                raise ValueError(f"{where}: no column {', '.join(map(repr, required))}")
            table = parquet.read(columns=[c for c in target.names if c in present])
    except FileNotFoundError:
        raise FileNotFoundError(f"{where}: not found") from None
    except (pa.ArrowException, OSError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ValueError(f"{where}: not a readable parquet file ({reason})") from None
    for c in missing:
        table = table.append_column(c, pa.nulls(table.num_rows, target.field(c).type))
    try:
        return table.select(target.names).cast(target)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        reason = str(exc).splitlines()[0]
        raise ValueError(f"{where}: columns do not cast to the index schema ({reason})") from None


def _optional(target: pa.Schema) -> frozenset[str]:
    """The optional columns among `target`'s (a part lacking one reads it as nulls)."""
    return _ALL_OPTIONAL.intersection(target.names)


def _read_files(store: Store, rels: list[str], target: pa.Schema) -> pa.Table:
    if len(rels) == 1:
        return _read_file(store, rels[0], target)
    with ThreadPoolExecutor(min(_READ_THREADS, len(rels))) as pool:
        tables = list(pool.map(lambda rel: _read_file(store, rel, target), rels))
    return pa.concat_tables(tables)


def read_index(
    dataset: Store | str | os.PathLike, name: str, columns: list[str] | None = None
) -> pa.Table:
    """One index table of a dataset (a Store, a local path or an fsspec URL), any version.

    Version 2 parts win when there are any, concatenated in part-name order; else the version-1
    file. A table with neither is empty (with its schema) when the table's folder exists or
    dataset.json declares version 2 or later, since a version-2 table may have no rows and so
    no parts, and on an object store then no folder; otherwise the dataset lacks an index,
    which is one line naming it. `columns` selects and orders columns; every column has the
    type of the table's schema.
    """
    store = as_store(dataset)
    target = _target(name, _columns(name, columns))
    parts = index_parts(store, name)
    if parts:
        return _read_files(store, parts, target)
    v1 = v1_index_file(name)
    if store.exists(v1):
        return _read_file(store, v1, target)
    if store.fs.isdir(store.full(index_dir(name))) or (declared_version(store) or 0) >= 2:
        return target.empty_table()
    raise FileNotFoundError(
        f"{store.url}: no index table {name!r} (neither {index_dir(name)}/*{PART_SUFFIX} nor "
        f"{v1}): not a weakly dataset, or ingest has not finished"
    )


def read_shard_samples(
    dataset: Store | str | os.PathLike, shard_file: str, columns: list[str] | None = None
) -> pa.Table:
    """The samples rows of one shard, sorted by key.

    Version 2 reads only that shard's part; version 1 must read and filter the whole samples
    file, so a reader that visits many shards of a version-1 dataset should call `read_index`
    once instead. `shard_file` is the shards table's `file` (`shards/x.tar`) or the tar name.
    """
    store = as_store(dataset)
    want = _columns(SAMPLES, columns)
    file = shard_file if "/" in shard_file else f"{fmt.SHARD_DIR}/{shard_file}"
    part, v1 = samples_part(file), v1_index_file(SAMPLES)
    read = list(dict.fromkeys([*want, "key", "shard"]))
    if store.exists(part):
        table = _read_file(store, part, _target(SAMPLES, read))
    elif store.exists(v1):
        table = _read_file(store, v1, _target(SAMPLES, read))
        table = table.filter(pc.equal(table["shard"], file))
    else:
        raise FileNotFoundError(
            f"{store.url}: no samples index for {file} (neither {part} nor {v1})"
        )
    return table.sort_by("key").select(want)
