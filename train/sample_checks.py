"""One shard's samples as the sampler sees them: the index rows, each with its tar record checked.

The sampler numbers a shard's samples by the rows of its samples-index part (sorted by key) and
draws copies from each row's index weight; the tar is read alongside, record by record, and
each record is checked against its row. So nothing a tar holds can move another sample's
position or change how often it is drawn: a record that is missing, unreadable or disagrees
with the index is one `Skip` at its own position, counted when the sampler emits it, like an
undecodable JPEG. `iter_sample_keys` (index only) and the loader therefore agree key for key on
any shard, broken or not.

Checked per record: labels are a non-empty list of distinct JSON integers in
[0, num_classes) and equal to the index's; the json weight is a finite number equal to the
index weight. The index weight itself must be finite and within [0, the shard's weight_sum]:
a sample can never carry more than its whole shard, so a copy count is never more than the
mean shard size (a weight of 1e12 can no longer fill every batch).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from weakly_base.shard_format import TarRecord
from weakly_base.tar_reader import TarError

# Reason codes: the keys of the loader's skip counts (metrics.jsonl `skipped_by_reason`).
NOT_IN_SHARD = "not_in_shard"
SHARD_UNREADABLE = "shard_unreadable"
BAD_RECORD = "bad_record"
BAD_LABELS = "bad_labels"
BAD_WEIGHT = "bad_weight"
INDEX_MISMATCH = "index_mismatch"
REASONS = (NOT_IN_SHARD, SHARD_UNREADABLE, BAD_RECORD, BAD_LABELS, BAD_WEIGHT, INDEX_MISMATCH)


@dataclass(frozen=True)
class Sample:
    """One complete sample as stored in a shard."""

    key: str
    jpg: bytes
    labels: tuple[int, ...]
    weight: float


@dataclass(frozen=True)
class Skip:
    """A sample position the loader cannot use: which key, a reason code and the detail."""

    key: str
    reason: str
    detail: str


@dataclass(frozen=True)
class IndexRow:
    """A shard's samples-index row: what the sampler trusts for position and weight."""

    key: str
    labels: tuple[int, ...] | None
    weight: float | None


def check_labels(value, num_classes: int | None) -> tuple[int, ...] | str:
    """The labels as a tuple, or why they are not: a non-empty list of distinct JSON integers
    (not bools, floats or strings, which `int()` would quietly turn into other labels) in
    [0, num_classes)."""
    if not isinstance(value, list) or not value:
        return f"labels {_short(value)} are not a non-empty list"
    if not all(type(x) is int for x in value):
        return f"labels {_short(value)} are not all integers"
    high = num_classes if num_classes is not None else math.inf
    outside = [x for x in value if not 0 <= x < high]
    if outside:
        allowed = f"0..{num_classes - 1}" if num_classes is not None else ">= 0"
        return f"label {_short(outside[0])} outside {allowed}"
    if len(set(value)) != len(value):
        return f"labels {_short(value)} repeat"
    return tuple(value)


def check_weight(value) -> float | str:
    """A finite, non-negative JSON number, or why not."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return f"weight {_short(value)} is not a number"
    if not math.isfinite(value) or value < 0:
        return f"weight {_short(value)} is not finite and >= 0"
    return float(value)


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def check_record(record: TarRecord, row: IndexRow, num_classes: int) -> Sample | Skip:
    """The record as a Sample when it agrees with its index row and its values are valid."""
    if record.problem is not None or record.meta is None or record.jpg is None:
        return Skip(row.key, BAD_RECORD, record.problem or "incomplete record")
    labels = check_labels(record.meta.get("labels"), num_classes)
    if isinstance(labels, str):
        return Skip(row.key, BAD_LABELS, labels)
    weight = check_weight(record.meta.get("weight"))
    if isinstance(weight, str):
        return Skip(row.key, BAD_WEIGHT, weight)
    if row.labels is not None and labels != row.labels:
        return Skip(
            row.key, INDEX_MISMATCH, f"labels {list(labels)} but the index says {list(row.labels)}"
        )
    if row.weight is None or not math.isclose(weight, row.weight, rel_tol=1e-9, abs_tol=0.0):
        return Skip(row.key, INDEX_MISMATCH, f"weight {weight!r} but the index says {row.weight!r}")
    return Sample(key=row.key, jpg=record.jpg, labels=labels, weight=row.weight)


def sampling_weight(row: IndexRow, weight_sum: float, rows: int) -> tuple[float, str | None]:
    """The weight the sampler draws copies with, and why the row's own is unusable (then the
    row gets an average share of its shard, so that it is drawn, and counted, as often as a
    typical sample; the other rows' copy counts do not depend on it)."""
    w = row.weight
    if w is not None and math.isfinite(w) and 0 <= w <= weight_sum * (1 + 1e-9):
        return w, None
    return weight_sum / max(rows, 1), f"index weight {w!r} outside 0..{weight_sum!r} (shard sum)"


_TAKEN = TarRecord("", None, None, "taken")  # the record just matched; the next is not read yet


def join_shard(
    rows: list[IndexRow],
    records: Iterable[TarRecord],
    num_classes: int,
    weight_sum: float,
) -> Iterator[tuple[float, Sample | Skip]]:
    """(sampling weight, Sample or Skip) for every index row, in row (key) order.

    `records` is read in step (a merge on key; the writer stores keys sorted), so a shard is
    never held in memory. A record the index does not list is passed over; a row without a
    record is `not_in_shard`, or `shard_unreadable` with the reason once the archive breaks.
    """
    it = iter(records)
    ended, broken = False, None  # broken: why the archive could not be read to its end

    def next_record() -> TarRecord | None:
        nonlocal ended, broken
        if ended:
            return None
        try:
            return next(it)
        except StopIteration:
            ended = True
        except TarError as exc:
            ended, broken = True, str(exc)
        return None

    pending = next_record() if rows else None
    for row in rows:
        weight, bad_weight = sampling_weight(row, weight_sum, len(rows))
        if pending is _TAKEN:  # fetched lazily: after the last row nothing more is read
            pending = next_record()
        while pending is not None and pending.key < row.key:
            pending = next_record()
        if bad_weight is not None:
            item: Sample | Skip = Skip(row.key, BAD_WEIGHT, bad_weight)
        elif pending is not None and pending.key == row.key:
            item = check_record(pending, row, num_classes)
        elif broken is not None:
            item = Skip(row.key, SHARD_UNREADABLE, broken)
        else:
            item = Skip(row.key, NOT_IN_SHARD, "the index lists it; the tar does not hold it")
        if pending is not None and pending.key == row.key:
            pending = _TAKEN
        yield weight, item
