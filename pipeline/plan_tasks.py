"""Pass 1 as Ray tasks that hold the rows, so the driver never does.

Rounds, each one task per manifest file (`f`) or key partition (`k`), each writing its output
to the dataset's storage and returning only counts (kilobytes):
  canonical_file  read and canonicalise one manifest file; write its rows and its keys, hash-
                  partitioned (pipeline/key_hash.py);
  find_duplicates one key partition across all files: every live row whose key an earlier row
                  (file order, then row order) has is a duplicate, recorded per file;
  file_seen       images per synset among a file's live train rows (for top:K);
  label_file      duplicates and out-of-vocabulary rows rejected, label noise on train rows,
                  the file's rejects written to the index and its live rows to a labelled part
                  (row group c is pass-2 chunk c); returns the file's train synset counts and
                  its noise tally;
  tally_file      the law's tally of the file's train rows (pipeline/weights.py: images, the
                  histogram of each image's rarest-tag count, inv-sqrt's exact weight sum),
                  from which the driver solves t or the scale;
  weigh_file      per-image weights under the solved law: weighted synset shares, a weight
                  histogram and the weight buckets used (for report.png and the shard tasks).
Only `train` rows (by key hash, pipeline/split.py) enter counts, vocabulary, noise and tally.
Each function depends only on its arguments and the objects earlier rounds wrote, so a rerun
gives the same bytes, and pipeline/pass1.py's `plan_labels` (the whole job in one process) is
the reference the tests hold these rounds to.
"""

from __future__ import annotations

import json
import posixpath
from collections import Counter
from dataclasses import asdict

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from weakly_base.shard_format import REJECTS_SCHEMA
from weakly_base.storage import Store

from . import work_layout as lay
from .arrow_lists import lists_from_parents
from .key_hash import key_partition
from .label_noise import NoiseTally, noisy_labels
from .label_plan import (
    buckets_of,
    cut_to_vocabulary,
    first_occurrence,
    label_codes,
    seen_counts,
)
from .manifest import Columns, tags_dropped
from .parquet_io import put_parquet, read_parquet
from .pass1 import _list_parts, _scatter, pass1_file
from .ray_tasks import resolve
from .split import train_mask
from .weights import Law, tally_rows

WORK_COLUMNS = ["source", "row", "key", "url", "path", "image", "tags", "orig_key", "extra"]
DUPLICATE_SCHEMA = pa.schema(
    [("row", pa.int64()), ("first_file", pa.int32()), ("first_row", pa.int64())]
)


def canonical_file(
    store: Store, f: int, url: str, columns: Columns, lexicon, partitions: int
) -> dict:
    """Round 1 for manifest file `f`: its canonical rows and its keys by partition. Manifests
    are read with the output's storage options (one set of credentials per job)."""
    table = pass1_file(url, columns, resolve(lexicon), store.storage_options)
    keys = table["key"].combine_chunks()
    has_key = np.flatnonzero(pc.is_valid(keys).to_numpy(zero_copy_only=False))
    live = pc.is_null(table["reject"]).to_numpy(zero_copy_only=False)
    part = key_partition(keys.take(pa.array(has_key, pa.int64())), partitions)
    order = np.argsort(part, kind="stable")  # rows stay in row order inside a partition
    sorted_parts = part[order]
    for k in np.unique(sorted_parts).tolist():
        lo, hi = np.searchsorted(sorted_parts, [k, k + 1])
        rows = has_key[order[lo:hi]]
        put_parquet(
            store,
            lay.key_part(k, f),
            pa.table(
                {
                    "key": keys.take(pa.array(rows, pa.int64())),
                    "row": pa.array(rows, pa.int64()),
                    "live": pa.array(live[rows]),
                }
            ),
        )
    put_parquet(store, lay.canonical_part(f), table.drop_columns(["row_error"]))
    bad = table.filter(pc.equal(table["row"], -1))["reject"].to_pylist()
    return {"rows": table.num_rows, "warnings": bad, "tags_dropped": tags_dropped(table)}


def find_duplicates(store: Store, k: int) -> int:
    """Round 2 for key partition `k`: record each file's duplicate rows; returns how many."""
    tables = []
    for name in store.list(lay.key_partition_dir(k)):
        t = read_parquet(store, f"{lay.key_partition_dir(k)}/{name}")
        f = lay.file_of_part(name)
        tables.append(t.append_column("file", pa.array(np.full(t.num_rows, f, np.int32))))
    found = 0
    if tables:
        keys = pa.concat_tables(tables)
        first = first_occurrence(keys["key"])
        own = np.arange(keys.num_rows)
        dup = np.flatnonzero((first != own) & keys["live"].to_numpy(zero_copy_only=False))
        files = keys["file"].to_numpy()
        rows = keys["row"].to_numpy()
        for f in np.unique(files[dup]).tolist():
            mine = dup[files[dup] == f]
            put_parquet(
                store,
                lay.duplicates_part(f, k),
                pa.table(
                    {
                        "row": rows[mine],
                        "first_file": files[first[mine]],
                        "first_row": rows[first[mine]],
                    },
                    schema=DUPLICATE_SCHEMA,
                ),
            )
        found = len(dup)
    store.put(lay.duplicates_done(k), json.dumps({"duplicates": found}).encode())
    return found


def _duplicates(store: Store, f: int) -> pa.Table:
    """Every duplicate row of file `f`, sorted by row."""
    folder = lay.duplicates_dir(f)
    parts = [read_parquet(store, f"{folder}/{name}") for name in store.list(folder)]
    table = pa.concat_tables(parts) if parts else DUPLICATE_SCHEMA.empty_table()
    return table.sort_by("row")


def _live_after_duplicates(store: Store, f: int, table: pa.Table, files: list[str] | None):
    """(live mask, rejects) of file `f`'s rows once its duplicates are rejected; the reject
    names the first row (only when `files` is given: the message needs its file's name)."""
    rejects = table["reject"].combine_chunks()
    live = pc.is_null(rejects).to_numpy(zero_copy_only=False)
    dups = _duplicates(store, f)
    if dups.num_rows:
        at = dups["row"].to_numpy()
        live[at] = False
        if files is not None:
            reasons = [
                f"duplicate_key: first at {files[ff]} row {rr}"
                for ff, rr in zip(
                    dups["first_file"].to_pylist(), dups["first_row"].to_pylist(), strict=True
                )
            ]
            rejects = _scatter(rejects, at, reasons)
    return live, rejects


def file_seen(store: Store, f: int, holdout: float) -> dict[str, int]:
    """Round 3: images per synset among file `f`'s live train rows, before the vocabulary
    cut."""
    table = read_parquet(store, lay.canonical_part(f), ["row", "key", "wnids", "reject"])
    live, _ = _live_after_duplicates(store, f, table, None)
    train = live & train_mask(table["key"], holdout)
    return seen_counts(table["wnids"].combine_chunks(), train)


def _fetch_paths(paths: pa.ChunkedArray, cwd: str, rooted: bool) -> pa.Array:
    """What the fetcher opens: relative paths joined to the driver's working directory (Ray
    workers elsewhere have another one); with --path-root, paths as written (the fetcher
    resolves them inside the root and refuses the ones that leave it)."""
    values = paths.to_pylist()
    if not rooted:
        values = [
            posixpath.normpath(posixpath.join(cwd, p)) if p and "://" not in p else p
            for p in values
        ]
    return pa.array(values, pa.string())


def _rejects_part(table: pa.Table, rejects: pa.Array, live: np.ndarray) -> pa.Table:
    """The file's rejected rows in REJECTS_SCHEMA ("reason: detail" split at the first ": ")."""
    at = pa.array(np.flatnonzero(~live), pa.int64())
    heads_tails = [r.partition(": ") for r in rejects.take(at).to_pylist()]
    picked = table.take(at)
    return pa.table(
        {
            "source": picked["source"],
            "row": picked["row"],
            "key": picked["key"],
            "reason": pa.array([h for h, _, _ in heads_tails], pa.string()),
            "detail": pa.array([t for _, _, t in heads_tails], pa.string()),
        }
    ).cast(REJECTS_SCHEMA)


def label_file(
    store: Store,
    f: int,
    files: list[str],
    vocabulary: tuple[str, ...],
    marginal: dict[str, int],
    config,
    cwd: str,
) -> dict:
    """Round 4 for file `f`: rejects into the index, live rows into the labelled part."""
    table = read_parquet(store, lay.canonical_part(f))
    live, rejects = _live_after_duplicates(store, f, table, files)
    wnid_lists, rejects = cut_to_vocabulary(
        table["wnids"].combine_chunks(), rejects, live, vocabulary, config.vocab
    )
    keys = table["key"].combine_chunks()
    train = live & train_mask(keys, config.holdout)
    noise = NoiseTally()
    if config.label_noise > 0:
        wnid_lists, noise = noisy_labels(wnid_lists, keys, train, marginal, config)
    parents, codes = label_codes(wnid_lists, vocabulary)
    counts = np.bincount(codes[train[parents]], minlength=len(vocabulary))
    rejected = _rejects_part(table, rejects, live)
    put_parquet(store, lay.pass1_rejects_part(f), rejected)
    take = pa.array(np.flatnonzero(live), pa.int64())
    live_wnids = wnid_lists.take(take)
    live_codes = codes[live[parents]]  # pairs in row order, so `take` keeps them aligned
    labels = lists_from_parents(
        pc.list_parent_indices(live_wnids).to_numpy(zero_copy_only=False),
        pa.array(live_codes, pa.int32()),
        len(take),
    )
    rows = table.take(take)
    labelled = (
        rows.select(WORK_COLUMNS)
        .append_column("wnids", live_wnids)
        .append_column(
            "fetch_path", _fetch_paths(rows["path"], cwd, config.fetch.path_root is not None)
        )
        .append_column("labels", labels)
    )
    part_rows = config.chunk_rows * lay.CHUNKS_PER_PART
    for j, start in enumerate(range(0, labelled.num_rows, part_rows)):
        part = labelled.slice(start, part_rows)
        put_parquet(store, lay.labelled_part(f, j), part, row_group_size=config.chunk_rows)
    used = np.flatnonzero(counts)
    reasons = Counter(rejected["reason"].to_pylist())
    return {
        "rows": table.num_rows,
        "live": len(take),
        "train": int(train.sum()),
        "noise": asdict(noise),
        "codes": used.tolist(),
        "counts": counts[used].tolist(),
        "rejects": dict(reasons),
    }


def _pairs(labels: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(row, code) pairs of a labels column (list<int32>), sorted by row."""
    labels = labels.combine_chunks() if isinstance(labels, pa.ChunkedArray) else labels
    parents, flat = _list_parts(labels)
    return parents, flat.to_numpy(zero_copy_only=False).astype(np.int64)


def row_weights(labels: pa.Array, keys, counts: np.ndarray, law: Law) -> np.ndarray:
    """Each row's sampling weight from its label codes, its key (train or held out) and the
    job's solved law."""
    parents, codes = _pairs(labels)
    return law.weights(parents, codes, counts, len(labels), train_mask(keys, law.holdout))


def read_labelled(store: Store, f: int, live: int, chunk_rows: int, columns=None) -> pa.Table:
    """All of file `f`'s labelled rows (`live` of them, at least one), in order."""
    parts = [read_parquet(store, p, columns) for p in lay.labelled_parts(f, live, chunk_rows)]
    return pa.concat_tables(parts)


def tally_file(store: Store, f: int, live: int, counts: np.ndarray, config) -> dict:
    """Round 5 for file `f`: the law's tally of its train rows (pipeline/weights.py)."""
    rows = read_labelled(store, f, live, config.chunk_rows, ["key", "labels"])
    parents, codes = _pairs(rows["labels"])
    train = train_mask(rows["key"], config.holdout)
    tally = tally_rows(parents, codes, counts, rows.num_rows, train, config.weighting)
    return asdict(tally)


def weigh_file(
    store: Store, f: int, live: int, counts: np.ndarray, law: Law, edges, config
) -> dict:
    """Round 6 for file `f`: weighted synset shares and a log10-weight histogram of its train
    rows, and the weight buckets its rows use."""
    rows = read_labelled(store, f, live, config.chunk_rows, ["key", "labels"])
    parents, codes = _pairs(rows["labels"])
    train = train_mask(rows["key"], law.holdout)
    weights = law.weights(parents, codes, counts, rows.num_rows, train)
    share = np.bincount(codes, weights=(weights * train)[parents], minlength=len(counts))
    used = np.flatnonzero(share)
    hist = np.histogram(np.log10(weights[train & (weights > 0)]), bins=edges)[0]
    buckets = np.unique(buckets_of(weights, law.reference))
    return {
        "codes": used.tolist(),
        "share": share[used].tolist(),
        "hist": hist.tolist(),
        "buckets": [int(b) for b in buckets],
    }
