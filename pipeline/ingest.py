"""`weakly ingest`: image–tag manifests to deduplicated, weighted WebDataset shards on Ray.

Flow (one direction):
  pass 1, one Ray task per manifest file, metadata only: read rows, canonicalise tags
    (pipeline/pass1.py);
  driver: duplicate keys, vocabulary, label noise, counts f(s), weights and weight buckets;
  pass 2, one Ray task per chunk of rows: fetch, decode once, validate, hash, drop eval
    near-copies, resize, encode; each chunk commits parquet parts (pipeline/pass2.py);
  shards, one Ray task per weight bucket: read its rows part by part, cut shards as they come
    (each sorted by key inside), write each tar atomically with its stats file last, and report
    which keys each shard holds (pipeline/buckets.py);
  driver: index parquet files from those reports, report, and `dataset.json` last
    (pipeline/index_writer.py).

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
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from weakly_base.shard_format import CONFIG_JSON, DATASET_JSON, INDEX_DIR, SHARD_DIR

from .arrow_lists import lists_from_parents
from .buckets import WrittenShard, write_bucket
from .index_writer import IngestInputs, write_index
from .ingest_config import IngestConfig, RunOptions
from .manifest import ROWS_SCHEMA, list_manifest_files
from .pass1 import LabelPlan, canonicalise_rows, pass1_file, plan_labels
from .pass2 import chunk_of, process_chunk
from .ray_tasks import init_ray, wait_all
from .summary import IngestSummary

__all__ = ["IngestConfig", "IngestSummary", "RunOptions", "ingest"]

WORK_COLUMNS = ["source", "row", "key", "url", "path", "image", "tags", "orig_key", "extra"]


def local_absolute(path: str) -> str:
    """A local path made absolute against the driver's cwd; URLs (`scheme://`) as they are."""
    return path if "://" in path else os.path.abspath(path)


def _load_lexicon(config: IngestConfig):
    from wordnet_tools import load_lexicon

    # in1k resolves ambiguity towards IN-1k senses; nouns and top:K resolve over all nouns,
    # then top:K keeps the K most frequent synsets of what the data actually names.
    spec = "in1k" if config.vocab == "in1k" else "nouns"
    return load_lexicon(spec, lexicon_dir=config.lexicon_dir)


def prepare_out(out: Path, config: IngestConfig, options: RunOptions) -> None:
    """Create the output folder, or check that it holds a run of this same config."""
    config_file = out / CONFIG_JSON
    wanted = json.dumps(config.as_dict(), sort_keys=True, indent=2)
    if options.overwrite and out.exists():
        shutil.rmtree(out)
    if config_file.exists() and config_file.read_text() != wanted:
        raise ValueError(
            f"{out} holds a job with a different config; use --overwrite to start over"
        )
    if out.exists() and not config_file.exists() and any(out.iterdir()):
        raise ValueError(f"{out} is not empty and is not a weakly output; use a new folder")
    for sub in (SHARD_DIR, INDEX_DIR, "_work/parts"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    config_file.write_text(wanted)


def _run_pass1(ray, files: list[str], config: IngestConfig, lexicon, progress: bool):
    """Pass 1 on every manifest file, then the label plan: (rows, plan)."""
    lex_ref = ray.put(lexicon)
    pass1 = ray.remote(max_retries=3)(pass1_file)
    refs = [pass1.remote(f, config.columns, lex_ref) for f in files]
    tables = wait_all(ray, refs, "pass 1", progress)
    rows = (
        pa.concat_tables(tables)
        if tables
        else canonicalise_rows(ROWS_SCHEMA.empty_table(), lexicon)
    )
    for reason in rows.filter(pc.equal(rows["row"], -1))["reject"].to_pylist():
        print(f"weakly ingest: warning: {reason}")
    return rows, plan_labels(rows, config, lexicon)


def _work_table(rows: pa.Table, plan: LabelPlan, config: IngestConfig) -> pa.Table:
    """The live rows (file order, then row order) with what pass 2 needs to build each sample
    json in its tasks: at web scale a per-row loop in the driver would be the job's one serial
    step and its largest memory."""
    live_idx = np.flatnonzero(plan.live)
    take = pa.array(live_idx, pa.int64())
    live_wnids = plan.wnids.take(take)
    label_codes = pc.index_in(pc.list_flatten(live_wnids), value_set=pa.array(plan.vocabulary))
    labels = lists_from_parents(
        pc.list_parent_indices(live_wnids).to_numpy(zero_copy_only=False),
        label_codes.cast(pa.int32()),
        len(live_idx),
    )
    # Keys and sample json keep the path as written; only what the fetcher opens is absolute.
    # With --path-root, paths stay as written: the fetcher resolves them inside the root and
    # refuses the ones that leave it (an absolute path is one of those).
    rooted = config.fetch.path_root is not None
    fetch_paths = pa.array(
        [local_absolute(p) if p and not rooted else p for p in rows["path"].take(take).to_pylist()],
        pa.string(),
    )
    return (
        rows.take(take)
        .select(WORK_COLUMNS)
        .append_column("bucket", pa.array(plan.buckets[live_idx], pa.int32()))
        .append_column("weight", pa.array(plan.weights[live_idx], pa.float64()))
        .append_column("wnids", live_wnids)
        .append_column("fetch_path", fetch_paths)
        .append_column("labels", labels)
    )


def _run_pass2(ray, work: pa.Table, out: Path, config: IngestConfig, eval_index, progress: bool):
    """Pass 2 in fixed chunks of the work rows, skipping chunks already done; the part paths
    of every chunk, in order."""
    parts_dir = out / "_work" / "parts"
    part_paths, refs = [], []
    index_ref = ray.put(eval_index)
    chunk_task = ray.remote(max_retries=3)(process_chunk)
    for c, offset in enumerate(range(0, work.num_rows, config.chunk_rows)):
        path = parts_dir / f"part-{c:06d}.parquet"
        part_paths.append(str(path))
        if not path.exists():
            rows = chunk_of(work, offset, config.chunk_rows)
            refs.append(chunk_task.remote(rows, config, index_ref, str(path)))
    wait_all(ray, refs, "pass 2", progress)
    return part_paths


def _run_shards(
    ray, buckets: list[int], part_paths: list[str], out: Path, config: IngestConfig, progress: bool
) -> list[WrittenShard]:
    """One shard task per weight bucket; every shard written, as its writer reported it."""
    bucket_task = ray.remote(max_retries=3)(write_bucket)
    shard_dir = str(out / SHARD_DIR)
    refs = [
        bucket_task.remote(b, part_paths, shard_dir, config.shard_size, config.holdout)
        for b in buckets
    ]
    return [s for group in wait_all(ray, refs, "shards", progress) for s in group]


def ingest(
    manifests: list[str],
    out: str | os.PathLike,
    config: IngestConfig,
    options: RunOptions | None = None,
) -> IngestSummary:
    """Run the whole job; rerunning the same call after a crash finishes what is missing."""
    options = options or RunOptions()
    start = time.perf_counter()
    # Ray workers on other nodes (or under `ray job submit`) do not share the driver's working
    # directory, so every local path a task sees is made absolute here, on the driver.
    out = Path(os.path.abspath(out))
    files = [local_absolute(f) for f in list_manifest_files(manifests)]
    prepare_out(out, config, options)
    (out / DATASET_JSON).unlink(missing_ok=True)  # not complete until rewritten at the end
    ray = init_ray(options.address, options.num_cpus)

    eval_index = None
    if config.eval_index:
        from .dedup import EvalIndex

        eval_index = EvalIndex.load(config.eval_index)
    lexicon = _load_lexicon(config)

    rows, plan = _run_pass1(ray, files, config, lexicon, options.progress)
    work = _work_table(rows, plan, config)
    part_paths = _run_pass2(ray, work, out, config, eval_index, options.progress)
    used = sorted(set(work["bucket"].to_pylist()))
    shards = _run_shards(ray, used, part_paths, out, config, options.progress)

    inputs = IngestInputs(files, rows, plan, part_paths, shards)
    summary = write_index(out, inputs, lexicon, config, eval_index)
    elapsed = time.perf_counter() - start
    summary.seconds = elapsed
    summary.images_per_second = summary.input_rows / elapsed if elapsed > 0 else 0.0
    return summary
