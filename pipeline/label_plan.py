"""The label plan (pure functions over Arrow columns): duplicate keys, the vocabulary, label
noise, counts f(s), per-image weights and weight buckets.

Only `train` rows (pipeline/split.py: by key hash, `--holdout`) count: the vocabulary's top:K,
the noise marginal, f(s) and the law's tally see no held-out image. Held-out rows are cut to
the same vocabulary, keep their labels as given and get weight 1 (pipeline/weights.py).

`plan_labels` is the whole plan in one process, the reference the distributed rounds of
pipeline/plan_tasks.py are held to (tests/test_plan_rounds.py); the rounds call the same pieces
on one manifest file or one key partition at a time.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from weakly_base.shard_format import weight_bucket

from .label_noise import NoiseTally, noisy_labels
from .pass1 import _list_parts, _lists_from_pairs, _scatter
from .split import train_mask
from .weights import Law, LawTally, WeightConfig, solve_law, tally_rows


class PlanConfig(Protocol):
    vocab: str
    weighting: WeightConfig
    label_noise: float
    seed: int
    holdout: float


def first_occurrence(keys: pa.Array) -> np.ndarray:
    """For each row, the index of the first row with the same key (-1 for null keys)."""
    keys = keys.combine_chunks() if isinstance(keys, pa.ChunkedArray) else keys
    if len(keys) == 0:
        return np.zeros(0, np.int64)
    encoded = pc.dictionary_encode(keys)
    codes = pc.fill_null(encoded.indices, -1).to_numpy(zero_copy_only=False).astype(np.int64)
    first = np.full(len(encoded.dictionary) + 1, -1, np.int64)
    valid = np.flatnonzero(codes >= 0)
    # np.unique's return_index is the first position of each code in `codes[valid]`.
    uniq, at = np.unique(codes[valid], return_index=True)
    first[uniq] = valid[at]
    return first[codes]


@dataclass
class LabelPlan:
    """The driver's pass-1 decisions for every input row, in input order.

    Columns, not Python lists: at 10M rows a list of lists of label strings alone is gigabytes.
    """

    keys: pa.Array  # string
    rejects: pa.Array  # string: "reason: detail", or null for rows that go on to pass 2
    wnids: pa.Array  # list<string>, sorted; empty for rejected rows
    vocabulary: tuple[str, ...]
    counts: Counter  # f(s): train images per synset among rows that go on
    weights: np.ndarray  # float64, 0 for rejected rows
    buckets: np.ndarray  # int64, -1 for rejected rows
    law: Law
    noise: NoiseTally

    @property
    def live(self) -> np.ndarray:
        return pc.is_null(self.rejects).to_numpy(zero_copy_only=False)


def _reject_duplicates(rows: pa.Table, key_column: pa.Array, rejects: pa.Array, live) -> pa.Array:
    """Every live row whose key an earlier row has is rejected, naming the first; `live` is
    updated in place."""
    n = rows.num_rows
    first = first_occurrence(key_column)
    duplicates = np.flatnonzero((first >= 0) & (first != np.arange(n)) & live)
    if len(duplicates) == 0:
        return rejects
    firsts = pa.array(first[duplicates], pa.int64())
    sources = rows["source"].combine_chunks().take(firsts).to_pylist()
    numbers = rows["row"].combine_chunks().take(firsts).to_pylist()
    live[duplicates] = False
    return _scatter(
        rejects,
        duplicates,
        [
            f"duplicate_key: first at {source} row {number}"
            for source, number in zip(sources, numbers, strict=True)
        ],
    )


def choose_vocabulary(seen: dict[str, int], vocab: str, lexicon) -> tuple[str, ...]:
    """The sorted vocabulary: fixed for in1k, in21k and nouns; for top:K the K synsets the live rows
    name most (`seen`: images per synset among rows that go on, before the cut)."""
    from wordnet_tools import top_k_vocabulary

    if not vocab.startswith("top:"):
        return tuple(sorted(lexicon.vocabulary))
    return tuple(
        top_k_vocabulary({w: c for w, c in seen.items() if c}, int(vocab.split(":", 1)[1]))
    )


def seen_counts(wnid_lists: pa.Array, live: np.ndarray) -> dict[str, int]:
    """Images per synset among the `live` rows' labels (a boolean row mask)."""
    parents, flat = _list_parts(wnid_lists)
    if len(flat) == 0:
        return {}
    encoded = pc.dictionary_encode(flat)
    codes = encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    seen = np.bincount(codes[live[parents]], minlength=len(encoded.dictionary))
    names = encoded.dictionary.to_pylist()
    return {w: int(c) for w, c in zip(names, seen.tolist(), strict=True) if c}


def cut_to_vocabulary(
    wnid_lists: pa.Array, rejects: pa.Array, live, vocabulary: tuple[str, ...], vocab_name: str
) -> tuple[pa.Array, pa.Array]:
    """(every row's labels cut to the vocabulary, rejects): a live row left without a label is
    rejected as out of vocabulary; `live` is updated in place."""
    n = len(wnid_lists)
    parents, flat = _list_parts(wnid_lists)
    encoded = pc.dictionary_encode(flat) if len(flat) else None
    names = encoded.dictionary.to_pylist() if encoded is not None else []
    codes = (
        encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64)
        if encoded is not None
        else np.zeros(0, np.int64)
    )
    on = live[parents]
    # Re-code into sorted vocabulary order; labels outside the vocabulary get -1 and drop out.
    code_in_vocab = {w: i for i, w in enumerate(vocabulary)}
    recode = np.array([code_in_vocab.get(w, -1) for w in names] + [-1], dtype=np.int64)
    vcodes = recode[codes] if len(codes) else codes
    keep = vcodes >= 0  # every row's labels are cut to the vocabulary; only live rows count
    has_label = np.bincount(parents[keep & on], minlength=n) > 0
    outside = np.flatnonzero(live & ~has_label)
    rejects = _scatter(
        rejects,
        outside,
        [f"out_of_vocabulary: no tag's synset is in {vocab_name}"] * len(outside),
    )
    live &= has_label
    vocab_names = pa.array(vocabulary, pa.string())
    return _lists_from_pairs(parents[keep], vcodes[keep], vocab_names, n), rejects


def buckets_of(weights: np.ndarray, reference: float) -> np.ndarray:
    """Weight bucket of each weight (-1 where the weight is 0: a rejected row)."""
    distinct, inverse = np.unique(weights, return_inverse=True)
    bucket_of = np.array(
        [weight_bucket(float(w), reference) if w > 0 else -1 for w in distinct], np.int64
    )
    return bucket_of[inverse] if len(distinct) else np.zeros(0, np.int64)


def label_codes(wnid_lists: pa.Array, vocabulary: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    """(row, vocabulary code) pairs of every label, sorted by row then code."""
    parents, flat = _list_parts(wnid_lists)
    vocab_names = pa.array(vocabulary, pa.string())
    codes = pc.index_in(flat, value_set=vocab_names).to_numpy(zero_copy_only=False)
    return parents, codes.astype(np.int64)


def law_tally(wnid_lists: pa.Array, rows, vocabulary, counts, config: WeightConfig) -> LawTally:
    """The law's tally (pipeline/weights.py) over the rows in the boolean mask `rows`."""
    parents, codes = label_codes(wnid_lists, vocabulary)
    return tally_rows(parents, codes, counts, len(wnid_lists), rows, config)


def plan_weights(wnid_lists: pa.Array, live, train, vocabulary, counts, law: Law) -> np.ndarray:
    """Per-row weight of the live rows (0 for the others) under the solved law."""
    parents, codes = label_codes(wnid_lists, vocabulary)
    on = live[parents]
    return law.weights(parents[on], codes[on], counts, len(live), train)


def synset_counts(wnid_lists: pa.Array, rows, vocabulary) -> np.ndarray:
    """f(s) per vocabulary code over the rows in the boolean mask `rows`."""
    parents, codes = label_codes(wnid_lists, vocabulary)
    on = rows[parents]
    return np.bincount(codes[on], minlength=len(vocabulary))


def plan_labels(rows: pa.Table, config: PlanConfig, lexicon) -> LabelPlan:
    """Duplicate keys, vocabulary, label noise, counts, weights and buckets (a pure function).

    The whole job in one process: the reference that the distributed plan (pipeline/plan.py)
    must agree with row for row."""
    key_column = rows["key"].combine_chunks()
    rejects = rows["reject"].combine_chunks()
    live = pc.is_null(rejects).to_numpy(zero_copy_only=False)
    rejects = _reject_duplicates(rows, key_column, rejects, live)
    in_train = train_mask(key_column, config.holdout)
    uncut = rows["wnids"].combine_chunks()
    vocabulary = choose_vocabulary(seen_counts(uncut, live & in_train), config.vocab, lexicon)
    wnid_lists, rejects = cut_to_vocabulary(uncut, rejects, live, vocabulary, config.vocab)
    train = live & in_train
    noise = NoiseTally()
    if config.label_noise > 0:
        marginal = Counter(seen_counts(wnid_lists, train))
        wnid_lists, noise = noisy_labels(wnid_lists, key_column, train, marginal, config)
    counts = synset_counts(wnid_lists, train, vocabulary)
    tally = law_tally(wnid_lists, train, vocabulary, counts, config.weighting)
    law = solve_law(config.weighting, counts, tally, config.holdout)
    weights = plan_weights(wnid_lists, live, in_train, vocabulary, counts, law)
    buckets = np.full(len(live), -1, np.int64)
    buckets[live] = buckets_of(weights[live], law.reference)
    count_map = Counter(
        {w: int(c) for w, c in zip(vocabulary, counts.tolist(), strict=True) if c > 0}
    )
    return LabelPlan(
        key_column, rejects, wnid_lists, vocabulary, count_map, weights, buckets, law, noise
    )
