"""Reading manifests: parquet, jsonl, csv/tsv (optionally gzipped), folders of them, fsspec URLs.

Every row comes out with its provenance (`source` file, 0-based `row`), so a rejected row can be
named exactly. A file that cannot be parsed at all raises `ManifestError` naming the file and,
where the parser knows it, the line; a row whose fields are unusable is kept and rejected later
with a reason, so input rows = written + rejected holds.
"""

from __future__ import annotations

import csv
import gzip
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


ERROR_FIELD = "__weakly_row_error__"
# Per-row bounds on tags. Real posts carry tens of tags, each a word or two; a row past these
# is rejected (`bad_tags`) rather than carried into pass 2, the sample json and every shard.
MAX_TAGS_PER_ROW = 10_000
MAX_TAG_CHARS = 1024
# Python's csv module refuses fields over 128 kB by raising for the whole file; one oversized
# field must cost one row, so the limit is lifted and the tag caps above decide.
MAX_CSV_FIELD = 1 << 30


class ManifestError(ValueError):
    """A manifest file that cannot be read at all; the message names file and line."""


@dataclass(frozen=True)
class Columns:
    """Which manifest columns hold what (configurable: `--key-column` etc.)."""

    key: str = "key"
    url: str = "url"
    path: str = "path"
    image: str = "image"
    tags: str = "tags"
    extra: tuple[str, ...] = field(default_factory=tuple)


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


def _read_bytes(url: str, storage_options: dict | None = None) -> bytes:
    with fsspec.open(url, "rb", **(storage_options or {})) as handle:
        data = handle.read()
    if url.endswith(".gz"):
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as exc:
            raise ManifestError(f"{url}: not a valid gzip file ({exc})") from None
    return data


def _as_tags(value: object) -> tuple[list[str] | None, str | None]:
    """Tags as a list of strings, or (None, why). Strings split on whitespace and commas."""
    if value is None:
        return None, None
    if isinstance(value, bytes):
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError:
            return None, "tags are not valid UTF-8"
    if isinstance(value, str):
        if len(value) > MAX_TAGS_PER_ROW * (MAX_TAG_CHARS + 1):
            return None, f"tags field of {len(value)} characters"
        return _bounded([t for t in value.replace(",", " ").split() if t])
    if isinstance(value, list | tuple):
        if len(value) > MAX_TAGS_PER_ROW:
            return None, f"{len(value)} tags; at most {MAX_TAGS_PER_ROW}"
        tags = []
        for item in value:
            if isinstance(item, bytes):
                try:
                    item = item.decode("utf-8")
                except UnicodeDecodeError:
                    return None, "a tag is not valid UTF-8"
            if item is None:
                continue
            if not isinstance(item, str):
                return None, f"a tag is a {type(item).__name__}, not a string"
            tags.append(item)
        return _bounded(tags)
    return None, f"tags are a {type(value).__name__}, not a list or string"


def _bounded(tags: list[str]) -> tuple[list[str] | None, str | None]:
    if len(tags) > MAX_TAGS_PER_ROW:
        return None, f"{len(tags)} tags; at most {MAX_TAGS_PER_ROW}"
    longest = max((len(t) for t in tags), default=0)
    if longest > MAX_TAG_CHARS:
        return None, f"a tag of {longest} characters; at most {MAX_TAG_CHARS}"
    return tags, None


def _records_to_table(source: str, records: list[dict], columns: Columns) -> pa.Table:
    out: dict[str, list] = {name: [] for name in ROWS_SCHEMA.names}
    for row, record in enumerate(records):
        if ERROR_FIELD in record:
            record, row_error = {}, record[ERROR_FIELD]
            tags = None
        else:
            tags, tag_error = _as_tags(record.get(columns.tags))
            row_error = f"bad_tags: {tag_error}" if tag_error else None
        image = record.get(columns.image)
        if isinstance(image, str):
            image = None  # inline images must be bytes; a string is treated as missing
        key = record.get(columns.key)
        extra = {c: record.get(c) for c in columns.extra if c in record}
        out["source"].append(source)
        out["row"].append(row)
        out["key"].append(None if key is None else str(key))
        out["url"].append(_str_or_none(record.get(columns.url)))
        out["path"].append(_str_or_none(record.get(columns.path)))
        out["image"].append(image)
        out["tags"].append(tags)
        out["row_error"].append(row_error)
        out["extra"].append(json.dumps(extra, default=str, ensure_ascii=False) if extra else None)
    return pa.table(out, schema=ROWS_SCHEMA)


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


def _columnar_tags(table: pa.Table, name: str) -> tuple[pa.Array, pa.Array] | None:
    """(tags as list<string>, row error) without a Python pass over list columns, when the
    column is a list of strings or a string; else None. Same rules and caps as `_as_tags`."""
    n = table.num_rows
    no_errors = pa.nulls(n, pa.string())
    if name not in table.column_names:
        return pa.nulls(n, pa.list_(pa.string())), no_errors
    column = table[name].combine_chunks()
    if pa.types.is_null(column.type):
        return pa.nulls(n, pa.list_(pa.string())), no_errors
    if column.type in _STRINGS:
        # Python's split() decides what whitespace is; one call per row is cheap and exact.
        parsed = [_as_tags(v) for v in column.to_pylist()]
        return (
            pa.array([t for t, _ in parsed], pa.list_(pa.string())),
            pa.array([f"bad_tags: {e}" if e else None for _, e in parsed], pa.string()),
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
    too_long = pc.greater(pc.utf8_length(values), MAX_TAG_CHARS).to_numpy(zero_copy_only=False)
    over = np.bincount(parents[too_long], minlength=n) > 0
    over |= pc.fill_null(pc.list_value_length(column), 0).to_numpy(zero_copy_only=False) > (
        MAX_TAGS_PER_ROW
    )
    errors = no_errors
    if over.any():  # rare: let the row-by-row rules word the reason
        bad = np.flatnonzero(over)
        reasons = [_as_tags(t)[1] for t in column.take(pa.array(bad)).to_pylist()]
        mask = pa.array(over)
        errors = pc.replace_with_mask(
            errors, mask, pa.array([f"bad_tags: {r}" for r in reasons], pa.string())
        )
        column = pc.if_else(mask, pa.nulls(n, column.type), column)
    return column, errors


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
    tags, row_error = parsed
    extra: pa.Array = pa.nulls(n, pa.string())
    carried = [c for c in columns.extra if c in table.column_names]
    if carried:
        extra = pa.array(
            [
                json.dumps(record, default=str, ensure_ascii=False)
                for record in table.select(carried).to_pylist()
            ],
            pa.string(),
        )
    return pa.table(
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


def _str_or_none(value: object) -> str | None:
    if value is None or (isinstance(value, float) and value != value):
        return None
    return str(value) if not isinstance(value, bytes) else value.decode("utf-8", "replace")


def _read_jsonl(url: str, data: bytes) -> list[dict]:
    """One record per line; a line that is not UTF-8 or not JSON is one bad row, not a bad file."""
    records = []
    for number, raw in enumerate(data.split(b"\n"), 1):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError:
            records.append({ERROR_FIELD: f"bad_row: {url}: line {number}: not valid UTF-8"})
            continue
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            record = {ERROR_FIELD: f"bad_row: {url}: line {number}: not valid JSON ({exc.msg})"}
        if not isinstance(record, dict):
            record = {ERROR_FIELD: f"bad_row: {url}: line {number}: not a JSON object"}
        records.append(record)
    return records


def _read_delimited(url: str, text: str, delimiter: str) -> list[dict]:
    csv.field_size_limit(max(csv.field_size_limit(), MAX_CSV_FIELD))
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    try:
        header = next(reader)
    except StopIteration:
        return []
    except csv.Error as exc:
        raise ManifestError(f"{url}: line 1: {exc}") from None
    records = []
    try:
        for fields in reader:
            if not fields:
                continue
            if len(fields) != len(header):
                message = f"{len(fields)} fields, header has {len(header)}"
                records.append({ERROR_FIELD: f"bad_row: {url}: line {reader.line_num}: {message}"})
                continue
            records.append(
                {k: (v if v != "" else None) for k, v in zip(header, fields, strict=True)}
            )
    except csv.Error as exc:
        raise ManifestError(f"{url}: line {reader.line_num}: {exc}") from None
    return records


def _columnar_jsonl(url: str, data: bytes, columns: Columns) -> pa.Table | None:
    """A clean JSON-lines file parsed by Arrow; None when anything is unusual (a bad line,
    mixed types, NaN, carried-through columns whose absence per line must be kept), so the
    line-by-line reader, which names bad lines, decides instead."""
    if columns.extra:
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


def read_manifest(
    url: str, columns: Columns = Columns(), storage_options: dict | None = None
) -> pa.Table:
    """One manifest file as rows in `ROWS_SCHEMA`, in file order."""
    name = _strip_compression(url.lower())
    data = _read_bytes(url, storage_options)
    if name.endswith(".parquet"):
        try:
            table = pq.read_table(io.BytesIO(data))
        except (pa.ArrowInvalid, OSError) as exc:
            raise ManifestError(f"{url}: not a readable parquet file ({exc})") from None
        return _columnar_to_rows(url, table, columns) or _records_to_table(
            url, table.to_pylist(), columns
        )
    if name.endswith((".jsonl", ".ndjson", ".json")):
        fast = _columnar_jsonl(url, data, columns)
        return fast if fast is not None else _records_to_table(url, _read_jsonl(url, data), columns)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ManifestError(f"{url}: line {line}: not valid UTF-8") from None
    if name.endswith((".csv", ".tsv")):
        delimiter = "\t" if name.endswith(".tsv") else ","
        return _records_to_table(url, _read_delimited(url, text, delimiter), columns)
    raise ManifestError(f"{url}: unknown manifest type; use one of {MANIFEST_SUFFIXES} (+ .gz)")
