"""The end of an ingest, on the driver: `dataset.json`, written last (its presence is what says
the dataset is complete), from the plan and the totals the tasks returned.

The index tables themselves are folders of parts written by the tasks (format version 2,
docs/FORMAT.md): pass-1 rejects by the label tasks, pass-2 rejects and eval matches by the chunk
tasks, samples and shards by the shard tasks. Here only counts meet, and every run checks
rows in = written + rejected.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field

from weakly_base.index_tables import EVAL_MATCHES, REJECTS, SAMPLES, SCHEMAS, SHARDS
from weakly_base.shard_format import DATASET_JSON, VAL, dataset_header
from weakly_base.storage import Store

from . import work_layout as lay
from .ingest_config import IngestConfig
from .parquet_io import put_parquet
from .phash import HASH_VERSION
from .plan import Plan
from .split import splits_for
from .summary import IngestSummary


@dataclass
class Pass2Totals:
    """What the chunk tasks and the shard tasks reported, summed."""

    rows: int = 0
    rejects_by_reason: Counter = field(default_factory=Counter)
    matches_by_set: Counter = field(default_factory=Counter)
    written_by_bucket: Counter = field(default_factory=Counter)
    splits: dict = field(default_factory=dict)  # split -> samples, shards, weight_sum, bytes

    def add_chunk(self, done: dict) -> None:
        self.rows += done["rows"]
        self.rejects_by_reason.update(done["rejects"])
        self.matches_by_set.update(done["matches"])
        self.written_by_bucket.update({int(b): n for b, n in done["written"].items()})

    def add_bucket(self, totals: dict) -> None:
        for split, t in totals.items():
            mine = self.splits.setdefault(split, dict.fromkeys(t, 0))
            for name, value in t.items():
                mine[name] += value


def split_totals(splits: dict, holdout: float) -> dict:
    """dataset.json `splits`: every split this config writes, even one left empty."""
    out = {}
    for split in splits_for(holdout):
        t = splits.get(split, {})
        n, shards = int(t.get("samples", 0)), int(t.get("shards", 0))
        out[split] = {
            "samples": n,
            "shards": shards,
            "weight_sum": float(t.get("weight_sum", 0.0)),
            "mean_shard_size": n / shards if shards else 0.0,
        }
    if holdout > 0:
        out[VAL]["holdout"] = holdout
    return out


def check_accounting(plan: Plan, totals: Pass2Totals) -> tuple[int, int]:
    """(written, rejected), after checking that every row is accounted for exactly once."""
    written = sum(t["samples"] for t in totals.splits.values())
    if totals.rows != plan.to_fetch or written != sum(totals.written_by_bucket.values()):
        raise RuntimeError(
            f"row accounting broken: {plan.to_fetch} rows to fetch, {totals.rows} processed, "
            f"{sum(totals.written_by_bucket.values())} accepted, {written} in shards"
        )
    rejected = plan.input_rows - plan.to_fetch + sum(totals.rejects_by_reason.values())
    if written + rejected != plan.input_rows:  # the invariant every run must keep
        raise RuntimeError(
            f"row accounting broken: {plan.input_rows} in, {written} written, {rejected} rejected"
        )
    return written, rejected


def _fill_empty_tables(store: Store, plan: Plan, totals: Pass2Totals, written: int) -> None:
    """One empty part with the schema for each table that no task wrote a part of (known from
    the counts, without listing folders that may hold millions of parts)."""
    empty = {
        SAMPLES: written == 0,
        SHARDS: not plan.buckets,
        REJECTS: not plan.files,
        EVAL_MATCHES: sum(totals.matches_by_set.values()) == 0,
    }
    for table, is_empty in empty.items():
        if is_empty:
            put_parquet(store, lay.empty_part(table), SCHEMAS[table].empty_table())


def write_dataset_json(
    store: Store, plan: Plan, totals: Pass2Totals, config: IngestConfig, eval_index
) -> IngestSummary:
    """dataset.json, last; returns the run's IngestSummary (without timing)."""
    written, rejected = check_accounting(plan, totals)
    by_reason = Counter(plan.rejects_by_reason) + totals.rejects_by_reason
    radius = config.radius if config.radius is not None else getattr(eval_index, "radius", None)
    splits = split_totals(totals.splits, config.holdout)
    dataset = {
        **dataset_header(),
        "hash_version": HASH_VERSION,
        "vocabulary": {
            "name": config.vocab,
            "wnids": plan.vocabulary,
            "names": plan.names,
            "counts": plan.counts,
        },
        "weighting": config.weighting.as_dict(),
        "law": plan.law,
        "label_noise": plan.noise,
        "splits": splits,
        "totals": {"input_rows": plan.input_rows, "written": written, "rejected": rejected},
        "rejects_by_reason": dict(sorted(by_reason.items())),
        "eval_dedup": {
            "index": config.eval_index,
            "radius": radius if eval_index else None,
            "removed": int(by_reason.get("eval_near_copy", 0)),
            "matches_by_set": dict(sorted(totals.matches_by_set.items())),
        },
        "manifests": plan.files,
    }
    _fill_empty_tables(store, plan, totals, written)
    store.put(DATASET_JSON, json.dumps(dataset, indent=1, sort_keys=True).encode())
    return IngestSummary(
        out=store.url,
        input_rows=plan.input_rows,
        written=written,
        rejected=rejected,
        rejects_by_reason=dict(by_reason),
        eval_matches_by_set=dict(totals.matches_by_set),
        shards=sum(t["shards"] for t in totals.splits.values()),
        bytes=int(sum(t["bytes"] for t in totals.splits.values())),
        seconds=0.0,
        images_per_second=0.0,
        noise=plan.noise,
    )
