"""A short fuzz run of the trainer's shard reader: a real shard, mutated.

Mutations are drawn from a seeded generator: random byte flips, truncations, header field edits
(size as octal, base-256 or garbage, type flag, name, checksum recomputed or not), inserted pax
headers of digits, zeroed and duplicated blocks. Each mutated shard is read the way the trainer
reads one (`iter_shard_records` joined with the shard's index rows). The property: it ends, it
raises nothing, every index row comes back once as a Sample that agrees with the index or a Skip
with a reason, and the reader's memory stays within a small multiple of the shard's size.
`pytest-timeout` turns a hang into a failure.
"""

from __future__ import annotations

import io
from collections import Counter

import hostile_tars as H
import numpy as np
import pytest
from proc_tools import HeapPeak

from train import sample_checks as sc
from train.shards import Dataset
from weakly.fixtures import build_fixture
from weakly_base.shard_format import iter_shard_records

BLOCK = 512
EXAMPLES = 800


class _Pipe(io.RawIOBase):
    """The mutated bytes as a stream that cannot seek: skips are reads, as from a pipe."""

    def __init__(self, data: bytes) -> None:
        self.inner = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        return self.inner.readinto(buffer)


@pytest.fixture(scope="module")
def shard(tmp_path_factory):
    """The largest shard of a small fixture: its bytes, index rows, header offsets, weight
    sum and the vocabulary size."""
    root = build_fixture(tmp_path_factory.mktemp("fuzz") / "ds", samples=40, max_shard=12, seed=9)
    ds = Dataset(str(root))
    i = int(np.argmax(ds.shards.n))
    data = (root / ds.shards.files[i]).read_bytes()
    headers, at = [], 0
    while at + BLOCK <= len(data) and data[at : at + BLOCK].strip(b"\0"):
        headers.append(at)
        size = int(data[at + 124 : at + 136].split(b"\0")[0] or b"0", 8)
        at += BLOCK + -(-size // BLOCK) * BLOCK
    return data, ds.index_rows(i), headers, float(ds.shards.weight_sum[i]), ds.num_classes


def _edit_header(data: bytearray, at: int, rng: np.random.Generator) -> None:
    field = int(rng.integers(4))
    if field == 0:  # size: octal of any magnitude, base-256 up to 2^80, or garbage
        choice = int(rng.integers(3))
        if choice == 0:
            value = b"%011o\0" % int(rng.integers(0, 8**11))
        elif choice == 1:
            value = b"\x80" + int(rng.integers(0, 2**62)).to_bytes(11, "big")
        else:
            value = rng.bytes(12)
        data[at + 124 : at + 136] = value
    elif field == 1:  # type flag
        data[at + 156] = rng.choice(list(b"0125LKSxgX\xff\x00V"))
    elif field == 2:  # name
        data[at : at + 100] = rng.bytes(100)
    else:  # prefix
        data[at + 345 : at + 500] = rng.bytes(155)
    if rng.random() < 0.8:  # usually a header that passes its checksum, so parsing goes on
        data[at : at + BLOCK] = H.with_checksum(bytes(data[at : at + BLOCK]))


def mutate(data: bytes, headers: list[int], rng: np.random.Generator) -> bytes:
    out = bytearray(data)
    for _ in range(int(rng.integers(1, 4))):
        op = int(rng.integers(6))
        if op == 0:  # byte flips anywhere
            for pos in rng.integers(0, len(out), int(rng.integers(1, 20))):
                out[pos] ^= 1 << int(rng.integers(8))
        elif op == 1:  # truncation
            out = out[: int(rng.integers(0, len(out)))]
        elif op == 2 and headers:  # header field edits
            at = int(rng.choice(headers))
            if at + BLOCK <= len(out):
                _edit_header(out, at, rng)
        elif op == 3 and headers:  # a pax header of digits before a member
            at = int(rng.choice(headers))
            out[at:at] = H.pax_digits(int(rng.integers(1, 200_000)), b"")
        elif op == 4 and len(out) >= BLOCK:  # a block zeroed
            at = int(rng.integers(0, len(out) // BLOCK)) * BLOCK
            out[at : at + BLOCK] = bytes(BLOCK)
        elif op == 5 and len(out) >= BLOCK:  # a block duplicated
            at = int(rng.integers(0, len(out) // BLOCK)) * BLOCK
            out[at:at] = out[at : at + BLOCK]
    return bytes(out)


@pytest.mark.timeout(60)
def test_mutated_shards_cost_their_records_and_nothing_else(shard):
    data, rows, headers, weight_sum, classes = shard
    rng = np.random.default_rng(15)
    by_row = {r.key: r for r in rows}
    outcomes: Counter = Counter()
    peak = 0
    for n in range(EXAMPLES):
        mutated = mutate(data, headers, rng)
        stream = io.BytesIO(mutated) if n % 2 else io.BufferedReader(_Pipe(mutated))
        with HeapPeak() as heap:
            records = iter_shard_records(stream)
            items = list(sc.join_shard(rows, records, classes, weight_sum))
        peak = max(peak, heap.peak)
        assert [item.key for _, item in items] == [r.key for r in rows]
        for weight, item in items:
            assert 0 <= weight <= weight_sum
            if isinstance(item, sc.Sample):
                row = by_row[item.key]
                assert item.labels == row.labels and item.weight == row.weight and item.jpg
                outcomes["sample"] += 1
            else:
                assert item.reason in sc.REASONS and item.detail and "\n" not in item.detail
                outcomes[item.reason] += 1
    # Not vacuous: mutations leave samples intact, break records and break whole archives.
    assert outcomes["sample"] and outcomes[sc.BAD_RECORD] and outcomes[sc.SHARD_UNREADABLE]
    assert peak < 4 * len(data) + (2 << 20), peak
    print(dict(outcomes), f"peak {peak} B for a {len(data)} B shard")
