"""Text manifests (JSON lines, CSV, TSV) as records, where one bad line costs one row.

A web manifest is written by many hands: a line may be cut, nested 100,000 deep, hold a stray
quote or a Latin-1 byte. Any of these used to fail the whole file as one `bad_manifest` row
(or, nested deep, kill the Ray worker: Arrow's JSON parser overflows its stack, Python's raises
RecursionError). Here each such line becomes one record carrying `ERROR_FIELD` (later a
`bad_row` reject naming file and line) and the rest of the file is read, so input rows =
written + rejected counts every row.

How rows are counted: a record is one row, kept or rejected; blank lines are not rows. A CSV
record usually is one physical line; a quoted field may hold line breaks, and then one record
spans several lines and is one row. A record that fails (a CSV error, the wrong number of
fields, bytes that are not UTF-8, or a quote still open after `MAX_RECORD_LINES` lines or at
the end of the file) costs its first line only, as one rejected row, and reading starts again
on the next line: an unterminated quote on line 5 rejects line 5, and lines 6, 7, ... are read
as rows of their own.
"""

from __future__ import annotations

import csv
import io
import json
import re

import numpy as np

from .manifest_source import ManifestError

ERROR_FIELD = "__weakly_row_error__"
# JSON nested deeper than this is a bad row. Real rows are 2-3 deep (an object of lists);
# carried-through columns may nest a little more. Arrow's parser crashes the process past a
# few thousand levels and Python's raises past ~1000, so the depth is checked before either.
MAX_JSON_DEPTH = 64
# A CSV quoted field may run over at most this many physical lines. It bounds how much of the
# file one stray quote can swallow, and the work of re-reading after it (each line is parsed
# at most this many times).
MAX_RECORD_LINES = 32
# Python's csv module refuses fields over 128 kB by raising for the whole file; one oversized
# field must cost one row, so the limit is lifted and the tag caps (pipeline/manifest.py) decide.
MAX_CSV_FIELD = 1 << 30

_OPENERS = (ord("["), ord("{"))
_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.S)
_LINE_END = re.compile(rb"\r\n|\r|\n")


def bracket_bound(data: bytes, window: int = 4 << 20) -> int:
    """The most `[` and `{` bytes on any one line of `data` (strings included): an upper
    bound on every line's nesting depth, counted with numpy over windows of `window` bytes,
    without a Python step per line or a copy of the data."""
    arr = np.frombuffer(data, np.uint8)
    best = carry = 0
    for start in range(0, len(arr), window):
        part = arr[start : start + window]
        opens = np.flatnonzero((part == _OPENERS[0]) | (part == _OPENERS[1]))
        ends = np.flatnonzero(part == ord("\n"))
        per_line = np.bincount(np.searchsorted(ends, opens), minlength=len(ends) + 1)
        per_line[0] += carry  # the line that the previous window left open
        best = max(best, int(per_line.max()))
        carry = int(per_line[-1])
    return best


def json_depth(line: bytes) -> int:
    """How deep the arrays and objects of one JSON line nest (strings stripped first, so a
    bracket inside a string does not count); computed without recursion."""
    bare = np.frombuffer(_JSON_STRING.sub(b"", line), np.uint8)
    opens = (bare == _OPENERS[0]) | (bare == _OPENERS[1])
    closes = (bare == ord("]")) | (bare == ord("}"))
    steps = opens.astype(np.int64) - closes
    return int(np.cumsum(steps).max(initial=0))


def _too_deep(raw: bytes) -> bool:
    if raw.count(b"[") + raw.count(b"{") <= MAX_JSON_DEPTH:  # the cheap test: nearly every line
        return False
    return json_depth(raw) > MAX_JSON_DEPTH


def read_jsonl(url: str, data: bytes) -> list[dict]:
    """One record per line; a line that is not UTF-8, not JSON, not an object or nested too
    deep is one bad row, not a bad file. Lines are read one at a time (no list of lines)."""
    records = []
    for number, raw in enumerate(io.BytesIO(data), 1):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError:
            records.append({ERROR_FIELD: f"bad_row: {url}: line {number}: not valid UTF-8"})
            continue
        if not line.strip():
            continue
        if _too_deep(raw):
            why = f"nested deeper than {MAX_JSON_DEPTH} levels"
            records.append({ERROR_FIELD: f"bad_row: {url}: line {number}: {why}"})
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            record = {ERROR_FIELD: f"bad_row: {url}: line {number}: not valid JSON ({exc.msg})"}
        except RecursionError:  # not reached after the depth check; kept as a backstop
            record = {ERROR_FIELD: f"bad_row: {url}: line {number}: nested too deeply"}
        if not isinstance(record, dict):
            record = {ERROR_FIELD: f"bad_row: {url}: line {number}: not a JSON object"}
        records.append(record)
    return records


class _Lines:
    """Physical lines of a CSV/TSV file for a csv reader (a line ends at \\n, \\r\\n or \\r,
    as csv expects), each decoded on its own so a non-UTF-8 byte marks only its line; with
    the bookkeeping to stop a record after `MAX_RECORD_LINES` lines and to go back to the line
    after a failed record's first. Reads the bytes in place: no list of lines, no second copy
    of the file."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0  # byte offset of the next line
        self.number = 0  # lines handed out so far
        self.begin()

    def begin(self) -> None:
        """The next line starts a record."""
        self.start_pos, self.start = self.pos, self.number
        self.bad_bytes = False

    def __iter__(self) -> _Lines:
        return self

    def __next__(self) -> str:
        if self.pos >= len(self.data) or self.number - self.start >= MAX_RECORD_LINES:
            raise StopIteration  # mid-record, the reader sees a quoted field left open
        end = _LINE_END.search(self.data, self.pos)
        stop = end.end() if end else len(self.data)
        raw = self.data[self.pos : stop]
        self.pos, self.number = stop, self.number + 1
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            self.bad_bytes = True  # the record is rejected; give the parser something to read
            return raw.decode("utf-8", "replace")

    @property
    def spanned(self) -> int:
        return self.number - self.start

    def restart_after_first(self) -> None:
        """Read on from the line after the current record's first."""
        end = _LINE_END.search(self.data, self.start_pos)
        self.pos = end.end() if end else len(self.data)
        self.number = self.start + 1


_END = object()


def _next_record(reader, lines: _Lines) -> tuple[list[str] | None, str | None] | object:
    """(fields, None), (None, csv error) or `_END`, for the next non-blank record."""
    while True:
        lines.begin()
        try:
            fields = next(reader)
        except StopIteration:
            return _END
        except csv.Error as exc:
            return None, str(exc)
        if fields:
            return fields, None


def _failure(lines: _Lines, fields: list[str] | None, error: str | None, width: int) -> str | None:
    """Why the record just read is unusable, or None."""
    if error == "unexpected end of data":
        if lines.spanned >= MAX_RECORD_LINES:
            return f"a quoted field is still open after {MAX_RECORD_LINES} lines"
        return "a quoted field is still open at the end of the file"
    if error is not None:
        return error
    if lines.bad_bytes:
        return "not valid UTF-8"
    if fields is not None and len(fields) != width:
        return f"{len(fields)} fields, header has {width}"
    return None


def unquoted_records(url: str, data: bytes, delimiter: str) -> list[dict] | None:
    """The common file, at C speed: no quote character and no lone \\r, so every physical line
    is one record and the csv module cannot fail on any. None (nothing decided) when that does
    not hold or a line is not UTF-8; `careful_records` then reads the file."""
    if b'"' in data or data.count(b"\r") != data.count(b"\r\n"):
        return None
    reader = csv.reader(map(bytes.decode, io.BytesIO(data)), delimiter=delimiter, strict=True)
    records: list[dict] = []
    try:
        header = next((fields for fields in reader if fields), None)
        if header is None:
            return []
        for fields in reader:
            if not fields:
                continue
            if len(fields) == len(header):
                records.append(dict(zip(header, [v or None for v in fields], strict=True)))
            else:
                why = f"{len(fields)} fields, header has {len(header)}"
                records.append({ERROR_FIELD: f"bad_row: {url}: line {reader.line_num}: {why}"})
    except UnicodeDecodeError:
        return None
    return records


def careful_records(url: str, data: bytes, delimiter: str) -> list[dict]:
    """Any CSV/TSV file, one record at a time, each failure costing one row (see the module
    docstring); only an unreadable header fails the file."""
    lines = _Lines(data)
    reader = csv.reader(lines, delimiter=delimiter, strict=True)
    first = _next_record(reader, lines)
    if first is _END:
        return []
    header, error = first
    if header is None or lines.bad_bytes:
        why = _failure(lines, header, error, len(header or ()))
        raise ManifestError(f"{url}: line {lines.start + 1}: header: {why}")
    records: list[dict] = []
    while (record := _next_record(reader, lines)) is not _END:
        fields, error = record
        why = _failure(lines, fields, error, len(header))
        if why is None:
            records.append(dict(zip(header, [v or None for v in fields], strict=True)))
            continue
        records.append({ERROR_FIELD: f"bad_row: {url}: line {lines.start + 1}: {why}"})
        if lines.spanned > 1:
            lines.restart_after_first()
    return records


def read_delimited(url: str, data: bytes, delimiter: str) -> list[dict]:
    """CSV/TSV records as dicts by header name ("" is None); one bad record is one bad row."""
    csv.field_size_limit(max(csv.field_size_limit(), MAX_CSV_FIELD))
    fast = unquoted_records(url, data, delimiter)
    return fast if fast is not None else careful_records(url, data, delimiter)
