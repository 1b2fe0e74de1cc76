"""Pass 1 of ingest, metadata only: canonical labels, keys, reject reasons, then the label plan.

Everything here works on Arrow columns and numpy arrays, not on per-row Python objects: a
web-scale manifest has billions of rows, but only a few million distinct tags, so the lexicon
is consulted once per distinct tag and the per-row work (label sets, duplicates, counts,
weights) is array arithmetic. Python touches a row only to build a message for a row that is
rejected or a key that must be derived or sanitised.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from weakly_base.shard_format import KEY_PATTERN, weight_bucket

from .arrow_lists import lists_from_parents
from .keys import row_keys, sanitise_key
from .manifest import ROWS_SCHEMA, Columns, ManifestError, read_manifest
from .weights import WeightConfig, synset_weight_array


class PlanConfig(Protocol):
    vocab: str
    weighting: WeightConfig
    label_noise: float
    seed: int


def _list_parts(lists: pa.Array) -> tuple[np.ndarray, pa.Array]:
    """(row index of each item, flat items) of a list array; null lists have no items."""
    parents = pc.list_parent_indices(lists).to_numpy(zero_copy_only=False).astype(np.int64)
    return parents, pc.list_flatten(lists)


def _lists_from_pairs(rows: np.ndarray, codes: np.ndarray, names: pa.Array, n: int) -> pa.Array:
    """Per-row sorted, duplicate-free lists of `names[code]` from (row, code) pairs."""
    width = max(len(names), 1)
    # Rows arrive in order, so the pairs are nearly sorted and a stable sort is cheap.
    pairs = np.sort(rows.astype(np.int64) * width + codes, kind="stable")
    if len(pairs):
        pairs = pairs[np.concatenate([[True], pairs[1:] != pairs[:-1]])]
    values = names.take(pa.array(pairs % width)) if len(pairs) else pa.array([], names.type)
    return lists_from_parents(pairs // width, values, n)


def _brief(tags: list[str], limit: int = 200) -> str:
    text = " ".join(tags)
    return text if len(text) <= limit else text[: limit - 3] + "..."


KEY_BATCH = 65536


def _scatter(column: pa.Array, at: np.ndarray, values: list | pa.Array) -> pa.Array:
    """`column` with positions `at` (ascending) replaced by `values`, without a Python list
    of every row."""
    if len(at) == 0:
        return column
    mask = np.zeros(len(column), dtype=bool)
    mask[at] = True
    if not isinstance(values, pa.Array):
        values = pa.array(values, column.type)
    return pc.replace_with_mask(column, pa.array(mask), values)


def _row_keys(table: pa.Table) -> tuple[pa.Array, pa.Array]:
    """(key, orig_key): given keys sanitised, missing keys derived from the row's content."""
    n = table.num_rows
    given = table["key"].combine_chunks()
    has_key = pc.fill_null(pc.not_equal(given, ""), False).to_numpy(zero_copy_only=False)
    has_error = pc.is_valid(table["row_error"]).to_numpy(zero_copy_only=False)
    # An unparsable row without a key has nothing to key on: null.
    raw = pc.if_else(pa.array(has_key), given, pa.nulls(n, pa.string()))
    derive = np.flatnonzero(~has_key & ~has_error)
    derived = []
    for start in range(0, len(derive), KEY_BATCH):  # bounded temporaries, whatever the file size
        part = table.take(pa.array(derive[start : start + KEY_BATCH]))
        keys = row_keys(
            part["url"].combine_chunks(),
            part["path"].combine_chunks(),
            part["image"].combine_chunks(),
            part["tags"].combine_chunks(),
        )
        derived.append(pa.array(keys, pa.string()))
    if derived:
        raw = _scatter(raw, derive, pa.concat_arrays(derived))
    safe = pc.fill_null(pc.match_substring_regex(raw, KEY_PATTERN), True)
    unsafe = np.flatnonzero(~safe.to_numpy(zero_copy_only=False))
    originals = raw.take(pa.array(unsafe, pa.int64())).to_pylist()
    cleaned = [sanitise_key(k) for k in originals]
    keys = _scatter(raw, unsafe, cleaned)
    orig = _scatter(
        pa.nulls(n, pa.string()),
        unsafe,
        [o if c != o else None for o, c in zip(originals, cleaned, strict=True)],
    )
    return keys, orig


def canonicalise_rows(table: pa.Table, lexicon) -> pa.Table:
    """Add `key` (sanitised, stable), `orig_key`, `wnids` and a pass-1 `reject` reason."""
    n = table.num_rows
    tags = table["tags"].combine_chunks()
    parents, flat = _list_parts(tags)
    encoded = pc.dictionary_encode(flat) if len(flat) else None
    distinct = encoded.dictionary.to_pylist() if encoded is not None else []
    found = lexicon.canonical_many(distinct)
    wnid_names = sorted({w for w in found if w is not None})
    code_of = {w: i for i, w in enumerate(wnid_names)}
    distinct_code = np.array([code_of.get(w, -1) for w in found] + [-1], dtype=np.int64)
    flat_code = (
        distinct_code[encoded.indices.to_numpy(zero_copy_only=False)]
        if encoded is not None
        else np.zeros(0, np.int64)
    )
    n_tags = pc.fill_null(pc.list_value_length(tags), 0).to_numpy(zero_copy_only=False)
    row_error = table["row_error"].combine_chunks()
    has_error = pc.is_valid(row_error).to_numpy(zero_copy_only=False)
    has_image = (
        pc.is_valid(table["url"]).to_numpy(zero_copy_only=False)
        | pc.is_valid(table["path"]).to_numpy(zero_copy_only=False)
        | pc.is_valid(table["image"]).to_numpy(zero_copy_only=False)
    )
    eligible = ~has_error & has_image  # rows rejected before labelling keep no labels
    hit = (flat_code >= 0) & eligible[parents]
    wnids = _lists_from_pairs(parents[hit], flat_code[hit], pa.array(wnid_names, pa.string()), n)
    n_labels = np.bincount(parents[hit], minlength=n)
    no_tags = np.flatnonzero(~has_error & (n_tags == 0))
    no_image = np.flatnonzero(~has_error & (n_tags > 0) & ~has_image)
    unlabelled = np.flatnonzero(~has_error & (n_tags > 0) & has_image & (n_labels == 0))
    # Only unlabelled rows need the slower question: is any tag a WordNet noun at all?
    in_wordnet: dict[str, bool] = {}
    unlabelled_reasons = []
    for row_tags in tags.take(pa.array(unlabelled, pa.int64())).to_pylist():
        known = False
        for tag in row_tags:
            if tag not in in_wordnet:
                in_wordnet[tag] = lexicon.in_wordnet(tag)
            known = known or in_wordnet[tag]
        kind = "out_of_vocabulary" if known else "no_known_tags"
        unlabelled_reasons.append(f"{kind}: {_brief(row_tags)}")
    order = np.concatenate([no_tags, no_image, unlabelled]).astype(np.int64)
    reasons = (
        ["no_tags: the tags field is empty or null"] * len(no_tags)
        + ["no_image: row has no url, path or image bytes"] * len(no_image)
        + unlabelled_reasons
    )
    ranked = np.argsort(order, kind="stable")
    rejects = _scatter(row_error, order[ranked], [reasons[i] for i in ranked.tolist()])
    keys, orig_keys = _row_keys(table)
    return (
        table.drop_columns(["key"])
        .append_column("key", keys)
        .append_column("orig_key", orig_keys)
        .append_column("wnids", wnids)
        .append_column("reject", rejects)
    )


def pass1_file(
    url: str, columns: Columns, lexicon, storage_options: dict | None = None
) -> pa.Table:
    """Pass 1 for one manifest file. A file that cannot be read at all becomes one rejected
    row (`row` = -1) naming the file and what is wrong, and the job goes on."""
    try:
        table = read_manifest(url, columns, storage_options)
    except ManifestError as exc:
        table = pa.table({"source": [url], "row": [-1], "row_error": [f"bad_manifest: {exc}"]})
        table = pa.table(
            {
                f.name: table[f.name] if f.name in table.column_names else pa.nulls(1, f.type)
                for f in ROWS_SCHEMA
            },
            schema=ROWS_SCHEMA,
        )
    return canonicalise_rows(table, lexicon)


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


def apply_label_noise(
    wnids: list[list[str]], keys: list[str], counts: Counter, p: float, seed: int
) -> list[list[str]]:
    """Replace each label with probability p by one drawn from the label marginal.

    Seeded per key, so the noise does not depend on row order or chunking (Mahajan et al.'s
    ablation draws replacements from the hashtag distribution).
    """
    if p <= 0:
        return wnids
    vocab = sorted(counts)
    probs = np.array([counts[w] for w in vocab], dtype=np.float64)
    cdf = np.cumsum(probs / probs.sum())
    out = []
    for key, labels in zip(keys, wnids, strict=True):
        rng = np.random.default_rng(
            int.from_bytes(hashlib.sha1(f"{seed}:{key}".encode()).digest()[:8])
        )
        noisy = set()
        for label in labels:
            if rng.random() < p:
                noisy.add(
                    vocab[
                        min(int(np.searchsorted(cdf, rng.random(), side="right")), len(vocab) - 1)
                    ]
                )
            else:
                noisy.add(label)
        out.append(sorted(noisy))
    return out


@dataclass
class LabelPlan:
    """The driver's pass-1 decisions for every input row, in input order.

    Columns, not Python lists: at 10M rows a list of lists of label strings alone is gigabytes.
    """

    keys: pa.Array  # string
    rejects: pa.Array  # string: "reason: detail", or null for rows that go on to pass 2
    wnids: pa.Array  # list<string>, sorted; empty for rejected rows
    vocabulary: tuple[str, ...]
    counts: Counter  # f(s): images per synset among rows that go on
    weights: np.ndarray  # float64, 0 for rejected rows
    buckets: np.ndarray  # int64, -1 for rejected rows

    @property
    def live(self) -> np.ndarray:
        return pc.is_null(self.rejects).to_numpy(zero_copy_only=False)


def _image_weights(
    parents: np.ndarray, codes: np.ndarray, counts: np.ndarray, n: int, config: WeightConfig
) -> np.ndarray:
    """Per-row weight from (row, synset code) pairs sorted by row; 0 for rows without labels.

    The weighting law of pipeline/weights.py, as array reductions over each row's labels.
    """
    per_synset = synset_weight_array(counts, config)
    weights = np.zeros(n, np.float64)
    if len(codes) == 0:
        return weights
    rows, starts = np.unique(parents, return_index=True)
    values = per_synset[codes]
    if config.reduce == "max":
        reduced = np.maximum.reduceat(values, starts)
    else:
        reduced = np.add.reduceat(values, starts) / np.diff(np.append(starts, len(codes)))
    if config.scheme == "inv-sqrt":
        rare = np.logical_or.reduceat(counts[codes] < config.rare_threshold, starts)
        reduced = np.where(rare, reduced * config.rare_upsample, reduced)
    weights[rows] = reduced
    return weights


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
    """The sorted vocabulary: fixed for in1k and nouns; for top:K the K synsets the live rows
    name most (`seen`: images per synset among rows that go on, before the cut)."""
    from wordnet_tools import top_k_vocabulary

    if vocab in ("in1k", "nouns"):
        return tuple(sorted(lexicon.vocabulary))
    return tuple(
        top_k_vocabulary({w: c for w, c in seen.items() if c}, int(vocab.split(":", 1)[1]))
    )


def seen_counts(wnid_lists: pa.Array, live: np.ndarray) -> dict[str, int]:
    """Images per synset among the live rows' (uncut) labels."""
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
    on = live[parents] if len(parents) else np.zeros(0, bool)
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


def noisy_labels(wnid_lists: pa.Array, key_column: pa.Array, live, marginal: Counter, config):
    """The live rows' labels with `config.label_noise` applied (apply_label_noise), drawing
    replacements from `marginal` (images per synset over every live row of the job)."""
    live_idx = np.flatnonzero(live)
    wnids = wnid_lists.to_pylist()
    keys = key_column.to_pylist()
    noisy = apply_label_noise(
        [wnids[i] for i in live_idx.tolist()],
        [keys[i] for i in live_idx.tolist()],
        marginal,
        config.label_noise,
        config.seed,
    )
    for i, labels in zip(live_idx.tolist(), noisy, strict=True):
        wnids[i] = labels
    return pa.array(wnids, pa.list_(pa.string()))


def weight_reference(counts: np.ndarray, config: WeightConfig) -> float:
    """The largest weight any image can have, from the synset counts alone: the reference that
    weight buckets are cut from. Exact for `reduce=max` (the rarest synset has the largest
    weight, and an image with it is rare if any is); an upper bound for `mean`. A job that
    holds no rows can therefore assign buckets in its tasks."""
    counts = np.asarray(counts)
    used = counts > 0
    if not used.any():
        return 1.0
    top = float(synset_weight_array(counts, config)[used].max())
    if config.scheme == "inv-sqrt" and (counts[used] < config.rare_threshold).any():
        top *= config.rare_upsample
    return top


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


def image_weights(pair_rows, pair_codes, counts, n: int, config: WeightConfig) -> np.ndarray:
    """Per-row weight from the job's synset counts (pipeline/weights.py's law)."""
    return _image_weights(pair_rows, pair_codes, np.asarray(counts), n, config)


def _weights_and_buckets(
    wnid_lists: pa.Array, live, vocabulary: tuple[str, ...], config: PlanConfig
) -> tuple[Counter, np.ndarray, np.ndarray]:
    """(f(s) per synset, weight per row, weight bucket per row) over the live rows' labels."""
    n = len(live)
    parents, codes = label_codes(wnid_lists, vocabulary)
    on = live[parents] if len(parents) else np.zeros(0, bool)
    pair_rows, pair_codes = parents[on], codes[on]
    counts = np.bincount(pair_codes, minlength=len(vocabulary))
    weights = image_weights(pair_rows, pair_codes, counts, n, config.weighting)
    buckets = np.full(n, -1, np.int64)
    buckets[live] = buckets_of(weights[live], weight_reference(counts, config.weighting))
    count_map = Counter(
        {w: int(c) for w, c in zip(vocabulary, counts.tolist(), strict=True) if c > 0}
    )
    return count_map, weights, buckets


def plan_labels(rows: pa.Table, config: PlanConfig, lexicon) -> LabelPlan:
    """Duplicate keys, vocabulary, label noise, counts, weights and buckets (a pure function).

    The whole job in one process: the reference that the distributed plan (pipeline/plan.py)
    must agree with row for row."""
    key_column = rows["key"].combine_chunks()
    rejects = rows["reject"].combine_chunks()
    live = pc.is_null(rejects).to_numpy(zero_copy_only=False)
    rejects = _reject_duplicates(rows, key_column, rejects, live)
    uncut = rows["wnids"].combine_chunks()
    vocabulary = choose_vocabulary(seen_counts(uncut, live), config.vocab, lexicon)
    wnid_lists, rejects = cut_to_vocabulary(uncut, rejects, live, vocabulary, config.vocab)
    if config.label_noise > 0:
        marginal = Counter(seen_counts(wnid_lists, live))
        wnid_lists = noisy_labels(wnid_lists, key_column, live, marginal, config)
    counts, weights, buckets = _weights_and_buckets(wnid_lists, live, vocabulary, config)
    return LabelPlan(key_column, rejects, wnid_lists, vocabulary, counts, weights, buckets)
