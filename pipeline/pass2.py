"""Pass 2 of ingest, one Ray task per chunk of rows: fetch, decode once, validate, hash, drop
eval near-copies, resize, encode, and commit the chunk as parquet parts.

A chunk writes one part per weight bucket with the accepted images (so each shard task reads
only its own bytes), then the chunk's row table without image bytes, last: that file existing
is what marks the chunk done, so a resumed job skips it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .fetch import FetchError, fetch_completed
from .images import ImageReject, prepare_image
from .ingest_config import IngestConfig
from .phash import to_hex
from .shards import atomic_write

PART_SCHEMA = pa.schema(
    [
        ("key", pa.string()),
        ("source", pa.string()),
        ("row", pa.int64()),
        ("bucket", pa.int32()),
        ("weight", pa.float64()),
        ("labels", pa.list_(pa.int32())),
        ("meta", pa.string()),
        ("jpeg", pa.binary()),
        ("phash", pa.uint64()),
        ("reject", pa.string()),
        ("detail", pa.string()),
        ("matches", pa.string()),  # JSON list of [eval_set, eval_id, distance]
    ]
)
# What a bucket part holds of each accepted row: all a shard writer needs.
BUCKET_COLUMNS = ["key", "weight", "meta", "jpeg"]


def bucket_part(part_path: Path, bucket: int) -> Path:
    """The file beside a chunk's part that holds its accepted rows of one weight bucket."""
    return part_path.with_name(f"{part_path.stem}-b{bucket:02d}.parquet")


def chunk_of(table: pa.Table, offset: int, n: int) -> pa.Table:
    """Rows [offset, offset + n) as a table of their own. A `slice` would share the whole table's
    buffers, and pickling it (Ray's task arguments) ships every row to every chunk task."""
    return table.take(pa.array(np.arange(offset, min(offset + n, table.num_rows)), pa.int64()))


def atomic_parquet(table: pa.Table, path: Path) -> None:
    atomic_write(path, lambda handle: pq.write_table(table, handle))


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


def _part_table(prepared_rows: list[tuple], matches: dict[int, list]) -> pa.Table:
    """The chunk's rows in PART_SCHEMA; a row with an eval match is rejected here."""
    out: dict[str, list] = {name: [] for name in PART_SCHEMA.names}
    for i, (record, prepared, reject, detail) in enumerate(prepared_rows):
        if prepared is not None and i in matches:
            best = min(matches[i], key=lambda m: (m[2], m[0], m[1]))
            reject, detail = "eval_near_copy", f"{best[0]}/{best[1]} at distance {best[2]}"
        for name in ("key", "source", "row", "bucket", "weight", "labels"):
            out[name].append(record[name])
        out["meta"].append(sample_json(record, prepared) if reject is None else None)
        out["jpeg"].append(prepared.jpeg if reject is None else None)
        out["phash"].append(prepared.phash if prepared is not None else None)
        out["reject"].append(reject)
        out["detail"].append(detail)
        out["matches"].append(json.dumps(matches[i]) if i in matches else None)
    return pa.table(out, schema=PART_SCHEMA)


def process_chunk(rows: pa.Table, config: IngestConfig, eval_index, part_path: str) -> dict:
    """Pass 2 for one chunk; writes `part_path` atomically and returns counts."""
    records = rows.to_pylist()
    prepared_rows = _prepare_all(records, config)
    table = _part_table(prepared_rows, _eval_matches(prepared_rows, eval_index, config.radius))
    accepted = table.filter(pc.is_null(table["reject"]))
    for bucket in sorted(set(accepted["bucket"].to_pylist())):
        rows_b = accepted.filter(pc.equal(accepted["bucket"], bucket))
        atomic_parquet(rows_b.select(BUCKET_COLUMNS), bucket_part(Path(part_path), bucket))
    atomic_parquet(table.drop_columns(["jpeg", "meta"]), Path(part_path))  # last: chunk done
    return {"rows": len(records), "written": accepted.num_rows}
