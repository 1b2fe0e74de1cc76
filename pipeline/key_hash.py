"""A stable hash of sample keys, to send every copy of a key to the same reduce task.

Python's `hash` is salted per process, and `hashlib` costs a Python call per row; this is a
polynomial hash over each key's UTF-8 bytes computed with numpy over a whole Arrow column, then
a splitmix64 finaliser so the low bits spread evenly. Only stability and spread matter here, not
resistance to adversarial keys: a skewed partition costs time, never correctness.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

_BASE = np.uint64(0x100000001B3)
BATCH_ROWS = 1 << 20  # bounds the temporaries (a few 8-byte arrays per key)


def _mix(h: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser (wrapping uint64 arithmetic)."""
    with np.errstate(over="ignore"):
        h = (h ^ (h >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        h = (h ^ (h >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return h ^ (h >> np.uint64(31))


def _hash_batch(keys: pa.Array) -> np.ndarray:
    keys = pa.concat_arrays([keys.cast(pa.large_binary())])  # 64-bit offsets
    offsets = np.frombuffer(keys.buffers()[1], np.int64)[: len(keys) + 1]
    data = keys.buffers()[2]
    data = np.frombuffer(data, np.uint8) if data is not None else np.zeros(0, np.uint8)
    lengths = np.diff(offsets)
    # sum((byte_i + 1) * BASE**i) one key position at a time, over the keys at least that long
    # (longest first, so they are a prefix): O(total bytes) work with temporaries of 8 bytes
    # per key, where one term per key byte cost ~650 MiB and 0.4-1.9 s per 1M 20-byte keys.
    order = np.argsort(-lengths, kind="stable")
    longest_first = lengths[order]
    starts = offsets[:-1][order]
    acc = np.zeros(len(keys), np.uint64)
    power = np.uint64(1)
    with np.errstate(over="ignore"):
        for i in range(int(longest_first[0]) if len(keys) else 0):
            m = int(np.searchsorted(-longest_first, -i, side="left"))  # keys longer than i
            acc[:m] += (data[starts[:m] + i].astype(np.uint64) + np.uint64(1)) * power
            power = power * _BASE
    out = np.empty(len(keys), np.uint64)
    out[order] = acc
    return _mix(out + lengths.astype(np.uint64))


def key_hashes(keys: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """uint64 hash of each key (nulls hash like the empty string; callers drop them)."""
    if isinstance(keys, pa.ChunkedArray):
        keys = keys.combine_chunks()
    keys = pc.fill_null(keys, "")
    parts = [
        _hash_batch(keys.slice(start, BATCH_ROWS)) for start in range(0, len(keys), BATCH_ROWS)
    ]
    return np.concatenate(parts) if parts else np.zeros(0, np.uint64)


def key_partition(keys: pa.Array | pa.ChunkedArray, partitions: int) -> np.ndarray:
    """The reduce partition (0..partitions-1) of each key."""
    return (key_hashes(keys) % np.uint64(partitions)).astype(np.int64)
