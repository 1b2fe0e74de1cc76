"""Train/val assignment for `weakly ingest --holdout FRACTION` (pure functions).

A sample's split is a function of its key alone (a hash, not a random draw in row order), so
the same key lands in the same split whatever the manifest order, the chunking, the label noise
or the other rows: reruns and different ingest configs over the same images share one val set,
which is what lets a noise ablation score every run against the same held-out images.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pyarrow as pa

from weakly_base.shard_format import TRAIN, VAL

_SALT = b"weakly-holdout-v1:"


def check_holdout(fraction: float) -> None:
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"--holdout {fraction}: use 0 <= FRACTION < 1")


def unit_hash(key: str) -> float:
    """A uniform number in [0, 1) determined by the key (first 8 bytes of a salted sha1)."""
    digest = hashlib.sha1(_SALT + key.encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def split_of(key: str, holdout: float) -> str:
    """`val` for about `holdout` of all keys, `train` for the rest."""
    return VAL if holdout > 0 and unit_hash(key) < holdout else TRAIN


def splits_for(holdout: float) -> tuple[str, ...]:
    """The splits an ingest with this holdout writes, in file-name order."""
    return (TRAIN, VAL) if holdout > 0 else (TRAIN,)


def train_mask(keys, holdout: float) -> np.ndarray:
    """Per row, whether its key falls in `train` (a null key counts as train: such rows are
    rejected before they are split). Counts, the vocabulary, label noise and the weights see
    only these rows, so nothing about the held-out images leaks into training."""
    if holdout <= 0:
        return np.ones(len(keys), bool)
    if isinstance(keys, pa.ChunkedArray | pa.Array):
        keys = keys.to_pylist()
    return np.fromiter(
        (k is None or unit_hash(k) >= holdout for k in keys), dtype=bool, count=len(keys)
    )
