"""Building Arrow list columns from flat items, the one move pass 1 makes again and again
(dropping null tags, relabelling tags, per-row label sets) without a Python list per row."""

from __future__ import annotations

import numpy as np
import pyarrow as pa


def lists_from_parents(parents: np.ndarray, values: pa.Array, n: int) -> pa.ListArray:
    """`n` lists holding `values`, item i in row `parents[i]` (ascending); rows without items
    get empty lists."""
    lengths = np.bincount(np.asarray(parents, dtype=np.int64), minlength=n)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), values)
