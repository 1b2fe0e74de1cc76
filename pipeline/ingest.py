"""`weakly ingest`: image–tag manifests to deduplicated, weighted WebDataset shards on Ray.

Flow (one direction):
  pass 1, one Ray task per manifest file, metadata only: read rows, canonicalise tags;
  driver: duplicate keys, vocabulary, label noise, counts f(s), weights and weight buckets;
  pass 2, one Ray task per chunk of rows: fetch, decode once, validate, hash, drop eval
    near-copies, resize, encode; each chunk commits one parquet part (atomic rename);
  shards, one Ray task per weight bucket: read its rows part by part, cut shards as they come
    (each sorted by key inside), write each tar atomically with its stats file last;
  driver: index parquet files, report, and `dataset.json` last.

Why chunks of rows as Ray tasks rather than one Ray Data pipeline: each chunk's output is a
committed file, so a killed job resumes exactly where it stopped (done chunks and committed
shards are skipped), a dead worker's task is retried by Ray, and the output does not depend on
scheduling, so two runs give identical bytes.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .arrow_lists import lists_from_parents
from .fetch import FetchConfig, FetchError, fetch_iter
from .images import ImageConfig, ImageReject, prepare_image
from .manifest import ROWS_SCHEMA, Columns, list_manifest_files
from .pass1 import LabelPlan, canonicalise_rows, pass1_file, plan_labels
from .phash import HASH_VERSION, to_hex
from .shards import ShardSample, WriteFailed, atomic_write, is_committed, stats_path, write_shard
from .split import VAL, check_holdout, shard_name, split_of, splits_for
from .weights import WeightConfig

FORMAT_VERSION = 1


@dataclass(frozen=True)
class IngestConfig:
    """Everything that decides the output; saved as `config.json` in the output folder."""

    vocab: str = "in1k"
    weighting: WeightConfig = field(default_factory=WeightConfig)
    image: ImageConfig = field(default_factory=ImageConfig)
    fetch: FetchConfig = field(default_factory=FetchConfig)
    columns: Columns = field(default_factory=Columns)
    shard_size: int = 1000
    chunk_rows: int = 256
    label_noise: float = 0.0
    holdout: float = 0.0  # fraction of keys written to `val` shards (pipeline/split.py)
    seed: int = 0
    eval_index: str | None = None
    radius: int | None = None  # None: the index's own radius
    lexicon_dir: str | None = None

    def __post_init__(self) -> None:
        if not 1 <= self.shard_size <= 10_000:
            raise ValueError(f"--shard-size {self.shard_size}: use 1..10000")
        if not 0.0 <= self.label_noise < 1.0:
            raise ValueError(f"--label-noise {self.label_noise}: use 0 <= P < 1")
        if self.chunk_rows < 1:
            raise ValueError("--chunk-rows must be >= 1")
        check_holdout(self.holdout)

    def as_dict(self) -> dict:
        return json.loads(json.dumps(asdict(self)))


@dataclass(frozen=True)
class RunOptions:
    """How to run, not what to produce: never part of the output's identity."""

    address: str | None = None
    num_cpus: int | None = None
    overwrite: bool = False
    progress: bool = True


# -- pass 1 ---------------------------------------------------------------------------------


# -- pass 2 ---------------------------------------------------------------------------------

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


def process_chunk(rows: pa.Table, config: IngestConfig, eval_index, part_path: str) -> dict:
    """Pass 2 for one chunk; writes `part_path` atomically and returns counts."""
    records = rows.to_pylist()
    fetched = fetch_iter([(r["url"], r["fetch_path"], r["image"]) for r in records], config.fetch)
    out: dict[str, list] = {name: [] for name in PART_SCHEMA.names}
    prepared_rows = []
    for record, data in zip(records, fetched, strict=True):
        reject = detail = None
        prepared = None
        if isinstance(data, FetchError):
            reject, detail = data.reason, data.detail
        else:
            try:
                prepared = prepare_image(data, config.image)
            except ImageReject as exc:
                reject, detail = exc.reason, exc.detail
            except Exception as exc:  # a decoder bug must cost one row, not the job
                reject, detail = "decode_error", f"{type(exc).__name__}: {exc}"[:200]
        prepared_rows.append((record, prepared, reject, detail))

    hashes = np.array([p.phash if p else 0 for _, p, _, _ in prepared_rows], dtype=np.uint64)
    matches: dict[int, list] = {}
    if eval_index is not None:
        ok = np.array([p is not None for _, p, _, _ in prepared_rows])
        if ok.any():
            found = eval_index.search(hashes[ok], config.radius)
            rows_ok = np.flatnonzero(ok)
            for q, eval_set, eval_id, distance in found.rows():
                matches.setdefault(int(rows_ok[q]), []).append([eval_set, eval_id, distance])

    for i, (record, prepared, reject, detail) in enumerate(prepared_rows):
        if prepared is not None and i in matches:
            best = min(matches[i], key=lambda m: (m[2], m[0], m[1]))
            reject, detail = "eval_near_copy", f"{best[0]}/{best[1]} at distance {best[2]}"
        meta = sample_json(record, prepared) if reject is None else None
        out["key"].append(record["key"])
        out["source"].append(record["source"])
        out["row"].append(record["row"])
        out["bucket"].append(record["bucket"])
        out["weight"].append(record["weight"])
        out["labels"].append(record["labels"])
        out["meta"].append(meta)
        out["jpeg"].append(prepared.jpeg if reject is None else None)
        out["phash"].append(prepared.phash if prepared is not None else None)
        out["reject"].append(reject)
        out["detail"].append(detail)
        out["matches"].append(json.dumps(matches[i]) if i in matches else None)
    table = pa.table(out, schema=PART_SCHEMA)
    # Accepted images go to one file per weight bucket, so each shard task reads only its own
    # bytes; the chunk's row table (no image bytes) is written last and marks the chunk done.
    accepted = table.filter(pc.is_null(table["reject"]))
    for bucket in sorted(set(accepted["bucket"].to_pylist())):
        rows_b = accepted.filter(pc.equal(accepted["bucket"], bucket))
        _atomic_parquet(rows_b.select(BUCKET_COLUMNS), bucket_part(Path(part_path), bucket))
    _atomic_parquet(table.drop_columns(["jpeg", "meta"]), Path(part_path))
    return {"rows": len(records), "written": int(pc.sum(pc.is_null(table["reject"])).as_py() or 0)}


BUCKET_COLUMNS = ["key", "weight", "meta", "jpeg"]


def bucket_part(part_path: Path, bucket: int) -> Path:
    return part_path.with_name(f"{part_path.stem}-b{bucket:02d}.parquet")


def _chunk(table: pa.Table, offset: int, n: int) -> pa.Table:
    """Rows [offset, offset + n) as a table of their own. A `slice` would share the whole table's
    buffers, and pickling it (Ray's task arguments) ships every row to every chunk task."""
    return table.take(pa.array(np.arange(offset, min(offset + n, table.num_rows)), pa.int64()))


def _atomic_parquet(table: pa.Table, path: Path) -> None:
    atomic_write(path, lambda handle: pq.write_table(table, handle))


# -- shards ---------------------------------------------------------------------------------


def write_bucket(
    bucket: int, part_paths: list[str], shard_dir: str, shard_size: int, holdout: float = 0.0
) -> list[dict]:
    """Write every shard of one weight bucket (skipping committed ones); return their stats.

    Parts are read one at a time in part order and each split's shards cut as its rows arrive,
    so a worker holds at most one part and one pending shard per split, however large the
    bucket (BENCHMARKS.md, load). Each shard is sorted by key inside; `_write_index` assigns
    shards in this same order.
    """
    stats: list[dict] = []
    pending: dict[str, list[tuple]] = {split: [] for split in splits_for(holdout)}
    cut: dict[str, int] = dict.fromkeys(pending, 0)

    def flush(split: str, rows: list[tuple]) -> None:
        path = Path(shard_dir) / shard_name(split, bucket, cut[split])
        cut[split] += 1
        if is_committed(path):
            stats.append(json.loads(stats_path(path).read_text()))
            return
        weights = np.array([w for _, w, _, _ in rows], dtype=np.float64)
        samples = [ShardSample(k, j, json.loads(m)) for k, _, m, j in rows]
        extra = {
            "split": split,
            "bucket": bucket,
            "weight_sum": float(weights.sum()),
            "weight_max": float(weights.max()),
        }
        stats.append(write_shard(path, samples, extra))

    for part in part_paths:
        file = bucket_part(Path(part), bucket)
        if not file.exists():
            continue
        t = pq.read_table(file, columns=BUCKET_COLUMNS)
        for row in zip(*(t[c].to_pylist() for c in BUCKET_COLUMNS), strict=True):
            pending[split_of(row[0], holdout)].append(row)
        del t
        for split, rows in pending.items():
            while len(rows) >= shard_size:
                flush(split, rows[:shard_size])
                del rows[:shard_size]
    for split, rows in pending.items():
        if rows:
            flush(split, rows)
    return stats


# -- the job --------------------------------------------------------------------------------


@dataclass
class IngestSummary:
    out: str
    input_rows: int
    written: int
    rejected: int
    rejects_by_reason: dict[str, int]
    eval_matches_by_set: dict[str, int]
    shards: int
    bytes: int
    seconds: float
    images_per_second: float

    def table(self) -> str:
        lines = [
            f"{'rows in':<28}{self.input_rows:>12,}",
            f"{'written':<28}{self.written:>12,}",
            f"{'rejected':<28}{self.rejected:>12,}",
        ]
        for reason, n in sorted(self.rejects_by_reason.items(), key=lambda x: (-x[1], x[0])):
            lines.append(f"{'  ' + reason:<28}{n:>12,}")
        for eval_set, n in sorted(self.eval_matches_by_set.items()):
            lines.append(f"{'eval matches ' + eval_set:<28}{n:>12,}")
        lines += [
            f"{'shards':<28}{self.shards:>12,}",
            f"{'bytes':<28}{self.bytes:>12,}",
            f"{'images/s':<28}{self.images_per_second:>12,.1f}",
            f"output: {self.out}",
        ]
        return "\n".join(lines)


def local_absolute(path: str) -> str:
    """A local path made absolute against the driver's cwd; URLs (`scheme://`) as they are."""
    return path if "://" in path else os.path.abspath(path)


def _init_ray(options: RunOptions):
    import ray

    if not ray.is_initialized():
        kwargs = {"include_dashboard": False, "log_to_driver": True}
        if options.address:
            ray.init(address=options.address, **kwargs)
        else:
            ray.init(num_cpus=options.num_cpus, **kwargs)
    return ray


def _progress(total: int, desc: str, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="task", disable=not enabled, leave=False)


def _wait_all(ray, refs: list, desc: str, enabled: bool) -> list:
    """Results in submission order, with a progress bar as tasks finish."""
    pending, bar = list(refs), _progress(len(refs), desc, enabled)
    while pending:
        done, pending = ray.wait(pending, num_returns=1)
        bar.update(len(done))
    bar.close()
    try:
        return ray.get(refs)
    except ray.exceptions.RayTaskError as exc:
        if isinstance(exc.cause, WriteFailed):  # one clear line, not a remote traceback
            raise WriteFailed(str(exc.cause)) from None
        raise


def _load_lexicon(config: IngestConfig):
    from wordnet_tools import load_lexicon

    # in1k resolves ambiguity towards IN-1k senses; nouns and top:K resolve over all nouns,
    # then top:K keeps the K most frequent synsets of what the data actually names.
    spec = "in1k" if config.vocab == "in1k" else "nouns"
    return load_lexicon(spec, lexicon_dir=config.lexicon_dir)


def _prepare_out(out: Path, config: IngestConfig, options: RunOptions) -> None:
    config_file = out / "config.json"
    wanted = json.dumps(config.as_dict(), sort_keys=True, indent=2)
    if options.overwrite and out.exists():
        shutil.rmtree(out)
    if config_file.exists() and config_file.read_text() != wanted:
        raise ValueError(
            f"{out} holds a job with a different config; use --overwrite to start over"
        )
    if out.exists() and not config_file.exists() and any(out.iterdir()):
        raise ValueError(f"{out} is not empty and is not a weakly output; use a new folder")
    for sub in ("shards", "index", "_work/parts"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    config_file.write_text(wanted)


def ingest(
    manifests: list[str],
    out: str | os.PathLike,
    config: IngestConfig,
    options: RunOptions = RunOptions(),
) -> IngestSummary:
    """Run the whole job; rerunning the same call after a crash finishes what is missing."""
    start = time.perf_counter()
    # Ray workers on other nodes (or under `ray job submit`) do not share the driver's working
    # directory, so every local path a task sees is made absolute here, on the driver.
    out = Path(os.path.abspath(out))
    files = [local_absolute(f) for f in list_manifest_files(manifests)]
    _prepare_out(out, config, options)
    (out / "dataset.json").unlink(missing_ok=True)  # not complete until rewritten at the end
    ray = _init_ray(options)

    eval_index = None
    if config.eval_index:
        from .dedup import EvalIndex

        eval_index = EvalIndex.load(config.eval_index)
    lexicon = _load_lexicon(config)

    # Pass 1: metadata.
    lex_ref = ray.put(lexicon)
    pass1 = ray.remote(max_retries=3)(pass1_file)
    tables = _wait_all(
        ray, [pass1.remote(f, config.columns, lex_ref) for f in files], "pass 1", options.progress
    )
    rows = (
        pa.concat_tables(tables)
        if tables
        else canonicalise_rows(ROWS_SCHEMA.empty_table(), lexicon)
    )
    for reason in rows.filter(pc.equal(rows["row"], -1))["reject"].to_pylist():
        print(f"weakly ingest: warning: {reason}")
    plan = plan_labels(rows, config, lexicon)
    vocabulary, weights, buckets = plan.vocabulary, plan.weights, plan.buckets

    # Pass 2: images, in fixed chunks of the live rows (file order, then row order).
    live_idx = np.flatnonzero(plan.live)
    take = pa.array(live_idx, pa.int64())
    live_wnids = plan.wnids.take(take)
    label_codes = pc.index_in(pc.list_flatten(live_wnids), value_set=pa.array(vocabulary))
    # The sample json is built in the pass-2 tasks from these columns, not here: at web scale
    # a per-row loop in the driver would be the job's one serial step and its largest memory.
    live_paths = rows["path"].take(take).to_pylist()
    # Keys and sample json keep the path as written; only what the fetcher opens is absolute.
    # With --path-root, paths stay as written: the fetcher resolves them inside the root and
    # refuses the ones that leave it (an absolute path is one of those).
    rooted = config.fetch.path_root is not None
    fetch_paths = pa.array(
        [local_absolute(p) if p and not rooted else p for p in live_paths], pa.string()
    )
    work = (
        rows.take(take)
        .select(["source", "row", "key", "url", "path", "image", "tags", "orig_key", "extra"])
        .append_column("bucket", pa.array(buckets[live_idx], pa.int32()))
        .append_column("weight", pa.array(weights[live_idx], pa.float64()))
        .append_column("wnids", live_wnids)
        .append_column("fetch_path", fetch_paths)
        .append_column(
            "labels",
            lists_from_parents(
                pc.list_parent_indices(live_wnids).to_numpy(zero_copy_only=False),
                label_codes.cast(pa.int32()),
                len(live_idx),
            ),
        )
    )
    parts_dir = out / "_work" / "parts"
    part_paths, refs = [], []
    index_ref = ray.put(eval_index)
    chunk_task = ray.remote(max_retries=3)(process_chunk)
    for c, offset in enumerate(range(0, work.num_rows, config.chunk_rows)):
        path = parts_dir / f"part-{c:06d}.parquet"
        part_paths.append(str(path))
        if not path.exists():
            refs.append(
                chunk_task.remote(
                    _chunk(work, offset, config.chunk_rows), config, index_ref, str(path)
                )
            )
    _wait_all(ray, refs, "pass 2", options.progress)

    # Shards: one task per weight bucket.
    shard_dir = out / "shards"
    used = sorted(set(buckets[live_idx].tolist()))
    bucket_task = ray.remote(max_retries=3)(write_bucket)
    bucket_refs = [
        bucket_task.remote(b, part_paths, str(shard_dir), config.shard_size, config.holdout)
        for b in used
    ]
    shard_stats = [
        s for group in _wait_all(ray, bucket_refs, "shards", options.progress) for s in group
    ]

    summary = _write_index(
        out, files, rows, plan, part_paths, shard_stats, lexicon, config, eval_index
    )
    elapsed = time.perf_counter() - start
    summary.seconds = elapsed
    summary.images_per_second = summary.input_rows / elapsed if elapsed > 0 else 0.0
    return summary


def _split_totals(shard_stats: list[dict], holdout: float) -> dict:
    """dataset.json `splits`: every split this config writes, even one left empty."""
    out = {}
    for split in splits_for(holdout):
        mine = [s for s in shard_stats if s["split"] == split]
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


def _write_index(
    out: Path,
    files: list[str],
    rows: pa.Table,
    plan: LabelPlan,
    part_paths: list[str],
    shard_stats: list[dict],
    lexicon,
    config: IngestConfig,
    eval_index,
) -> IngestSummary:
    """Index parquets, report.png and, last, dataset.json; checks rows in = written + rejected."""
    vocabulary, counts = plan.vocabulary, plan.counts
    index = out / "index"
    rejected = np.flatnonzero(~plan.live)
    reasons = plan.rejects.take(pa.array(rejected, pa.int64())).to_pylist()
    heads_tails = [reason.partition(": ") for reason in reasons]
    picked = rows.take(pa.array(rejected, pa.int64()))
    reject_rows = {
        "source": picked["source"].to_pylist(),
        "row": picked["row"].to_pylist(),
        "key": picked["key"].to_pylist(),
        "reason": [head for head, _, _ in heads_tails],
        "detail": [tail for _, _, tail in heads_tails],
    }
    samples = {"key": [], "split": [], "shard": [], "labels": [], "weight": [], "phash": []}
    matches = {"key": [], "eval_set": [], "eval_id": [], "distance": []}
    columns = [
        "key",
        "source",
        "row",
        "bucket",
        "weight",
        "labels",
        "phash",
        "reject",
        "detail",
        "matches",
    ]
    parts = (
        pa.concat_tables([pq.read_table(p, columns=columns) for p in part_paths])
        if part_paths
        else None
    )
    if parts is not None:
        ok = parts.filter(pc.is_null(parts["reject"]))  # part order: how write_bucket cuts
        positions: Counter = Counter()
        for key, bucket, weight, labels, phash in zip(
            ok["key"].to_pylist(), ok["bucket"].to_pylist(), ok["weight"].to_pylist(),
            ok["labels"].to_pylist(), ok["phash"].to_pylist(), strict=True,
        ):  # fmt: skip
            split = split_of(key, config.holdout)
            n = positions[split, bucket] // config.shard_size
            positions[split, bucket] += 1
            samples["key"].append(key)
            samples["split"].append(split)
            samples["shard"].append(f"shards/{shard_name(split, bucket, n)}")
            samples["labels"].append(labels)
            samples["weight"].append(weight)
            samples["phash"].append(phash)
        bad = parts.filter(pc.invert(pc.is_null(parts["reject"])))
        for source, row, key, reason, detail, found in zip(
            bad["source"].to_pylist(), bad["row"].to_pylist(), bad["key"].to_pylist(),
            bad["reject"].to_pylist(), bad["detail"].to_pylist(), bad["matches"].to_pylist(), strict=True,
        ):  # fmt: skip
            for name, value in zip(reject_rows, (source, row, key, reason, detail), strict=True):
                reject_rows[name].append(value)
            if reason == "eval_near_copy" and found:
                for eval_set, eval_id, distance in json.loads(found):
                    matches["key"].append(key)
                    matches["eval_set"].append(eval_set)
                    matches["eval_id"].append(eval_id)
                    matches["distance"].append(distance)

    pq.write_table(
        pa.table(
            samples,
            schema=pa.schema(
                [("key", pa.string()), ("split", pa.string()), ("shard", pa.string()),
                 ("labels", pa.list_(pa.int32())), ("weight", pa.float64()), ("phash", pa.uint64())]
            ),
        ).sort_by("key"),
        index / "samples.parquet",
    )  # fmt: skip
    pq.write_table(
        pa.table(
            reject_rows,
            schema=pa.schema(
                [("source", pa.string()), ("row", pa.int64()), ("key", pa.string()),
                 ("reason", pa.string()), ("detail", pa.string())]
            ),
        ).sort_by([("source", "ascending"), ("row", "ascending")]),
        index / "rejects.parquet",
    )  # fmt: skip
    pq.write_table(
        pa.table(
            matches,
            schema=pa.schema(
                [
                    ("key", pa.string()),
                    ("eval_set", pa.string()),
                    ("eval_id", pa.string()),
                    ("distance", pa.int32()),
                ]
            ),
        ),
        index / "eval_matches.parquet",
    )
    shard_stats = sorted(shard_stats, key=lambda s: s["file"])
    pq.write_table(
        pa.table(
            {
                "file": [f"shards/{s['file']}" for s in shard_stats],
                "split": [s["split"] for s in shard_stats],
                "bucket": pa.array([s["bucket"] for s in shard_stats], pa.int32()),
                "n": pa.array([s["n"] for s in shard_stats], pa.int64()),
                "weight_sum": pa.array([s["weight_sum"] for s in shard_stats], pa.float64()),
                "weight_max": pa.array([s["weight_max"] for s in shard_stats], pa.float64()),
                "bytes": pa.array([s["bytes"] for s in shard_stats], pa.int64()),
                "sha256": [s["sha256"] for s in shard_stats],
            }
        ),
        index / "shards.parquet",
    )
    written = len(samples["key"])
    input_rows = rows.num_rows
    by_reason = Counter(reject_rows["reason"])
    by_set = Counter(matches["eval_set"])
    if written + len(reject_rows["key"]) != input_rows:  # the invariant every run must keep
        raise RuntimeError(
            f"row accounting broken: {input_rows} in, {written} written, {len(reject_rows['key'])} rejected"
        )
    n_shards = len(shard_stats)
    dataset = {
        "format": "weakly-shards",
        "format_version": FORMAT_VERSION,
        "hash_version": HASH_VERSION,
        "vocabulary": {
            "name": config.vocab,
            "wnids": list(vocabulary),
            "names": [lexicon.name(w) for w in vocabulary],
            "counts": [counts.get(w, 0) for w in vocabulary],
        },
        "weighting": config.weighting.as_dict(),
        "splits": _split_totals(shard_stats, config.holdout),
        "totals": {
            "input_rows": input_rows,
            "written": written,
            "rejected": len(reject_rows["key"]),
        },
        "rejects_by_reason": dict(sorted(by_reason.items())),
        "eval_dedup": {
            "index": config.eval_index,
            "radius": (config.radius if config.radius is not None else eval_index.radius)
            if eval_index
            else None,
            "removed": int(by_reason.get("eval_near_copy", 0)),
            "matches_by_set": dict(sorted(by_set.items())),
        },
        "manifests": files,
    }
    try:
        from .report import write_report

        write_report(out, samples["labels"], samples["weight"], vocabulary)
    except Exception as exc:  # a plot must never fail a finished job
        print(f"weakly ingest: warning: report.png not written ({exc})")
    tmp = out / "dataset.json.tmp"
    tmp.write_text(json.dumps(dataset, indent=1, sort_keys=True))
    os.replace(tmp, out / "dataset.json")
    return IngestSummary(
        out=str(out),
        input_rows=input_rows,
        written=written,
        rejected=len(reject_rows["key"]),
        rejects_by_reason=dict(by_reason),
        eval_matches_by_set=dict(by_set),
        shards=n_shards,
        bytes=int(sum(s["bytes"] for s in shard_stats)),
        seconds=0.0,
        images_per_second=0.0,
    )
