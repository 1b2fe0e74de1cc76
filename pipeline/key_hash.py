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
BATCH_ROWS = 1 << 20  # bounds the per-byte temporaries (8 bytes per key byte)


def _mix(h: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser (wrapping uint64 arithmetic)."""
    with np.errstate(over="ignore"):
        h = (h ^ (h >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        h = (h ^ (h >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return h ^ (h >> np.uint64(31))


def _hash_batch(keys: pa.Array) -> np.ndarray:
    keys = pa.concat_arrays([keys.cast(pa.large_binary())])  # offset 0, 64-bit offsets
    offsets = np.frombuffer(keys.buffers()[1], np.int64)[: len(keys) + 1]
    data = keys.buffers()[2]
    data = np.frombuffer(data, np.uint8) if data is not None else np.zeros(0, np.uint8)
    lengths = np.diff(offsets)
    out = np.zeros(len(keys), np.uint64)
    if lengths.sum() == 0:
        return _mix(out)
    byte_values = data[offsets[0] : offsets[-1]].astype(np.uint64) + np.uint64(1)
    starts = np.repeat(offsets[:-1] - offsets[0], lengths)
    position = np.arange(len(byte_values)) - starts
    powers = np.ones(int(lengths.max()), np.uint64)
    with np.errstate(over="ignore"):
        for i in range(1, len(powers)):
            powers[i] = powers[i - 1] * _BASE
        terms = byte_values * powers[position]
    nonempty = np.flatnonzero(lengths > 0)
    with np.errstate(over="ignore"):
        out[nonempty] = np.add.reduceat(terms, (offsets[:-1] - offsets[0])[nonempty])
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
