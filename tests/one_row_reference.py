"""One-row reference definitions the vectorised pipeline code is tested against.

Production computes keys, duplicates, weights and DCT blocks for whole tables or batches with
Arrow and numpy kernels (pipeline/keys.py, pass1.py, weights.py, phash.py); these are the same
rules written plainly, one row or one image at a time, so a test can compare the two.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence

import numpy as np
import pyarrow as pa

from pipeline.label_plan import first_occurrence
from pipeline.phash import dct_blocks, luma32
from pipeline.weights import WeightConfig

_NULL = "\x01"  # the null marker of derived keys (pipeline/keys.py)


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\x00", "\\0").replace("\x01", "\\1")


def row_key(url: str | None, path: str | None, image: bytes | None, tags: list[str] | None) -> str:
    """The key `pipeline.keys.row_keys` derives for a row without one: a digest of its image
    reference and tags, fields escaped and joined by NUL, null fields as \\x01."""
    fields = [
        _NULL if url is None else _escape(url),
        _NULL if path is None else _escape(path),
        _NULL if image is None else hashlib.sha1(image).hexdigest(),
        _NULL if tags is None else f"{len(tags)}:" + "\x00".join(_escape(t) for t in tags),
    ]
    return hashlib.sha1("\x00".join(fields).encode("utf-8", "surrogatepass")).hexdigest()[:20]


def duplicate_of(keys: list[str | None]) -> list[int | None]:
    """For each row, the index of the earlier row with the same key (None if first or keyless)."""
    first = first_occurrence(pa.array(keys, pa.string()))
    return [None if f < 0 or f == i else int(f) for i, f in enumerate(first.tolist())]


def synset_weights(counts: Mapping[str, int], config: WeightConfig) -> dict[str, float]:
    """Weight each synset contributes to an image that carries it
    (`pipeline.weights.synset_weight_array` for synset codes)."""
    if config.scheme == "natural":
        return {s: 1.0 for s, f in counts.items() if f > 0}
    return {s: 1.0 / math.sqrt(f) for s, f in counts.items() if f > 0}


def image_weight(
    labels: Sequence[str],
    per_synset: Mapping[str, float],
    counts: Mapping[str, int],
    config: WeightConfig,
) -> float:
    """Sampling weight of one image from its (non-empty) canonical labels (pass 1 computes it
    for every row at once)."""
    if not labels:
        raise ValueError("an image needs at least one label to have a weight")
    values = [per_synset[s] for s in labels]
    weight = max(values) if config.reduce == "max" else sum(values) / len(values)
    if config.scheme == "inv-sqrt" and any(counts[s] < config.rare_threshold for s in labels):
        weight *= config.rare_upsample
    return weight


def dct_block(img) -> np.ndarray:
    """8x8 DCT block of one decoded image (`pipeline.phash.dct_blocks` does a batch)."""
    return dct_blocks(luma32(img)[None])[0]
