"""Parquet objects through a `Store`: each table is encoded in memory and written as one whole
object (weakly_base/storage.py), so a reader never meets a half-written part on any storage."""

from __future__ import annotations

import io

import pyarrow as pa
import pyarrow.parquet as pq

from weakly_base.storage import Store


def parquet_bytes(table: pa.Table, row_group_size: int | None = None) -> bytes:
    sink = io.BytesIO()
    pq.write_table(table, sink, row_group_size=row_group_size)
    return sink.getvalue()


def put_parquet(store: Store, rel: str, table: pa.Table, row_group_size: int | None = None):
    store.put(rel, parquet_bytes(table, row_group_size))


def read_parquet(store: Store, rel: str, columns: list[str] | None = None) -> pa.Table:
    try:
        with store.open(rel) as handle:
            return pq.read_table(handle, columns=columns)
    except Exception as exc:  # noqa: BLE001 - every backend raises its own types
        raise store.error("read", rel, exc) from None


def read_row_group(store: Store, rel: str, group: int) -> pa.Table:
    """One row group of a part: a pass-2 chunk reads only its own rows."""
    try:
        with store.open(rel) as handle:
            return pq.ParquetFile(handle).read_row_group(group)
    except Exception as exc:  # noqa: BLE001
        raise store.error("read", rel, exc) from None
