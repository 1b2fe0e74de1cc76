"""Pass 1 of ingest, metadata only: canonical labels, keys and reject reasons per manifest file
(the label plan built on them is pipeline/label_plan.py).

Everything here works on Arrow columns and numpy arrays, not on per-row Python objects: a
web-scale manifest has billions of rows, but only a few million distinct tags, so the lexicon
is consulted once per distinct tag and the per-row work (label sets, duplicates, counts,
weights) is array arithmetic. Python touches a row only to build a message for a row that is
rejected or a key that must be derived or sanitised.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from weakly_base.shard_format import KEY_PATTERN

from .arrow_lists import lists_from_parents
from .keys import row_keys, sanitise_key
from .manifest import ROWS_SCHEMA, Columns, ManifestError, read_manifest


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
