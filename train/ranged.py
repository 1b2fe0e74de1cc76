"""Reading a shard visit's samples by their byte ranges: the object-store read path.

On s3:// a visit that emits a few samples of a shard used to stream the tar and skip the others
by seeking, but every skipped member's 512-byte header still had to be read, and each header
past the read-ahead block cost a new block: a sparse visit fetched nearly the whole shard. The
samples index now says where each sample lies (`offset`, `size`: docs/FORMAT.md), so a visit
fetches just its samples' ranges.

Ranges of one visit are coalesced where the gap between neighbours is at most `MAX_GAP`, cut at
sample boundaries into spans of at most `SPAN` bytes, and fetched `WINDOW` bytes at a time with
fsspec's `cat_ranges` (concurrent requests on s3fs). A visit that reads a whole shard (`natural` sampling) so makes a few large requests,
two at a time; a visit's thread (train/prefetch.py) holds one window.

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
from dataclasses import dataclass

from weakly_base.shard_format import TarRecord, iter_shard_records, member_names
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

# A request costs the client ~4 ms of CPU (s3fs: signing, HTTP) and a server round trip; a MiB
# more in one response ~3 ms of client CPU (BENCHMARKS.md, issue 16). So a gap of up to 1 MiB
# between two wanted samples is fetched rather than paying for a second request.
MAX_GAP = 1 << 20
SPAN = 4 << 20  # the largest request: a whole-shard read is cut into pieces of this size
WINDOW = 8 << 20  # a visit's requests made at once (concurrent on s3fs) and held in memory
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


def parse_sample(data: bytes, key: str, max_member_bytes: int) -> TarRecord:
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


def _fetch_problem(exc: BaseException, file: str) -> str:
    """A failed range request as a Skip detail, or re-raised when it is not about the shard
    (a network or permission error must stop the loader as a streamed read would)."""
    if isinstance(exc, FileNotFoundError):
        return f"{file}: not found"
    text = str(exc)
    if any(s in text.lower() for s in ("not satisfiable", "invalidrange", "416")):
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
    fetch_at = {i: j for j, i in enumerate(fetch)}
    spans = plan_spans([ranges[i] for i in fetch], MAX_GAP, SPAN)
    windows = plan_windows(spans, WINDOW)
    if stats is not None:
        stats.add(0, 0, sum(ranges[i][1] for i in fetch))
    at = {j: (k, s) for k, window in enumerate(windows) for s, span in enumerate(window)
          for j in span.items}  # fmt: skip
    k, got = -1, []
    for i in range(n):
        if i in done:
            yield done.pop(i)
            continue
        j = fetch_at[i]
        wk, si = at[j]
        if wk != k:  # windows are used in order; one is held at a time
            k, got = wk, _fetch(fs, path, windows[wk], stats)
        yield _judge(file, rows[i], ranges[i], windows[wk][si], got[si], num_classes,
                     max_member_bytes)  # fmt: skip


def _fetch(fs, path: str, spans: list[Span], stats: FetchStats | None) -> list:
    """The bytes of each span (or the exception its request ended with), requested at once."""
    got = fs.cat_ranges(
        [path] * len(spans), [s.start for s in spans], [s.end for s in spans], on_error="return"
    )
    if stats is not None:
        stats.add(len(spans), sum(s.end - s.start for s in spans), 0)
    return got


def _judge(
    file: str, row: IndexRow, where: tuple[int, int], span: Span, data, num_classes: int,
    max_member_bytes: int,
) -> Sample | Skip:  # fmt: skip
    """One sample from its span's bytes, as a streamed read would judge it."""
    offset, size = where
    if isinstance(data, BaseException):
        return Skip(row.key, SHARD_UNREADABLE, _fetch_problem(data, file))
    piece = data[offset - span.start : offset - span.start + size]
    if len(piece) < size:
        short = f"the shard ends {size - len(piece)} bytes short of the range's end"
        return Skip(row.key, SHARD_UNREADABLE, _where(file, row.key, offset, size, short))
    try:
        record = parse_sample(piece, row.key, max_member_bytes)
    except RangeError as exc:
        return Skip(row.key, SHARD_UNREADABLE, _where(file, row.key, offset, size, exc))
    return check_record(record, row, num_classes)


def _where(file: str, key: str, offset: int, size: int, problem: object) -> str:
    return f"{file}: {key!r} at bytes {offset}..{offset + size} (samples index): {problem}"
