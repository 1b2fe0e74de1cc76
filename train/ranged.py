"""Reading a shard visit's samples by their byte ranges: the object-store read path.

On s3:// a visit that emits a few samples of a shard used to stream the tar and skip the others
by seeking, but every skipped member's 512-byte header still had to be read, and each header
past the read-ahead block cost a new block: a sparse visit fetched nearly the whole shard. The
samples index now says where each sample lies (`offset`, `size`: docs/FORMAT.md), so a visit
fetches just its samples' ranges.

Ranges of one visit are coalesced where the gap between neighbours is at most `MAX_GAP`, cut at
sample boundaries into spans of at most `SPAN` bytes, and fetched `WINDOW` bytes at a time with
fsspec's `cat_ranges` (concurrent requests on s3fs), the next window in flight while this one
is parsed. A visit that reads a whole shard (`natural` sampling) so makes a few large requests,
several at once.

Nothing in a range is trusted. Its bytes must parse (weakly_base.tar_reader) as exactly
`{key}.jpg` then `{key}.json`, ending where the range ends; otherwise the sample is
`shard_unreadable` with a detail naming the shard, the key and the range, never another
sample's bytes. The members then go through the same record and index checks as a streamed
read (`iter_shard_records` with the member cap, `check_record`), so a well-formed shard gives
the same Samples and Skips either way. Where a streamed read would differ: a damaged sample
spoils only its own range here, where a stream cannot read past the damage.
"""

from __future__ import annotations

import io
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from weakly_base.shard_format import iter_shard_records, member_names
from weakly_base.tar_reader import BLOCK, TarError, iter_members

from .sample_checks import (
    BAD_WEIGHT,
    SHARD_UNREADABLE,
    IndexRow,
    Sample,
    Skip,
    check_record,
    sampling_weight,
)

MAX_GAP = 64 << 10  # fetch the gap rather than pay another request (a round trip ~ 64 KiB)
SPAN = 4 << 20  # the largest request (whole-shard reads cut into pieces fetched concurrently)
WINDOW = 16 << 20  # bytes fetched at once per visit; one more window is in flight
_END = b"\0" * (2 * BLOCK)  # an end-of-archive block after a range already checked whole


def max_range(max_member_bytes: int) -> int:
    """The largest range a sample can take whose two members are within the cap; a larger
    one is not fetched by range (the caller streams the tar, which skips big members)."""
    return 2 * (BLOCK + -(-max_member_bytes // BLOCK) * BLOCK)


@dataclass(frozen=True)
class Span:
    """One request: bytes [start, end) of the tar, holding the samples `items` (indices into
    the visit's samples)."""

    start: int
    end: int
    items: tuple[int, ...]


def plan_spans(
    ranges: Sequence[tuple[int, int]], max_gap: int = MAX_GAP, span: int = SPAN
) -> list[Span]:
    """`ranges` ((offset, size) per sample, in visit order) as requests: neighbours joined
    while the gap is at most `max_gap` and the request at most `span` bytes (a sample larger
    than `span` is a request alone). Ranges out of order start a new request."""
    out: list[Span] = []
    start = end = 0
    items: list[int] = []
    for i, (offset, size) in enumerate(ranges):
        if items and end <= offset <= end + max_gap and offset + size - start <= span:
            end = offset + size
            items.append(i)
            continue
        if items:
            out.append(Span(start, end, tuple(items)))
        start, end, items = offset, offset + size, [i]
    if items:
        out.append(Span(start, end, tuple(items)))
    return out


def plan_windows(spans: Sequence[Span], window: int = WINDOW) -> list[list[Span]]:
    """Consecutive spans grouped into fetches of at most `window` bytes (at least one span)."""
    out: list[list[Span]] = []
    total = 0
    for s in spans:
        if out and total + (s.end - s.start) <= window:
            out[-1].append(s)
            total += s.end - s.start
        else:
            out.append([s])
            total = s.end - s.start
    return out


class FetchStats:
    """Bytes and requests the ranged reads of one Dataset made, and the bytes of the samples
    they were for (the rest is coalesced gaps); shared by read-ahead threads, hence the lock."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests = self.fetched = self.wanted = 0

    def add(self, requests: int, fetched: int, wanted: int) -> None:
        with self._lock:
            self.requests += requests
            self.fetched += fetched
            self.wanted += wanted


class RangeError(ValueError):
    """A sample's bytes are not what the index says lies there; one line."""


def range_problem(offset: int, size: int, shard_bytes: int | None) -> str | None:
    """Why an index range cannot be a sample's (checked before any fetch), or None."""
    if offset < 0 or size < 2 * BLOCK or offset % BLOCK or size % BLOCK:
        return "not a range of whole 512-byte blocks that can hold two members"
    if shard_bytes is not None and offset + size > shard_bytes - 2 * BLOCK:
        return f"past the members of the {shard_bytes}-byte shard"
    return None


def parse_sample(data: bytes, key: str, max_member_bytes: int):
    """The `TarRecord` of `key` from the bytes of its range. The range must hold exactly
    `{key}.jpg` then `{key}.json` and end where the second member's padded data ends; else
    RangeError (a wrong offset or size in the index lands on other bytes)."""
    f = io.BytesIO(data)
    names = []
    try:
        for member in iter_members(f, lambda name: False, max_member_bytes):
            names.append(member.name)
            if len(names) == 2:
                break
    except TarError as exc:
        raise RangeError(f"not the start of a sample ({exc})") from None
    if names != list(member_names(key)):
        raise RangeError(f"holds members {names}, not {list(member_names(key))}")
    if f.tell() != len(data):
        raise RangeError(f"its two members end at byte {f.tell()} of the {len(data)}-byte range")
    records = list(iter_shard_records(io.BytesIO(data + _END), max_member_bytes))
    if len(records) != 1 or records[0].key != key:
        raise RangeError(f"holds records {[r.key for r in records]}, not {key!r}")
    return records[0]


class _Fetcher:
    """Windows of one visit fetched in order, the next in flight while one is used."""

    def __init__(self, fs, path: str, windows: list[list[Span]], stats: FetchStats | None):
        self.fs, self.path, self.windows, self.stats = fs, path, windows, stats
        self.pool = ThreadPoolExecutor(1) if len(windows) > 1 else None
        self.ahead: Future | None = None

    def _get(self, k: int) -> list:
        spans = self.windows[k]
        got = self.fs.cat_ranges(
            [self.path] * len(spans),
            [s.start for s in spans],
            [s.end for s in spans],
            on_error="return",
        )
        if self.stats is not None:
            self.stats.add(len(spans), sum(s.end - s.start for s in spans), 0)
        return got

    def window(self, k: int) -> list:
        """Window k's span bytes (or per-span exceptions); windows are asked for in order."""
        got = self.ahead.result() if self.ahead is not None else self._get(k)
        self.ahead = None
        if self.pool is not None and k + 1 < len(self.windows):
            self.ahead = self.pool.submit(self._get, k + 1)
        return got

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=False, cancel_futures=True)


def _fetch_problem(exc: BaseException, file: str) -> str:
    """A failed range request as a Skip detail, or re-raised when it is not about the shard
    (a network or permission error must stop the loader as a streamed read would)."""
    if isinstance(exc, FileNotFoundError):
        return f"{file}: not found"
    text = str(exc)
    if "InvalidRange" in text or "416" in text or "Range Not Satisfiable" in text:
        return f"{file}: truncated: a range past the end of the shard ({text.splitlines()[0]})"
    raise exc


def read_ranged(
    fs,
    path: str,
    file: str,
    rows: Sequence[IndexRow],
    ranges: Sequence[tuple[int, int]],
    *,
    num_classes: int,
    weight_sum: float,
    shard_bytes: int | None,
    max_member_bytes: int,
    stats: FetchStats | None = None,
) -> Iterator[Sample | Skip]:
    """Sample or Skip for each of `rows` (a visit's chosen index rows, in key order) from the
    byte `ranges` the index gives them, as `join_shard` judges a streamed read of the same
    rows. `path` is the tar's full path on `fs`, `file` its name in details."""
    n = len(rows)
    done: dict[int, Sample | Skip] = {}
    fetch: list[int] = []
    for i, row in enumerate(rows):
        _, bad_weight = sampling_weight(row, weight_sum, n)
        offset, size = ranges[i]
        problem = range_problem(offset, size, shard_bytes)
        if bad_weight is not None:
            done[i] = Skip(row.key, BAD_WEIGHT, bad_weight)
        elif problem is not None:
            done[i] = Skip(row.key, SHARD_UNREADABLE, _where(file, row.key, offset, size, problem))
        else:
            fetch.append(i)
    spans = plan_spans([ranges[i] for i in fetch])
    windows = plan_windows(spans)
    if stats is not None:
        stats.add(0, 0, sum(ranges[i][1] for i in fetch))
    fetcher = _Fetcher(fs, path, windows, stats)
    try:
        k = 0
        for i in range(n):
            while i not in done:
                _parse_window(windows[k], fetcher.window(k), fetch, rows, ranges, done, file,
                              num_classes, max_member_bytes)  # fmt: skip
                k += 1
            yield done.pop(i)
    finally:
        fetcher.close()


def _parse_window(
    spans, got, fetch, rows, ranges, done, file, num_classes, max_member_bytes
) -> None:
    for span, data in zip(spans, got, strict=True):
        for j in span.items:
            i = fetch[j]
            row, (offset, size) = rows[i], ranges[i]
            if isinstance(data, BaseException):
                done[i] = Skip(row.key, SHARD_UNREADABLE, _fetch_problem(data, file))
                continue
            piece = data[offset - span.start : offset - span.start + size]
            if len(piece) < size:
                detail = f"the shard ends {size - len(piece)} bytes short of the range's end"
                done[i] = Skip(
                    row.key, SHARD_UNREADABLE, _where(file, row.key, offset, size, detail)
                )
                continue
            try:
                record = parse_sample(piece, row.key, max_member_bytes)
            except RangeError as exc:
                done[i] = Skip(row.key, SHARD_UNREADABLE, _where(file, row.key, offset, size, exc))
                continue
            done[i] = check_record(record, row, num_classes)


def _where(file: str, key: str, offset: int, size: int, problem: object) -> str:
    return f"{file}: {key!r} at bytes {offset}..{offset + size} (samples index): {problem}"
