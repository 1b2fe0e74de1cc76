"""Reading manifests: parquet, jsonl, csv/tsv (optionally gzipped), folders of them, fsspec URLs.

Every row comes out with its provenance (`source` file, 0-based `row`), so a rejected row can be
named exactly. A file that cannot be read at all (not a regular file, over the size or row cap,
not gzip, not parquet, an unreadable CSV header) raises `ManifestError` naming the file and,
where the parser knows it, the line (pipeline/manifest_source.py); a row whose fields are
unusable is kept and rejected later with a reason, so input rows = written + rejected holds
(pipeline/manifest_text.py says how text rows are counted). Per-row caps: tags (count, length:
an over-long tag is dropped and counted, a row with nothing else is `bad_tags`) and the JSON of
`--extra-columns` (`bad_extra`), so every sample json stays far below what the trainer reads.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterable
from dataclasses import dataclass, field

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pajson
import pyarrow.parquet as pq

from .arrow_lists import lists_from_parents
from .manifest_source import (
    MAX_MANIFEST_BYTES,
    MAX_MANIFEST_ROWS,
    ManifestError,
    check_line_count,
    read_manifest_bytes,
)
from .manifest_text import ERROR_FIELD, MAX_JSON_DEPTH, bracket_bound, read_delimited, read_jsonl

__all__ = [
    "MAX_EXTRA_BYTES",
    "MAX_MANIFEST_BYTES",
    "MAX_MANIFEST_ROWS",
    "MAX_TAGS_PER_ROW",
    "MAX_TAG_CHARS",
    "ROWS_SCHEMA",
    "Columns",
    "ManifestError",
    "list_manifest_files",
    "read_manifest",
    "tags_dropped",
]

MANIFEST_SUFFIXES = (".parquet", ".jsonl", ".json", ".ndjson", ".csv", ".tsv")

ROWS_SCHEMA = pa.schema(
    [
        ("source", pa.string()),
        ("row", pa.int64()),
        ("key", pa.string()),
        ("url", pa.string()),
        ("path", pa.string()),
        ("image", pa.binary()),
        ("tags", pa.list_(pa.string())),
        ("row_error", pa.string()),  # why the row is unusable (bad JSON line, non-UTF-8 tags, ...)
        ("extra", pa.string()),  # JSON of carried-through columns
    ]
)


# Per-row bounds on tags. Real posts carry tens of tags, each a word or two. A row with more
# tags is rejected (`bad_tags`) rather than carried into pass 2, the sample json and every
# shard; a tag longer than MAX_TAG_CHARS is dropped and counted (it names no synset, like an
# unknown tag), and a row left with no tag is `bad_tags`.
MAX_TAGS_PER_ROW = 10_000
MAX_TAG_CHARS = 1024
# The `--extra-columns` of one row, as UTF-8 JSON, at most this many bytes, else the row is
# `bad_extra`. The sample json carries them; the trainer skips a member over 32 MiB without a
# word, so a 40 MB value used to vanish from training silently.
MAX_EXTRA_BYTES = 64 << 10
# Tags dropped from a file's kept rows, carried in the rows table's schema metadata.
_DROPPED_KEY = b"weakly.tags_dropped"


@dataclass(frozen=True)
class Columns:
    """Which manifest columns hold what (configurable: `--key-column` etc.)."""

    key: str = "key"
    url: str = "url"
    path: str = "path"
    image: str = "image"
    tags: str = "tags"
    extra: tuple[str, ...] = field(default_factory=tuple)

    def used(self) -> tuple[str, ...]:
        """Every column the job reads (others are never decoded)."""
        return (self.key, self.url, self.path, self.image, self.tags, *self.extra)


def _strip_compression(name: str) -> str:
    return name[:-3] if name.endswith(".gz") else name


def list_manifest_files(inputs: Iterable[str], storage_options: dict | None = None) -> list[str]:
    """Expand folders and globs into manifest files, sorted so the job order is stable."""
    files: list[str] = []
    for item in inputs:
        fs, root = fsspec.core.url_to_fs(item, **(storage_options or {}))
        protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
        prefix = "" if protocol in ("file", "local") else f"{protocol}://"
        if fs.isdir(root):
            found = sorted(
                p for p in fs.find(root) if _strip_compression(p).endswith(MANIFEST_SUFFIXES)
            )
            if not found:
                raise ManifestError(f"{item}: folder holds no manifest files {MANIFEST_SUFFIXES}")
            files.extend(prefix + p for p in found)
        elif fs.exists(root):
            files.append(item)
        else:
            raise ManifestError(f"{item}: no such manifest file or folder")
    return files


def tags_dropped(table: pa.Table) -> int:
    """How many over-long tags `read_manifest` dropped from the rows it kept."""
    return int((table.schema.metadata or {}).get(_DROPPED_KEY, b"0"))


def _with_dropped(table: pa.Table, dropped: int) -> pa.Table:
    return table.replace_schema_metadata({_DROPPED_KEY: str(dropped).encode()})


def _as_tags(value: object) -> tuple[list[str] | None, int, str | None]:
    """(tags as a list of strings, over-long tags dropped, None) or (None, 0, why). Strings
    split on whitespace and commas."""
    if value is None:
        return None, 0, None
    if isinstance(value, bytes):
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError:
            return None, 0, "tags are not valid UTF-8"
    if isinstance(value, str):
        if len(value) > MAX_TAGS_PER_ROW * (MAX_TAG_CHARS + 1):
            return None, 0, f"tags field of {len(value)} characters"
        return _bounded([t for t in value.replace(",", " ").split() if t])
    if isinstance(value, list | tuple):
        if len(value) > MAX_TAGS_PER_ROW:
            return None, 0, f"{len(value)} tags; at most {MAX_TAGS_PER_ROW}"
        tags = []
        for item in value:
            if isinstance(item, bytes):
                try:
                    item = item.decode("utf-8")
                except UnicodeDecodeError:
                    return None, 0, "a tag is not valid UTF-8"
            if item is None:
                continue
            if not isinstance(item, str):
                return None, 0, f"a tag is a {type(item).__name__}, not a string"
            tags.append(item)
        return _bounded(tags)
    return None, 0, f"tags are a {type(value).__name__}, not a list or string"


def _bounded(tags: list[str]) -> tuple[list[str] | None, int, str | None]:
    """The tags within the caps: too many is the row's error; an over-long tag is dropped and
    counted, unless no other tag is left, which is the row's error."""
    if len(tags) > MAX_TAGS_PER_ROW:
        return None, 0, f"{len(tags)} tags; at most {MAX_TAGS_PER_ROW}"
    kept = [t for t in tags if len(t) <= MAX_TAG_CHARS]
    if len(kept) == len(tags):
        return tags, 0, None
    if not kept:
        return None, 0, _all_too_long(len(tags), max(len(t) for t in tags))
    return kept, len(tags) - len(kept), None


def _all_too_long(n: int, longest: int) -> str:
    if n == 1:
        return f"a tag of {longest} characters; at most {MAX_TAG_CHARS}"
    return f"{n} tags of up to {longest} characters, none within {MAX_TAG_CHARS}"


def _extra_json(values: dict) -> tuple[str | None, str | None]:
    """(the row's carried-through columns as JSON, None), or (None, why) over the cap."""
    if not values:
        return None, None
    text = json.dumps(values, default=str, ensure_ascii=False)
    if len(text) * 4 > MAX_EXTRA_BYTES and len(size := text.encode()) > MAX_EXTRA_BYTES:
        return None, f"bad_extra: {len(size):,} bytes of JSON; at most {MAX_EXTRA_BYTES:,}"
    return text, None


def _records_to_table(source: str, records: list[dict], columns: Columns) -> pa.Table:
    out: dict[str, list] = {name: [] for name in ROWS_SCHEMA.names}
    dropped = 0
    for row, record in enumerate(records):
        if ERROR_FIELD in record:
            record, row_error = {}, record[ERROR_FIELD]
            tags, n_dropped = None, 0
        else:
            tags, n_dropped, tag_error = _as_tags(record.get(columns.tags))
            row_error = f"bad_tags: {tag_error}" if tag_error else None
        image = record.get(columns.image)
        if isinstance(image, str):
            image = None  # inline images must be bytes; a string is treated as missing
        key = record.get(columns.key)
        extra, extra_error = _extra_json({c: record.get(c) for c in columns.extra if c in record})
        row_error = row_error or extra_error
        dropped += n_dropped if row_error is None else 0
        out["source"].append(source)
        out["row"].append(row)
        out["key"].append(None if key is None else str(key))
        out["url"].append(_str_or_none(record.get(columns.url)))
        out["path"].append(_str_or_none(record.get(columns.path)))
        out["image"].append(image)
        out["tags"].append(tags)
        out["row_error"].append(row_error)
        out["extra"].append(extra)
    return _with_dropped(pa.table(out, schema=ROWS_SCHEMA), dropped)


_STRINGS = (pa.string(), pa.large_string())
_BINARIES = (pa.binary(), pa.large_binary())


def _column(table: pa.Table, name: str, want: pa.DataType, accept: tuple) -> pa.Array | None:
    """The column cast to `want` if its type is one of `accept` (or all-null), else None."""
    n = table.num_rows
    if name not in table.column_names:
        return pa.nulls(n, want)
    column = table[name].combine_chunks()
    if pa.types.is_null(column.type):
        return pa.nulls(n, want)
    if column.type not in accept:
        return None
    return column.cast(want)


def _columnar_tags(table: pa.Table, name: str) -> tuple[pa.Array, pa.Array, np.ndarray] | None:
    """(tags as list<string>, row error, over-long tags dropped per row) without a Python pass
    over list columns, when the column is a list of strings or a string; else None. Same rules
    and caps as `_as_tags`."""
    n = table.num_rows
    no_errors = pa.nulls(n, pa.string())
    if name not in table.column_names:
        return pa.nulls(n, pa.list_(pa.string())), no_errors, np.zeros(n, np.int64)
    column = table[name].combine_chunks()
    if pa.types.is_null(column.type):
        return pa.nulls(n, pa.list_(pa.string())), no_errors, np.zeros(n, np.int64)
    if column.type in _STRINGS:
        # Python's split() decides what whitespace is; one call per row is cheap and exact.
        parsed = [_as_tags(v) for v in column.to_pylist()]
        return (
            pa.array([t for t, _, _ in parsed], pa.list_(pa.string())),
            pa.array([f"bad_tags: {e}" if e else None for _, _, e in parsed], pa.string()),
            np.array([d for _, d, _ in parsed], np.int64),
        )
    is_list = pa.types.is_list(column.type) or pa.types.is_large_list(column.type)
    if not is_list or column.type.value_type not in _STRINGS:
        return None
    column = column.cast(pa.list_(pa.string()))
    values = pc.list_flatten(column)
    parents = pc.list_parent_indices(column).to_numpy(zero_copy_only=False)
    if values.null_count:  # null items are skipped, as in the row-by-row reader
        keep = pc.is_valid(values)
        parents, values = parents[keep.to_numpy(zero_copy_only=False)], values.filter(keep)
        rebuilt = lists_from_parents(parents, values, n)
        column = pc.if_else(pc.is_null(column), pa.nulls(n, column.type), rebuilt)
    lengths = np.bincount(parents, minlength=n)
    too_long = pc.greater(pc.utf8_length(values), MAX_TAG_CHARS).to_numpy(zero_copy_only=False)
    long_per_row = np.bincount(parents[too_long], minlength=n)
    over = (lengths > MAX_TAGS_PER_ROW) | ((long_per_row == lengths) & (lengths > 0))
    dropped = np.where(over, 0, long_per_row)
    whole = column
    if dropped.any():  # rare: rebuild the lists without the over-long tags
        keep = ~too_long
        rebuilt = lists_from_parents(parents[keep], values.filter(pa.array(keep)), n)
        column = pc.if_else(pc.is_null(column), pa.nulls(n, column.type), rebuilt)
    errors = no_errors
    if over.any():  # rare: let the row-by-row rules word the reason
        bad = np.flatnonzero(over)
        reasons = [_as_tags(t)[2] for t in whole.take(pa.array(bad)).to_pylist()]
        mask = pa.array(over)
        errors = pc.replace_with_mask(
            errors, mask, pa.array([f"bad_tags: {r}" for r in reasons], pa.string())
        )
        column = pc.if_else(mask, pa.nulls(n, column.type), column)
    return column, errors, dropped


def _columnar_to_rows(source: str, table: pa.Table, columns: Columns) -> pa.Table | None:
    """`ROWS_SCHEMA` straight from Arrow columns (no per-row Python objects), when every
    column has a plain type; None sends the table to the careful row-by-row path."""
    n = table.num_rows
    key = _column(table, columns.key, pa.string(), _STRINGS + (pa.int32(), pa.int64()))
    url = _column(table, columns.url, pa.string(), _STRINGS)
    path = _column(table, columns.path, pa.string(), _STRINGS)
    image = _column(table, columns.image, pa.binary(), _BINARIES)
    if image is None and table[columns.image].type in _STRINGS:
        image = pa.nulls(n, pa.binary())  # inline images must be bytes; a string is missing
    parsed = _columnar_tags(table, columns.tags)
    if parsed is None or any(c is None for c in (key, url, path, image)):
        return None
    tags, row_error, dropped = parsed
    extra: pa.Array = pa.nulls(n, pa.string())
    carried = [c for c in columns.extra if c in table.column_names]
    if carried:
        texts, extra_errors = [], []
        for record in table.select(carried).to_pylist():
            text, error = _extra_json(record)
            texts.append(text)
            extra_errors.append(error)
        extra = pa.array(texts, pa.string())
        row_error = pc.coalesce(row_error, pa.array(extra_errors, pa.string()))
    kept = pc.is_null(row_error).to_numpy(zero_copy_only=False)
    rows = pa.table(
        {
            "source": pa.repeat(pa.scalar(source, pa.string()), n),
            "row": pa.array(np.arange(n, dtype=np.int64)),
            "key": key,
            "url": url,
            "path": path,
            "image": image,
            "tags": tags,
            "row_error": row_error,
            "extra": extra,
        },
        schema=ROWS_SCHEMA,
    )
    return _with_dropped(rows, int(dropped[kept].sum()))


def _str_or_none(value: object) -> str | None:
    if value is None or (isinstance(value, float) and value != value):
        return None
    return str(value) if not isinstance(value, bytes) else value.decode("utf-8", "replace")


def _columnar_jsonl(url: str, data: bytes, columns: Columns) -> pa.Table | None:
    """A clean JSON-lines file parsed by Arrow; None when anything is unusual (a bad line,
    mixed types, NaN, a line that may nest deeper than MAX_JSON_DEPTH, carried-through columns
    whose absence per line must be kept), so the line-by-line reader, which names bad lines,
    decides instead."""
    if columns.extra:
        return None
    if bracket_bound(data) > MAX_JSON_DEPTH:  # Arrow's parser would crash the process
        return None
    try:
        data.decode("utf-8")  # Arrow's JSON parser lets invalid UTF-8 through into strings
    except UnicodeDecodeError:
        return None
    try:
        table = pajson.read_json(io.BytesIO(data))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None
    return _columnar_to_rows(url, table, columns)


def _read_parquet(url: str, data: bytes, columns: Columns, max_bytes: int, max_rows: int):
    """The manifest's columns of a parquet file, refused when it holds more than `max_rows`
    rows (from the footer, before decoding) or its columns decode to more than `max_bytes`
    (a small parquet file of repeated values can decode to gigabytes)."""
    try:
        parquet = pq.ParquetFile(pa.BufferReader(data))
        if parquet.metadata.num_rows > max_rows:
            raise ManifestError(
                f"{url}: {parquet.metadata.num_rows:,} rows, over the manifest cap of "
                f"{max_rows:,}; split it into several files"
            )
        schema = parquet.schema_arrow
        wanted = [c for c in dict.fromkeys(columns.used()) if c in schema.names]
        batches, size = [], 0
        for batch in parquet.iter_batches(batch_size=1 << 16, columns=wanted):
            size += batch.nbytes
            if size > max_bytes:
                raise ManifestError(
                    f"{url}: its columns decode to over {max_bytes:,} bytes, the manifest cap; "
                    "split it into several files"
                )
            batches.append(batch)
    except (pa.ArrowInvalid, OSError) as exc:
        raise ManifestError(f"{url}: not a readable parquet file ({exc})") from None
    if batches:
        return pa.Table.from_batches(batches)
    return pa.schema([schema.field(c) for c in wanted]).empty_table()


def read_manifest(
    url: str,
    columns: Columns = Columns(),
    storage_options: dict | None = None,
    max_bytes: int = MAX_MANIFEST_BYTES,
    max_rows: int = MAX_MANIFEST_ROWS,
) -> pa.Table:
    """One manifest file as rows in `ROWS_SCHEMA`, in file order; the caps are the defaults
    except in tests."""
    name = _strip_compression(url.lower())
    if not name.endswith(MANIFEST_SUFFIXES):
        raise ManifestError(f"{url}: unknown manifest type; use one of {MANIFEST_SUFFIXES} (+ .gz)")
    data = read_manifest_bytes(url, storage_options, max_bytes)
    if name.endswith(".parquet"):
        table = _read_parquet(url, data, columns, max_bytes, max_rows)
        return _columnar_to_rows(url, table, columns) or _records_to_table(
            url, table.to_pylist(), columns
        )
    is_json = name.endswith((".jsonl", ".ndjson", ".json"))
    check_line_count(url, data, max_rows, header=not is_json)
    if is_json:
        fast = _columnar_jsonl(url, data, columns)
        return fast if fast is not None else _records_to_table(url, read_jsonl(url, data), columns)
    delimiter = "\t" if name.endswith(".tsv") else ","
    return _records_to_table(url, read_delimited(url, data, delimiter), columns)
