"""The index of both format versions reads as the same tables: through `read_index` (which every
reader here uses), and a version-2 folder through plain pyarrow.dataset, pandas and duckdb."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import duckdb
import fsspec
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest

from weakly.fixtures import build_fixture, write_index_table
from weakly_base import index_tables as tables
from weakly_base import shard_format as fmt
from weakly_base.index_tables import (
    EVAL_MATCHES,
    REJECTS,
    SAMPLES,
    SHARDS,
    index_parts,
    read_index,
    read_shard_samples,
)
from weakly_base.storage import Store

SORT_KEYS = {SAMPLES: "key", SHARDS: "file", REJECTS: "row", EVAL_MATCHES: "key"}


@pytest.fixture(scope="module")
def pair(tmp_path_factory) -> tuple[Path, Path]:
    """One fixture written as version 1 and as version 2 (same arguments, same rows)."""
    base = tmp_path_factory.mktemp("index")
    kw = {"samples": 60, "classes": 6, "max_shard": 7, "seed": 5, "min_side": 24, "max_side": 32}
    return build_fixture(base / "v1", format_version=1, **kw), build_fixture(base / "v2", **kw)


@pytest.fixture
def v2(pair, tmp_path) -> Path:
    """A private copy of the version-2 fixture, for tests that change it."""
    return shutil.copytree(pair[1], tmp_path / "v2")


def _sorted(table: pa.Table, name: str) -> pa.Table:
    return table.sort_by(SORT_KEYS[name])


def test_version_2_layout_is_one_part_per_shard_and_per_bucket(pair):
    _, v2 = pair
    shards = read_index(v2, SHARDS).to_pylist()
    assert len(shards) >= 4 and len({s["bucket"] for s in shards}) >= 2
    assert sorted(p.name for p in (v2 / "index" / "samples").iterdir()) == sorted(
        Path(s["file"]).name.replace(".tar", ".parquet") for s in shards
    )
    assert sorted(p.name for p in (v2 / "index" / "shards").iterdir()) == [
        f"b{b:02d}.parquet" for b in sorted({s["bucket"] for s in shards})
    ]
    for shard in shards:
        part = pq.read_table(v2 / tables.samples_part(shard["file"]))
        assert part.schema.equals(fmt.SAMPLES_SCHEMA)
        assert set(part["shard"].to_pylist()) == {shard["file"]} and part.num_rows == shard["n"]
        assert part["key"].to_pylist() == sorted(part["key"].to_pylist())
    assert not list((v2 / "index").glob("*.parquet"))  # no version-1 files
    assert json.loads((v2 / fmt.DATASET_JSON).read_text())["format_version"] == 2


@pytest.mark.parametrize("name", tables.TABLES)
def test_both_versions_read_as_the_same_table(pair, name):
    v1, v2 = pair
    one, two = read_index(v1, name), read_index(v2, name)
    assert one.schema.equals(tables.SCHEMAS[name]) and two.schema.equals(tables.SCHEMAS[name])
    assert _sorted(one, name).equals(_sorted(two, name))
    assert (one.num_rows > 0) == (name in (SAMPLES, SHARDS))  # the fixture rejects nothing


def test_version_2_rows_are_the_parts_in_part_name_order(pair):
    _, v2 = pair
    parts = index_parts(Store.at(v2), SAMPLES)
    assert parts == sorted(parts) and len(parts) >= 4
    keys = [k for p in parts for k in pq.read_table(v2 / p)["key"].to_pylist()]
    assert read_index(v2, SAMPLES)["key"].to_pylist() == keys
    assert keys != sorted(keys)  # not globally sorted: the fixture spreads keys over buckets


def test_columns_are_selected_in_the_order_asked(pair):
    for root in pair:
        table = read_index(root, SAMPLES, columns=["weight", "key"])
        assert table.schema.names == ["weight", "key"]
        assert table.schema.field("weight").type == pa.float64()
    with pytest.raises(ValueError, match="no column 'nope'; its columns are key, split"):
        read_index(pair[1], SAMPLES, columns=["key", "nope"])
    with pytest.raises(ValueError, match="no index table 'sample'"):
        read_index(pair[1], "sample")


def test_parts_are_cast_to_the_schema(v2):
    """A writer's part with wider ints, other column order, an all-null column or an extra
    column reads with the table's schema."""
    folder = v2 / "index" / "shards"
    first = sorted(folder.iterdir())[0]
    want = read_index(v2, SHARDS)
    loose = pq.read_table(first)
    loose = pa.table(
        {
            "sha256": pa.nulls(loose.num_rows),
            "extra": pa.array(["x"] * loose.num_rows),
            **{c: loose[c] for c in reversed(loose.schema.names) if c != "sha256"},
            "bucket": loose["bucket"].cast(pa.int64()),
        }
    )
    pq.write_table(loose, first)
    got = read_index(v2, SHARDS)
    assert got.schema.equals(fmt.SHARDS_SCHEMA)
    assert got.drop_columns(["sha256"]).equals(want.drop_columns(["sha256"]))
    assert got["sha256"].null_count == loose.num_rows


def test_a_bad_part_is_one_line_naming_it(v2):
    first = sorted((v2 / "index" / "shards").iterdir())[0]
    good = pq.read_table(first)
    bad = {
        "columns do not cast": good.set_column(2, "bucket", pa.array(["zero"] * good.num_rows)),
        "no column 'n', 'sha256'": good.drop_columns(["n", "sha256"]),
    }
    for reason, table in bad.items():
        pq.write_table(table, first)
        with pytest.raises(ValueError, match=rf"/{first.name}: {reason}") as caught:
            read_index(v2, SHARDS)
        assert "\n" not in str(caught.value)
    first.write_bytes(b"PAR1 not parquet")
    with pytest.raises(ValueError, match=rf"/{first.name}: not a readable parquet file"):
        read_index(v2, SHARDS)


def test_empty_and_missing_tables(v2, tmp_path):
    # Version 2 with no rejects: no parts, no folder (as on an object store): empty, typed.
    assert not (v2 / "index" / "rejects").exists()
    assert read_index(v2, REJECTS).equals(fmt.REJECTS_SCHEMA.empty_table())
    # An empty folder is an empty table even without dataset.json (ingest still running).
    (v2 / fmt.DATASET_JSON).unlink()
    (v2 / "index" / "rejects").mkdir()
    assert read_index(v2, REJECTS).equals(fmt.REJECTS_SCHEMA.empty_table())
    # Neither parts, nor a folder, nor a version-1 file, nor a version 2 declared: not an index.
    with pytest.raises(
        FileNotFoundError, match=rf"^{re.escape(str(v2))}: no index table 'eval_matches'"
    ):
        read_index(v2, EVAL_MATCHES)
    (tmp_path / "plain").mkdir()
    with pytest.raises(FileNotFoundError, match="not a weakly dataset, or ingest has not"):
        read_index(tmp_path / "plain", SAMPLES)


def test_only_parquet_parts_are_read(v2):
    folder = v2 / "index" / "samples"
    real = index_parts(Store.at(v2), SAMPLES)
    want = read_index(v2, SAMPLES)
    junk = pq.read_table(folder / Path(real[0]).name).slice(0, 1)
    for name in ("x.parquet.tmp", "_SUCCESS", ".hidden.parquet", "_meta.parquet"):
        pq.write_table(junk, folder / name)
    (folder / "notes.txt").write_text("not a part")
    assert index_parts(Store.at(v2), SAMPLES) == real
    assert read_index(v2, SAMPLES).equals(want)


def test_parts_win_over_a_version_1_file(v2):
    pq.write_table(fmt.SAMPLES_SCHEMA.empty_table(), v2 / fmt.SAMPLES_INDEX)
    assert read_index(v2, SAMPLES).num_rows == 60


def test_one_shards_samples_alone(pair):
    v1, v2 = pair
    whole = read_index(v1, SAMPLES).to_pylist()
    for file in read_index(v1, SHARDS)["file"].to_pylist():
        want = sorted((r for r in whole if r["shard"] == file), key=lambda r: r["key"])
        assert want and read_shard_samples(v1, file).to_pylist() == want
        assert read_shard_samples(v2, file).to_pylist() == want
        bare = read_shard_samples(v2, Path(file).name, columns=["weight", "key"])
        assert bare.to_pylist() == [{"weight": r["weight"], "key": r["key"]} for r in want]
    with pytest.raises(FileNotFoundError, match="no samples index for shards/train-99-000000"):
        read_shard_samples(v2, "shards/train-99-000000.tar")


def test_reads_from_an_fsspec_url(pair):
    """A dataset at a URL (here fsspec's in-memory filesystem) reads like a local one."""
    fs = fsspec.filesystem("memory")
    for version, root in zip((1, 2), pair, strict=True):
        url = f"memory://weakly-index-test/v{version}"
        fs.put(str(root), url, recursive=True)
        try:
            for name in tables.TABLES:
                assert read_index(url, name).equals(read_index(root, name))
            shard = read_index(url, SHARDS)["file"][0].as_py()
            assert read_shard_samples(Store.at(url), shard).equals(read_shard_samples(root, shard))
        finally:
            fs.rm(url, recursive=True)


def test_fixture_tables_can_be_replaced_in_either_layout(pair, tmp_path):
    for root in pair:
        copy = shutil.copytree(root, tmp_path / root.name)
        one = read_index(copy, SHARDS).slice(0, 1)
        write_index_table(copy, SHARDS, one)
        assert read_index(copy, SHARDS).equals(one)
        write_index_table(copy, REJECTS, fmt.REJECTS_SCHEMA.empty_table())
        assert read_index(copy, REJECTS).num_rows == 0


# -- plain readers on a version-2 folder --------------------------------------------------------


def test_pyarrow_dataset_reads_a_folder_as_one_table(pair):
    _, v2 = pair
    want = read_index(v2, SAMPLES)
    got = pads.dataset(v2 / "index" / "samples", format="parquet").to_table()
    assert got.schema.equals(fmt.SAMPLES_SCHEMA)
    assert got.sort_by("key").equals(want.sort_by("key"))


def test_pandas_reads_a_folder_as_one_table(pair):
    _, v2 = pair
    want = read_index(v2, SHARDS).to_pandas().sort_values("file", ignore_index=True)
    got = pd.read_parquet(v2 / "index" / "shards").sort_values("file", ignore_index=True)
    pd.testing.assert_frame_equal(got, want)
    samples = pd.read_parquet(v2 / "index" / "samples", columns=["key", "shard"])
    assert len(samples) == 60 and samples["key"].is_unique


def test_duckdb_reads_a_glob_as_one_table(pair):
    _, v2 = pair
    glob = str(v2 / "index" / "samples" / "*.parquet")
    rows = duckdb.sql(
        f"SELECT shard, count(*) AS n, sum(weight) AS w FROM read_parquet('{glob}') "
        "GROUP BY shard ORDER BY shard"
    ).fetchall()
    shards = read_index(v2, SHARDS).sort_by("file").to_pylist()
    assert [(s, n) for s, n, _ in rows] == [(s["file"], s["n"]) for s in shards]
    assert [w for _, _, w in rows] == pytest.approx([s["weight_sum"] for s in shards])
    keys = duckdb.sql(f"SELECT key FROM read_parquet('{glob}') ORDER BY key").fetchall()
    assert [k for (k,) in keys] == sorted(read_index(v2, SAMPLES)["key"].to_pylist())
