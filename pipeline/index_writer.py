"""The end of an ingest, on the driver: the index parquet files, `report.png` and, last,
`dataset.json` (whose presence is what says the dataset is complete).

Each table is built in its own phase from what the earlier steps hand over: pass 1's plan (rows
rejected before any fetch), the pass-2 parts (rows rejected while fetching or preparing, and
eval matches), and the shard writers' reports of which samples went into which shard. Every run
checks rows in = written + rejected.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from weakly_base.shard_format import (
    DATASET_JSON,
    EVAL_MATCHES_INDEX,
    EVAL_MATCHES_SCHEMA,
    REJECTS_INDEX,
    REJECTS_SCHEMA,
    SAMPLES_INDEX,
    SAMPLES_SCHEMA,
    SHARD_DIR,
    SHARDS_INDEX,
    SHARDS_SCHEMA,
    VAL,
    dataset_header,
)

from .buckets import WrittenShard
from .ingest_config import IngestConfig
from .pass1 import LabelPlan
from .phash import HASH_VERSION
from .split import splits_for
from .summary import IngestSummary

PART_INDEX_COLUMNS = ["key", "source", "row", "labels", "weight", "phash", "reject", "detail",
                      "matches"]  # fmt: skip


@dataclass(frozen=True)
class IngestInputs:
    """What the index is built from: the manifests, pass 1's rows and plan, the pass-2 parts
    (in part order), and the shards as their writers reported them."""

    files: list[str]
    rows: pa.Table
    plan: LabelPlan
    part_paths: list[str]
    shards: list[WrittenShard]


def _read_parts(part_paths: list[str]) -> pa.Table:
    if not part_paths:
        return pa.table({c: pa.array([], pa.null()) for c in PART_INDEX_COLUMNS})
    return pa.concat_tables([pq.read_table(p, columns=PART_INDEX_COLUMNS) for p in part_paths])


def rejects_table(rows: pa.Table, plan: LabelPlan, parts: pa.Table) -> pa.Table:
    """Pass 1's rejects (reason "head: detail" split at the first ": "), then pass 2's, sorted
    by manifest file and row."""
    rejected = pa.array(np.flatnonzero(~plan.live), pa.int64())
    heads_tails = [r.partition(": ") for r in plan.rejects.take(rejected).to_pylist()]
    picked = rows.take(rejected)
    pass1 = {
        "source": picked["source"],
        "row": picked["row"],
        "key": picked["key"],
        "reason": pa.array([head for head, _, _ in heads_tails], pa.string()),
        "detail": pa.array([tail for _, _, tail in heads_tails], pa.string()),
    }
    bad = parts.filter(pc.is_valid(parts["reject"]))
    pass2 = {name: bad[name] for name in ("source", "row", "key", "detail")}
    pass2["reason"] = bad["reject"]
    tables = [
        pa.table({n: part[n] for n in REJECTS_SCHEMA.names}).cast(REJECTS_SCHEMA)
        for part in (pass1, pass2)
    ]
    table = pa.concat_tables(tables).sort_by([("source", "ascending"), ("row", "ascending")])
    return table.combine_chunks()


def samples_table(parts: pa.Table, shards: list[WrittenShard]) -> pa.Table:
    """One row per written sample, sorted by key; its split and shard are the ones its shard
    writer reported, and every accepted row must be in exactly one shard."""
    placed = {"key": [], "split": [], "shard": []}
    for shard in shards:
        placed["key"] += shard.keys
        placed["split"] += [shard.stats["split"]] * len(shard.keys)
        placed["shard"] += [f"{SHARD_DIR}/{shard.stats['file']}"] * len(shard.keys)
    where = pa.table({name: pa.array(v, pa.string()) for name, v in placed.items()})
    where = where.sort_by("key")
    ok = parts.filter(pc.is_null(parts["reject"])).sort_by("key")
    if where.num_rows != ok.num_rows or not where["key"].equals(ok["key"].cast(pa.string())):
        raise RuntimeError(
            f"shard assignment broken: {ok.num_rows} samples accepted, {where.num_rows} placed "
            "in shards, or not the same keys"
        )
    columns = {"key": where["key"], "split": where["split"], "shard": where["shard"]}
    columns.update({name: ok[name] for name in ("labels", "weight", "phash")})
    return pa.table(columns).cast(SAMPLES_SCHEMA).combine_chunks()


def eval_matches_table(parts: pa.Table) -> pa.Table:
    """Every (key, eval image, distance) that rejected a row as an eval near-copy, in part
    order."""
    found = parts.filter(pc.equal(parts["reject"], "eval_near_copy"))
    matches = {name: [] for name in EVAL_MATCHES_SCHEMA.names}
    for key, text in zip(found["key"].to_pylist(), found["matches"].to_pylist(), strict=True):
        for eval_set, eval_id, distance in json.loads(text) if text else []:
            for name, value in zip(matches, (key, eval_set, eval_id, distance), strict=True):
                matches[name].append(value)
    return pa.table(matches, schema=EVAL_MATCHES_SCHEMA)


def shards_table(stats: list[dict]) -> pa.Table:
    """One row per shard from its stats, `file` relative to the dataset folder."""
    columns = {name: [s[name] for s in stats] for name in SHARDS_SCHEMA.names}
    columns["file"] = [f"{SHARD_DIR}/{f}" for f in columns["file"]]
    return pa.table(columns, schema=SHARDS_SCHEMA)


def split_totals(stats: list[dict], holdout: float) -> dict:
    """dataset.json `splits`: every split this config writes, even one left empty."""
    out = {}
    for split in splits_for(holdout):
        mine = [s for s in stats if s["split"] == split]
        n = sum(s["n"] for s in mine)
        out[split] = {
            "samples": n,
            "shards": len(mine),
            "weight_sum": float(sum(s["weight_sum"] for s in mine)),
            "mean_shard_size": n / len(mine) if mine else 0.0,
        }
    if holdout > 0:
        out[VAL]["holdout"] = holdout
    return out


def dataset_json(
    inputs: IngestInputs, stats: list[dict], totals: dict, by_reason: Counter, by_set: Counter,
    lexicon, config: IngestConfig, eval_index,
) -> dict:  # fmt: skip
    """dataset.json: the format header, vocabulary, weighting, splits, totals, reject and
    eval-dedup counts, and the manifests read."""
    vocabulary, counts = inputs.plan.vocabulary, inputs.plan.counts
    radius = config.radius if config.radius is not None else getattr(eval_index, "radius", None)
    return {
        **dataset_header(),
        "hash_version": HASH_VERSION,
        "vocabulary": {
            "name": config.vocab,
            "wnids": list(vocabulary),
            "names": [lexicon.name(w) for w in vocabulary],
            "counts": [counts.get(w, 0) for w in vocabulary],
        },
        "weighting": config.weighting.as_dict(),
        "splits": split_totals(stats, config.holdout),
        "totals": totals,
        "rejects_by_reason": dict(sorted(by_reason.items())),
        "eval_dedup": {
            "index": config.eval_index,
            "radius": radius if eval_index else None,
            "removed": int(by_reason.get("eval_near_copy", 0)),
            "matches_by_set": dict(sorted(by_set.items())),
        },
        "manifests": inputs.files,
    }


def _write_report(out: Path, samples: pa.Table, vocabulary) -> None:
    try:
        from .report import write_report

        write_report(out, samples["labels"].to_pylist(), samples["weight"].to_pylist(), vocabulary)
    except Exception as exc:  # a plot must never fail a finished job
        print(f"weakly ingest: warning: report.png not written ({exc})")


def write_index(out: Path, inputs: IngestInputs, lexicon, config: IngestConfig, eval_index):
    """Index parquets, report.png and, last, dataset.json; returns the run's IngestSummary
    (without timing)."""
    parts = _read_parts(inputs.part_paths)
    rejects = rejects_table(inputs.rows, inputs.plan, parts)
    samples = samples_table(parts, inputs.shards)
    matches = eval_matches_table(parts)
    stats = sorted((s.stats for s in inputs.shards), key=lambda s: s["file"])
    pq.write_table(samples, out / SAMPLES_INDEX)
    pq.write_table(rejects, out / REJECTS_INDEX)
    pq.write_table(matches, out / EVAL_MATCHES_INDEX)
    pq.write_table(shards_table(stats), out / SHARDS_INDEX)

    input_rows, written, rejected = inputs.rows.num_rows, samples.num_rows, rejects.num_rows
    if written + rejected != input_rows:  # the invariant every run must keep
        raise RuntimeError(
            f"row accounting broken: {input_rows} in, {written} written, {rejected} rejected"
        )
    by_reason = Counter(rejects["reason"].to_pylist())
    by_set = Counter(matches["eval_set"].to_pylist())
    totals = {"input_rows": input_rows, "written": written, "rejected": rejected}
    dataset = dataset_json(inputs, stats, totals, by_reason, by_set, lexicon, config, eval_index)
    _write_report(out, samples, inputs.plan.vocabulary)
    tmp = out / (DATASET_JSON + ".tmp")
    tmp.write_text(json.dumps(dataset, indent=1, sort_keys=True))
    os.replace(tmp, out / DATASET_JSON)
    return IngestSummary(
        out=str(out),
        input_rows=input_rows,
        written=written,
        rejected=rejected,
        rejects_by_reason=dict(by_reason),
        eval_matches_by_set=dict(by_set),
        shards=len(stats),
        bytes=int(sum(s["bytes"] for s in stats)),
        seconds=0.0,
        images_per_second=0.0,
    )
