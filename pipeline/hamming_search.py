"""Exact Hamming range search over 64-bit hashes: a flat scan and a multi-index (pigeonhole).

Both return every pair with ``popcount(q ^ h) <= radius`` (inclusive), as parallel arrays
``(query_rows, db_rows, distances)`` sorted by query row then db row.

Multi-index exactness (generalised pigeonhole): split the 64 bits into ``m`` disjoint chunks
and give chunk ``i`` a search radius ``k_i`` with ``sum(k_i + 1) >= radius + 1``. If a pair
had chunk distance ``> k_i`` in every chunk, its total distance would be ``>= sum(k_i + 1) >
radius``; so every pair within ``radius`` lies within ``k_i`` in at least one chunk and is found
by probing that chunk's buckets at all keys within ``k_i`` of the query's chunk. A pair found in
several chunks is kept only from the first chunk where it is within ``k_i``, so no pair is
reported twice and none is lost.
"""

from __future__ import annotations

import itertools
from functools import lru_cache

import numpy as np

_U64 = np.uint64


def _sorted_pairs(qs: list, ds: list, dists: list) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Concatenate per-block (query, db, distance) pieces, sorted by (query, db)."""
    if not qs:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.uint8)
    q = np.concatenate(qs).astype(np.int64)
    d = np.concatenate(ds).astype(np.int64)
    dist = np.concatenate(dists).astype(np.uint8)
    order = np.lexsort((d, q))
    return q[order], d[order], dist[order]


def flat_range_search(
    queries: np.ndarray, db: np.ndarray, radius: int, *, block_pairs: int = 1 << 22
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Brute force: XOR + popcount of every pair, in blocks of ~``block_pairs`` pairs."""
    queries = np.asarray(queries, dtype=_U64)
    db = np.asarray(db, dtype=_U64)
    qs, ds, dists = [], [], []
    step = max(1, block_pairs // max(1, len(db)))
    for start in range(0, len(queries), step):
        block = queries[start : start + step]
        dist = np.bitwise_count(block[:, None] ^ db[None, :])
        qi, di = np.nonzero(dist <= radius)
        qs.append(qi + start)
        ds.append(di)
        dists.append(dist[qi, di])
    return _sorted_pairs(qs, ds, dists)


@lru_cache(maxsize=64)
def _flip_masks(bits: int, k: int) -> np.ndarray:
    """All ``bits``-wide masks with at most ``k`` bits set (the probe offsets)."""
    masks = [0]
    for w in range(1, min(k, bits) + 1):
        masks.extend(sum(1 << b for b in c) for c in itertools.combinations(range(bits), w))
    return np.array(masks, dtype=_U64)


def chunk_layout(m: int) -> list[tuple[int, int]]:
    """``m`` contiguous (shift, width) chunks covering 64 bits, widths differing by <= 1."""
    widths = [64 // m + (1 if i < 64 % m else 0) for i in range(m)]
    layout, shift = [], 64
    for w in widths:
        shift -= w
        layout.append((shift, w))
    return layout


def chunk_radii(m: int, radius: int) -> list[int]:
    """Per-chunk radii with ``sum(k_i + 1) == radius + 1``, spread evenly (-1: chunk unused)."""
    total = radius + 1
    return [total // m + (1 if i < total % m else 0) - 1 for i in range(m)]


def estimate_mih_cost(n_db: int, m: int, radius: int) -> float:
    """Rough per-query cost of the multi-index, in units of ~8 flat-scan pairs.

    Weights fitted on the dev box: a bucket probe (two random reads of a large offsets table)
    costs about 1.5x a candidate check (gather + XOR + popcount + first-chunk test).
    """
    cost = 0.0
    for (_, width), k in zip(chunk_layout(m), chunk_radii(m, radius), strict=True):
        if k < 0:
            continue
        probes = sum(_n_choose(width, w) for w in range(k + 1))
        candidates = probes * n_db / float(1 << width)
        cost += 3.0 * probes + 2.0 * candidates
    return cost


def _n_choose(n: int, k: int) -> int:
    from math import comb

    return comb(n, k)


def choose_chunks(n_db: int, radius: int, *, max_width: int = 22) -> int:
    """Number of chunks for the multi-index (0 = a flat scan is cheaper)."""
    best_m, best = 0, n_db / 8.0
    for m in range(3, 12):
        if chunk_layout(m)[0][1] > max_width:
            continue
        cost = estimate_mih_cost(n_db, m, radius)
        if cost < best:
            best_m, best = m, cost
    return best_m


class MultiIndex:
    """Per-chunk bucket tables over a fixed array of hashes. Read-only after construction."""

    def __init__(self, db: np.ndarray, m: int) -> None:
        if not 3 <= m <= 64:
            raise ValueError(f"multi-index needs 3..64 chunks (bucket tables of <= 2^22), got {m}")
        self.db = np.ascontiguousarray(db, dtype=_U64)
        self.m = m
        self.layout = chunk_layout(m)
        self._tables = []
        for shift, width in self.layout:
            keys = (self.db >> _U64(shift)) & _U64((1 << width) - 1)
            order = np.argsort(keys, kind="stable")
            counts = np.bincount(keys.astype(np.int64), minlength=1 << width)
            offsets = np.zeros((1 << width) + 1, dtype=np.int64)
            np.cumsum(counts, out=offsets[1:])
            self._tables.append((order.astype(np.int64), self.db[order], offsets))

    @property
    def nbytes(self) -> int:
        return int(sum(o.nbytes + h.nbytes + off.nbytes for o, h, off in self._tables))

    def range_search(
        self, queries: np.ndarray, radius: int, *, block_probes: int = 1 << 21
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        queries = np.asarray(queries, dtype=_U64)
        radii = chunk_radii(self.m, radius)
        chunk_masks = [_U64(((1 << w) - 1) << s) for s, w in self.layout]
        qs, ds, dists = [], [], []
        for j, ((shift, width), k) in enumerate(zip(self.layout, radii, strict=True)):
            if k < 0:
                continue
            order, sorted_hashes, offsets = self._tables[j]
            probes = _flip_masks(width, k)
            step = max(1, block_probes // len(probes))
            for start in range(0, len(queries), step):
                q = queries[start : start + step]
                qkey = (q >> _U64(shift)) & _U64((1 << width) - 1)
                keys = (qkey[:, None] ^ probes[None, :]).astype(np.int64)
                lo = offsets[keys]
                cnt = offsets[keys + 1] - lo
                hit = cnt > 0
                lo, cnt = lo[hit], cnt[hit]
                qrow = np.broadcast_to(np.arange(len(q))[:, None], keys.shape)[hit]
                total = int(cnt.sum())
                if total == 0:
                    continue
                # Expand each (probe, bucket) into its bucket's positions in the sorted table.
                ends = np.cumsum(cnt)
                pos = np.arange(total) + np.repeat(lo - (ends - cnt), cnt)
                cq = np.repeat(qrow, cnt)
                x = q[cq] ^ sorted_hashes[pos]
                dist = np.bitwise_count(x)
                keep = dist <= radius
                for i in range(j):  # first-chunk rule: no pair is reported twice
                    if radii[i] >= 0:
                        keep &= np.bitwise_count(x & chunk_masks[i]) > radii[i]
                qs.append(cq[keep] + start)
                ds.append(order[pos[keep]])
                dists.append(dist[keep])
        return _sorted_pairs(qs, ds, dists)
