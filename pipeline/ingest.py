"""`weakly ingest`: image–tag manifests to deduplicated, weighted WebDataset shards on Ray.

Flow (one direction), every step a round of Ray tasks that write to the output's storage (a
local folder or any fsspec URL) and return only counts, so the driver holds no rows:
  pass 1, metadata only (pipeline/plan.py, pipeline/plan_tasks.py): canonical labels per
    manifest file, duplicate keys by hash-partitioned reduce tasks, the vocabulary and counts
    f(s) from folded counts, labelled parts per file, and `plan.json` (`--plan-only` stops
    here); manifests of a few MiB run the same rounds in the driver while Ray starts;
  pass 2, one task per chunk of a file's labelled rows: weights and buckets from the counts,
    fetch, decode once, validate, hash, drop eval near-copies, resize, encode; each chunk
    writes its bucket parts and index parts, then a `done` object (pipeline/pass2.py);
  shards, one task per weight bucket: read its parts in order, cut shards as they come (each
    sorted by key inside), write each tar, its samples-index part and its stats object last,
    then the bucket's shards-index part (pipeline/buckets.py);
  driver: `dataset.json` last (pipeline/index_writer.py).

Why rounds of tasks over committed objects rather than one Ray Data pipeline: every output is
an object named by what it holds, so a killed job resumes exactly where it stopped (done chunks
and committed shards are skipped), a dead worker's task is retried by Ray, and the output does
not depend on scheduling, so two runs give identical bytes, on a disk or in a bucket.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import posixpath
import sys
import time
from concurrent.futures import ThreadPoolExecutor

from weakly_base.index_tables import TABLES, v1_index_file
from weakly_base.shard_format import CONFIG_JSON, DATASET_JSON
from weakly_base.storage import Store, normalise_url

from . import work_layout as lay
from .buckets import write_bucket
from .index_writer import Pass2Totals, write_dataset_json
from .ingest_config import IngestConfig, RunOptions
from .manifest import list_manifest_files
from .output_lock import hold_output
from .pass2 import process_chunk
from .phases import PhaseClock, maybe
from .plan import Plan, manifest_bytes, partition_count, plan_in_driver, run_plan
from .ray_tasks import fold_results, init_ray, run_windowed
from .report import warm_report
from .summary import IngestSummary

__all__ = ["IngestConfig", "IngestSummary", "Plan", "RunOptions", "ingest", "plan"]


def _load_lexicon(config: IngestConfig):
    from wordnet_tools import load_lexicon

    # in1k and in21k resolve ambiguity towards their own senses; nouns and top:K resolve over
    # all nouns, then top:K keeps the K most frequent synsets of what the data actually names.
    spec = config.vocab if config.vocab in ("in1k", "in21k") else "nouns"
    return load_lexicon(
        spec, lexicon_dir=config.lexicon_dir, sense_overrides=config.sense_overrides
    )


def prepare_out(store: Store, config: IngestConfig, options: RunOptions) -> None:
    """Check that the output is writable and empty or holds a run of this same config, and
    record the config there. The caller holds the output's writer lock (pipeline/output_lock.py):
    `--overwrite` deletes everything but that lock, so it never deletes what a live run holds."""
    wanted = json.dumps(config.as_dict(), sort_keys=True, indent=2)
    if options.overwrite:
        _clear(store)
    store.check_writable()
    if store.exists(CONFIG_JSON):
        if store.get(CONFIG_JSON).decode() != wanted:
            raise ValueError(
                f"{store.url} holds a job with a different config; use --overwrite to start "
                "over, or another --out"
            )
    elif _entries(store):
        raise ValueError(f"{store.url} is not empty and is not a weakly output; use a new --out")
    store.put(CONFIG_JSON, wanted.encode())


def _entries(store: Store, rel: str = "") -> list[str]:
    """Names of the files and folders under `rel` (relative to the root), the writer lock and
    the folder that holds only it left out."""
    store.refresh()
    try:
        found = store.fs.ls(store.full(rel), detail=False)
    except FileNotFoundError:
        return []
    prefix = f"{rel}/" if rel else ""
    names = [prefix + posixpath.basename(str(p).rstrip("/")) for p in found]
    names = [n for n in names if n != lay.WRITER_LOCK]
    if lay.WORK in names and not _entries(store, lay.WORK):
        names.remove(lay.WORK)
    return names


def _clear(store: Store) -> None:
    """Everything under the output but the writer lock (`--overwrite`)."""
    for name in _entries(store):
        if name == lay.WORK:
            for inner in _entries(store, lay.WORK):
                store.remove_tree(inner)
        else:
            store.remove_tree(name)


def _open_output(manifests, out, options: RunOptions) -> tuple[Store, list[str]]:
    """The output's store and the manifest files, listed before the output is touched."""
    store = Store.at(out, options.storage_options)
    files = list_manifest_files(manifests, options.storage_options)
    return store, [normalise_url(f) for f in files]


def _start(
    store: Store,
    files: list[str],
    config: IngestConfig,
    options: RunOptions,
    clock: PhaseClock | None = None,
    need_ray: bool = True,
):
    """Output checked and claimed (under the writer lock), Ray up (unless `need_ray` is off
    and the plan can be made without it), and the plan (loaded or made).

    Ray takes seconds to start, mostly waiting on its own processes, so the driver's side of
    the start (lexicon load; for small manifests the whole of pass 1 and report.png,
    pipeline/plan.py `plan_in_driver`; else the plotting imports) runs in a thread meanwhile."""
    with maybe(clock, "output check"):
        prepare_out(store, config, options)
        store.remove(DATASET_JSON)  # not complete until rewritten at the end
        for table in TABLES:  # a format-1 run of this config left whole-table files: superseded
            store.remove(v1_index_file(table))
    saved = Plan.load(store)
    if saved is not None and saved.files != files:
        raise ValueError(
            f"{store.url} holds a plan over other manifests ({len(saved.files)} files, this run "
            f"names {len(files)}); use --overwrite to start over, or another --out"
        )
    local = False
    if saved is None:  # the manifests are sized once: one request per file on an object store
        total = manifest_bytes(files, options.storage_options)
        local = plan_in_driver(total)
        if not options.key_partitions:
            options = dataclasses.replace(options, key_partitions=partition_count(total))

    def driver_side():
        if saved is not None:  # pass 2 needs no lexicon
            return saved
        with maybe(clock, "lexicon load"):
            lexicon = _load_lexicon(config)
        if local:
            return run_plan(None, store, files, config, lexicon, options, clock)
        with maybe(clock, "plot imports"):
            warm_report()
        return lexicon

    if not need_ray and (local or saved is not None):
        return None, driver_side()
    with ThreadPoolExecutor(1, thread_name_prefix="weakly-driver") as pool:
        pending = pool.submit(driver_side)
        with maybe(clock, "ray start"):
            ray = init_ray(options.address, options.num_cpus)
        got = pending.result()
    if saved is not None or local:
        return ray, got
    return ray, run_plan(ray, store, files, config, got, options, clock)


def _say(line: str) -> None:
    print(f"weakly ingest: {line}", file=sys.stderr, flush=True)


def _chunks(plan: Plan, store: Store, chunk_rows: int, totals: Pass2Totals, task, shared):
    """(task, args, tag) for every pass-2 chunk not yet done, file by file; the counts of
    chunks already done (a resumed job) go straight to `totals`."""
    for f, live in enumerate(plan.live):
        done = set(store.list(lay.chunk_done_dir(f)))
        for c in range(math.ceil(live / chunk_rows)):
            marker = lay.chunk_done(f, c)
            if marker.rsplit("/", 1)[1] in done:
                totals.add_chunk(json.loads(store.get(marker)))
            else:
                yield task, (store, f, c, *shared), (f, c)


def _run_pass2(ray, store: Store, plan: Plan, config: IngestConfig, eval_index, options):
    totals = Pass2Totals()
    task = ray.remote(max_retries=3)(process_chunk)
    shared = (config, ray.put(plan.counts), plan.solved_law(), ray.put(eval_index))
    window = max(4, 2 * int(ray.cluster_resources().get("CPU", 2)))
    calls = _chunks(plan, store, config.chunk_rows, totals, task, shared)
    run_windowed(ray, calls, window, "pass 2", options.progress, lambda t, r: totals.add_chunk(r))
    return totals


def _run_shards(ray, store: Store, plan: Plan, config: IngestConfig, totals, options) -> None:
    task = ray.remote(max_retries=3)(write_bucket)
    refs = [task.remote(store, b, config.shard_size, config.holdout) for b in plan.buckets]
    fold_results(ray, refs, "shards", options.progress, lambda i, t: totals.add_bucket(t))


def _load_eval_index(config: IngestConfig, options: RunOptions):
    if not config.eval_index:
        return None
    from .dedup import EvalIndex

    return EvalIndex.load(config.eval_index, storage_options=options.storage_options)


def plan(
    manifests: list[str], out: str | os.PathLike, config: IngestConfig, options: RunOptions | None
) -> Plan:
    """Pass 1 only (`--plan-only`): `plan.json` and `index/report.png` in `out`, no image
    fetched; `ingest` with the same config later starts from this plan."""
    options = options or RunOptions()
    store, files = _open_output(manifests, out, options)
    with hold_output(store, options.lease_seconds, _say) as lock:
        _, result = _start(store, files, config, options, need_ray=False)
        lock.check()
    return result


def ingest(
    manifests: list[str],
    out: str | os.PathLike,
    config: IngestConfig,
    options: RunOptions | None = None,
) -> IngestSummary:
    """Run the whole job; rerunning the same call after a crash finishes what is missing.
    The output's writer lock is held from the first look at the output to the last write."""
    options = options or RunOptions()
    start = time.perf_counter()
    clock = PhaseClock()
    with clock.phase("eval index load"):
        eval_index = _load_eval_index(config, options)
    with clock.phase("manifest listing"):
        store, files = _open_output(manifests, out, options)
    with hold_output(store, options.lease_seconds, _say) as lock:
        ray, job_plan = _start(store, files, config, options, clock)
        with clock.phase("pass 2"):
            totals = _run_pass2(ray, store, job_plan, config, eval_index, options)
        lock.check()
        with clock.phase("shards"):
            _run_shards(ray, store, job_plan, config, totals, options)
        lock.check()  # dataset.json says "complete": never from a run that lost the output
        with clock.phase("index"):
            summary = write_dataset_json(store, job_plan, totals, config, eval_index)
    elapsed = time.perf_counter() - start
    summary.seconds = elapsed
    summary.images_per_second = summary.input_rows / elapsed if elapsed > 0 else 0.0
    summary.phases = clock.as_dict()
    return summary
