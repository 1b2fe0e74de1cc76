"""Where each ingest step puts its output under the dataset root (pure functions of indexes).

Every object is named by the manifest file (`f`), chunk (`c`), key partition (`k`) or weight
bucket (`b`) it belongs to, never by the task that wrote it, so a rerun writes the same names
and a resumed job can see what is done by listing. `_work/` is scratch for the job; `index/`
parts and `shards/` are the dataset (docs/FORMAT.md, format version 2).
"""

from __future__ import annotations

from weakly_base.index_tables import EVAL_MATCHES, REJECTS, samples_part, shards_part
from weakly_base.index_tables import index_dir as index_folder
from weakly_base.shard_format import INDEX_DIR

__all__ = ["samples_part", "shards_part"]  # the index's own part names, re-exported

WORK = "_work"
PLAN_JSON = "plan.json"  # the label plan, also written by --plan-only (user-facing)
REPORT_PNG = f"{INDEX_DIR}/report.png"
WRITER_LOCK = f"{WORK}/writer-lock.json"  # held by the running job, removed at its end


def canonical_part(f: int) -> str:
    """Pass 1's canonical rows of manifest file `f` (all rows, with labels and reject reasons)."""
    return f"{WORK}/canonical/f{f:06d}.parquet"


def key_partition_dir(k: int) -> str:
    return f"{WORK}/keys/k{k:04d}"


def key_part(k: int, f: int) -> str:
    """Keys of file `f` whose hash falls in partition `k`."""
    return f"{key_partition_dir(k)}/f{f:06d}.parquet"


def file_of_part(name: str) -> int:
    """`f000012.parquet` or `f000012-...` -> 12."""
    return int(name[1:7])


def duplicates_dir(f: int) -> str:
    return f"{WORK}/duplicates/f{f:06d}"


def duplicates_part(f: int, k: int) -> str:
    """Rows of file `f` found duplicate by key partition `k`'s reduce task."""
    return f"{duplicates_dir(f)}/k{k:04d}.parquet"


def duplicates_done(k: int) -> str:
    return f"{WORK}/duplicates/done-k{k:04d}.json"


# Chunks per labelled part: a parquet footer grows with its row groups, and every pass-2 task
# reads one, so a million-row file is cut into parts of 64 chunks (a few kB of footer each).
CHUNKS_PER_PART = 64


def labelled_part(f: int, j: int) -> str:
    """Part j of file `f`'s live rows, labels cut to the vocabulary: its row group g is pass-2
    chunk j * CHUNKS_PER_PART + g."""
    return f"{WORK}/labelled/f{f:06d}-p{j:05d}.parquet"


def chunk_location(f: int, c: int) -> tuple[str, int]:
    """(labelled part, row group) of pass-2 chunk c of file f."""
    return labelled_part(f, c // CHUNKS_PER_PART), c % CHUNKS_PER_PART


def labelled_parts(f: int, live: int, chunk_rows: int) -> list[str]:
    """Every labelled part of file `f`, which has `live` rows."""
    chunks = -(-live // chunk_rows)
    return [labelled_part(f, j) for j in range(-(-chunks // CHUNKS_PER_PART))]


def pass1_rejects_part(f: int) -> str:
    return f"{index_folder(REJECTS)}/pass1-f{f:06d}.parquet"


def chunk_name(f: int, c: int) -> str:
    return f"f{f:06d}-c{c:06d}"


def chunk_done(f: int, c: int) -> str:
    """Pass 2's commit marker for one chunk, written after its other outputs: its counts."""
    return f"{WORK}/done/f{f:06d}/c{c:06d}.json"


def chunk_done_dir(f: int) -> str:
    return f"{WORK}/done/f{f:06d}"


def pass2_rejects_part(f: int, c: int) -> str:
    return f"{index_folder(REJECTS)}/pass2-{chunk_name(f, c)}.parquet"


def eval_matches_part(f: int, c: int) -> str:
    return f"{index_folder(EVAL_MATCHES)}/{chunk_name(f, c)}.parquet"


def bucket_dir(b: int) -> str:
    return f"{WORK}/buckets/b{b:02d}"


def bucket_part(b: int, f: int, c: int) -> str:
    """Chunk (f, c)'s accepted samples of weight bucket `b`: what the shard writer reads."""
    return f"{bucket_dir(b)}/{chunk_name(f, c)}.parquet"


def empty_part(table: str) -> str:
    """The part written when a table has no rows at all, so plain pyarrow, pandas and duckdb
    still find a folder with the table's schema."""
    return f"{index_folder(table)}/none.parquet"
