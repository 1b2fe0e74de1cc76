"""The shard format is defined once (weakly_base/shard_format.py): both sides and the fixtures
use its objects, no other module spells its constants, and its writer and reader agree with
each other and with plain `tarfile` and `webdataset`."""

from __future__ import annotations

import ast
import io
import json
import tarfile
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import webdataset as wds

import pipeline.index_writer
import pipeline.keys
import pipeline.shards
import pipeline.split
import train.shards
import weakly.fixtures
from weakly_base import index_tables as tables
from weakly_base import shard_format as fmt
from weakly_base.storage import Store

ROOT = Path(__file__).resolve().parents[1]


def test_both_sides_and_the_fixtures_import_the_same_definitions():
    assert pipeline.keys.KEY_RE is fmt.KEY_RE
    assert pipeline.shards.shard_tar is fmt.shard_tar
    assert pipeline.shards.shard_stats is fmt.shard_stats
    assert (pipeline.split.TRAIN, pipeline.split.VAL) == (fmt.TRAIN, fmt.VAL)
    assert pipeline.index_writer.dataset_header is fmt.dataset_header
    assert train.shards.MEMBER_RE is fmt.MEMBER_RE
    assert train.shards.iter_tar_records is fmt.iter_tar_records
    assert train.shards.check_format is fmt.check_format
    assert weakly.fixtures.fmt is fmt


# Literals that belong to the format: spelling one anywhere else is a second definition.
FORMAT_LITERALS = (fmt.FORMAT_NAME, fmt.KEY_CHARS, fmt.STATS_SUFFIX, "{bucket:02d}")


def _format_literals_outside(path: Path) -> list[str]:
    """Format literals in code (docstrings, which may name the format in prose, excluded)."""
    tree = ast.parse(path.read_text(), str(path))
    prose = {id(n.value) for n in ast.walk(tree) if isinstance(n, ast.Expr)}
    found = []
    for node in ast.walk(tree):
        if id(node) in prose:
            continue
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            found += [lit for lit in FORMAT_LITERALS if lit in node.value]
        if isinstance(node, ast.Assign):
            found += [t.id for t in node.targets if getattr(t, "id", "") == "FORMAT_VERSION"]
    return found


@pytest.mark.parametrize("package", ["pipeline", "train", "weakly", "wordnet_tools"])
def test_no_other_module_spells_the_format(package):
    spelled = {
        str(p.relative_to(ROOT)): _format_literals_outside(p)
        for p in sorted((ROOT / package).rglob("*.py"))
    }
    assert {f: lits for f, lits in spelled.items() if lits} == {}


def test_the_literal_scan_finds_a_copy(tmp_path):
    copy = tmp_path / "copy.py"
    copy.write_text('FORMAT_VERSION = 1\nNAME = "weakly-shards"\nPAT = r"[A-Za-z0-9_-]+"\n')
    assert sorted(_format_literals_outside(copy)) == sorted(
        ["FORMAT_VERSION", "weakly-shards", "A-Za-z0-9_-"]
    )


def _records(n: int = 5) -> list[fmt.ShardRecord]:
    return [
        fmt.ShardRecord(f"k{i:03d}", bytes([i]) * (10 + i), {"key": f"k{i:03d}", "labels": [i]})
        for i in reversed(range(n))
    ]


def test_writer_and_reader_agree_and_the_bytes_are_reproducible():
    data, keys = fmt.shard_bytes(_records())
    assert keys == sorted(keys) == [f"k{i:03d}" for i in range(5)]
    assert fmt.shard_bytes(list(reversed(_records())))[0] == data  # input order does not matter
    got = list(fmt.iter_tar_records(io.BytesIO(data)))
    assert [(k, jpg, meta["labels"]) for k, jpg, meta in got] == [
        (f"k{i:03d}", bytes([i]) * (10 + i), [i]) for i in range(5)
    ]
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        members = tar.getmembers()
    assert [m.name for m in members[:2]] == list(fmt.member_names("k000"))
    assert {(m.mtime, m.uid, m.gid, m.mode, m.uname) for m in members} == {(0, 0, 0, 0o644, "")}


def test_plain_webdataset_reads_a_shard(tmp_path):
    data, _ = fmt.shard_bytes(_records(3))
    (tmp_path / "s.tar").write_bytes(data)
    samples = list(wds.WebDataset(str(tmp_path / "s.tar"), shardshuffle=False))
    assert [s["__key__"] for s in samples] == ["k000", "k001", "k002"]
    assert json.loads(samples[2]["json"])["labels"] == [2]


@pytest.mark.parametrize("key", ["a.b", "a/b", "", "x" * (fmt.KEY_MAX_LEN + 1), "a\n"])
def test_the_writer_refuses_keys_outside_the_rule(key):
    with pytest.raises(ValueError, match="does not match"):
        fmt.shard_bytes([fmt.ShardRecord(key, b"x", {})])


def test_weight_buckets_halve():
    assert [fmt.weight_bucket(w, 1.0) for w in (1.0, 0.6, 0.5, 0.49, 0.25, 0.2)] == [
        0, 0, 1, 1, 2, 2,
    ]  # fmt: skip
    assert fmt.weight_bucket(1e-300, 1.0) == fmt.MAX_BUCKETS - 1
    with pytest.raises(ValueError):
        fmt.weight_bucket(0.0, 1.0)


@pytest.mark.parametrize("version", fmt.READABLE_VERSIONS)
def test_a_fixture_dataset_is_what_the_format_describes(tmp_path, version):
    root = weakly.fixtures.build_fixture(
        tmp_path / "ds", samples=40, max_shard=7, format_version=version
    )
    meta = json.loads((root / fmt.DATASET_JSON).read_text())
    fmt.check_format(meta, str(root))
    assert meta["format_version"] == version
    files = {
        tables.SHARDS: [root / fmt.SHARDS_INDEX],
        tables.SAMPLES: [root / fmt.SAMPLES_INDEX],
    }
    if version == 2:
        files = {
            name: [root / p for p in tables.index_parts(Store.at(root), name)] for name in files
        }
        assert not (root / fmt.SAMPLES_INDEX).exists() and not (root / fmt.SHARDS_INDEX).exists()
    for name, paths in files.items():
        assert paths and all(pq.read_schema(p).equals(tables.SCHEMAS[name]) for p in paths)
    shards = tables.read_index(root, tables.SHARDS).to_pylist()
    for row in shards:
        data = (root / row["file"]).read_bytes()
        stats = json.loads(
            (root / fmt.SHARD_DIR / fmt.stats_name(Path(row["file"]).name)).read_text()
        )
        assert stats == {**row, "file": Path(row["file"]).name}
        assert len(list(fmt.iter_tar_records(io.BytesIO(data)))) == row["n"]


def test_check_format_reads_versions_1_and_2_only():
    for version in (1, 2):
        fmt.check_format({"format": fmt.FORMAT_NAME, "format_version": version}, "here")
    assert fmt.dataset_header() == {"format": fmt.FORMAT_NAME, "format_version": 2}
    for version in (0, 3, "2", True, None):
        with pytest.raises(ValueError, match="this code reads 'weakly-shards' versions 1, 2"):
            fmt.check_format({"format": fmt.FORMAT_NAME, "format_version": version}, "elsewhere")
    with pytest.raises(ValueError, match="'other' version 2"):
        fmt.check_format({"format": "other", "format_version": 2}, "elsewhere")
    with pytest.raises(ValueError, match="not one of"):
        fmt.dataset_header(3)


def _tarfile_shard(records) -> bytes:
    """What `tarfile` itself writes for these records: the reference for `shard_bytes`."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for r in sorted(records, key=lambda r: r.key):
            meta = fmt.encode_meta(r.meta)
            jpg_name, json_name = fmt.member_names(r.key)
            tar.addfile(fmt.member_header(jpg_name, len(r.jpg)), io.BytesIO(r.jpg))
            tar.addfile(fmt.member_header(json_name, len(meta)), io.BytesIO(meta))
    return buffer.getvalue()


def test_shard_bytes_are_what_tarfile_writes():
    import random

    rng = random.Random(7)
    for n in [0, 1, 2, 7, 33]:
        records = [
            fmt.ShardRecord(
                f"k{rng.randrange(10**9):09d}-{i}",
                rng.randbytes(rng.choice([0, 1, 511, 512, 513, rng.randrange(40_000)])),
                {"w": rng.random(), "tags": ["é✓"] * rng.randrange(3)},
            )
            for i in range(n)
        ]
        data, keys = fmt.shard_bytes(records)
        assert data == _tarfile_shard(records)
        assert keys == sorted(r.key for r in records)
        assert len(data) % tarfile.RECORDSIZE == 0
