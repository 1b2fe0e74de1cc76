"""Pass 2 of ingest, one Ray task per chunk of rows: fetch, decode once, validate, hash, drop
eval near-copies, resize, encode, and commit the chunk.

A chunk is one row group of a file's labelled part (pipeline/plan_tasks.py). Its weights and
buckets are computed here from the job's synset counts and the plan's solved law, so the
driver never builds a per-row table. It writes one part per weight bucket with the accepted samples (so each shard task
reads only its own bytes), its rejects and eval matches as index parts, and last a small
`done` object with its counts: that object existing is what marks the chunk done, so a resumed
job skips it.
"""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pyarrow as pa

from weakly_base.shard_format import EVAL_MATCHES_SCHEMA, REJECTS_SCHEMA
from weakly_base.storage import Store

from . import work_layout as lay
from .buckets import BUCKET_SCHEMA
from .fetch import FetchError, fetch_completed
from .images import ImageReject, prepare_image
from .ingest_config import IngestConfig
from .label_plan import buckets_of
from .parquet_io import put_parquet, read_row_group
from .phash import to_hex
from .plan_tasks import row_weights
from .weights import Law


def sample_json(record: dict, prepared) -> str:
    """The `{key}.json` member: labels, tags, weight and provenance (docs/FORMAT.md)."""
    meta = {
        "key": record["key"],
        "labels": record["labels"],
        "wnids": record["wnids"],
        "k": len(record["wnids"]),
        "weight": record["weight"],
        "tags": record["tags"],
        "source": record["url"] or record["path"] or f"inline:{record['source']}:{record['row']}",
        "width": prepared.width,
        "height": prepared.height,
        "phash": to_hex(prepared.phash),
    }
    if record["orig_key"]:
        meta["orig_key"] = record["orig_key"]
    if record["extra"]:
        meta["extra"] = json.loads(record["extra"])
    return json.dumps(meta, sort_keys=True, ensure_ascii=False)


def _prepare_one(data: bytes | FetchError, image_config) -> tuple:
    """(prepared image or None, reject, detail) for one row's fetched bytes."""
    reject = detail = prepared = None
    if isinstance(data, FetchError):
        reject, detail = data.reason, data.detail
    else:
        try:
            prepared = prepare_image(data, image_config)
        except ImageReject as exc:
            reject, detail = exc.reason, exc.detail
        except Exception as exc:  # a decoder bug must cost one row, not the job
            reject, detail = "decode_error", f"{type(exc).__name__}: {exc}"[:200]
    return prepared, reject, detail


def _prepare_all(records: list[dict], config: IngestConfig) -> list[tuple]:
    """(record, prepared image or None, reject, detail) per row, in row order.

    Rows are decoded in the order their fetches complete, so one slow server never holds up
    images that have already arrived; each row's result depends only on its own bytes, and the
    list is put back in row order, so the output is the same whatever the completion order."""
    refs = [(r["url"], r["fetch_path"], r["image"]) for r in records]
    out: list[tuple | None] = [None] * len(records)
    for i, data in fetch_completed(refs, config.fetch):
        out[i] = (records[i], *_prepare_one(data, config.image))
    return out


def _eval_matches(prepared_rows: list[tuple], eval_index, radius: int | None) -> dict[int, list]:
    """Row position -> [eval_set, eval_id, distance] of every eval image within the radius."""
    matches: dict[int, list] = {}
    if eval_index is None:
        return matches
    hashes = np.array([p.phash if p else 0 for _, p, _, _ in prepared_rows], dtype=np.uint64)
    ok = np.array([p is not None for _, p, _, _ in prepared_rows])
    if ok.any():
        found = eval_index.search(hashes[ok], radius)
        rows_ok = np.flatnonzero(ok)
        for q, eval_set, eval_id, distance in found.rows():
            matches.setdefault(int(rows_ok[q]), []).append([eval_set, eval_id, distance])
    return matches


def _chunk_tables(prepared_rows: list[tuple], matches: dict[int, list]):
    """(accepted rows per bucket, rejects, eval matches) of one chunk; a row with an eval
    match is rejected here."""
    accepted: dict[int, dict[str, list]] = {}
    rejects = {name: [] for name in REJECTS_SCHEMA.names}
    found = {name: [] for name in EVAL_MATCHES_SCHEMA.names}
    for i, (record, prepared, reject, detail) in enumerate(prepared_rows):
        if prepared is not None and i in matches:
            best = min(matches[i], key=lambda m: (m[2], m[0], m[1]))
            reject, detail = "eval_near_copy", f"{best[0]}/{best[1]} at distance {best[2]}"
            for eval_set, eval_id, distance in matches[i]:
                for name, value in zip(
                    found, (record["key"], eval_set, eval_id, distance), strict=True
                ):
                    found[name].append(value)
        if reject is not None:
            values = (record["source"], record["row"], record["key"], reject, detail)
            for name, value in zip(rejects, values, strict=True):
                rejects[name].append(value)
            continue
        out = accepted.setdefault(record["bucket"], {name: [] for name in BUCKET_SCHEMA.names})
        values = (
            record["key"],
            record["weight"],
            sample_json(record, prepared),
            prepared.jpeg,
            record["labels"],
            prepared.phash,
        )
        for name, value in zip(BUCKET_SCHEMA.names, values, strict=True):
            out[name].append(value)
    return (
        {b: pa.table(cols, schema=BUCKET_SCHEMA) for b, cols in accepted.items()},
        pa.table(rejects, schema=REJECTS_SCHEMA),
        pa.table(found, schema=EVAL_MATCHES_SCHEMA),
    )


def chunk_records(rows: pa.Table, counts: np.ndarray, law: Law) -> list[dict]:
    """The chunk's rows as dicts, each with its sampling weight and weight bucket."""
    weights = row_weights(rows["labels"], rows["key"], counts, law)
    buckets = buckets_of(weights, law.reference)
    records = rows.to_pylist()
    for record, weight, bucket in zip(records, weights.tolist(), buckets.tolist(), strict=True):
        record["weight"], record["bucket"] = weight, bucket
    return records


def process_chunk(
    store: Store, f: int, c: int, config: IngestConfig, counts, law: Law, eval_index
) -> dict:
    """Pass 2 for chunk c of file f under the plan's solved `law`; commits its outputs and
    returns its counts."""
    rows = read_row_group(store, *lay.chunk_location(f, c))
    records = chunk_records(rows, np.asarray(counts), law)
    prepared_rows = _prepare_all(records, config)
    matches = _eval_matches(prepared_rows, eval_index, config.radius)
    accepted, rejects, found = _chunk_tables(prepared_rows, matches)
    for bucket in sorted(accepted):
        put_parquet(store, lay.bucket_part(bucket, f, c), accepted[bucket])
    if rejects.num_rows:
        put_parquet(store, lay.pass2_rejects_part(f, c), rejects)
    if found.num_rows:
        put_parquet(store, lay.eval_matches_part(f, c), found)
    done = {
        "rows": len(records),
        "written": {str(b): t.num_rows for b, t in sorted(accepted.items())},
        "rejects": dict(Counter(rejects["reason"].to_pylist())),
        "matches": dict(Counter(found["eval_set"].to_pylist())),
    }
    store.put(lay.chunk_done(f, c), json.dumps(done, sort_keys=True).encode())  # last
    return done
