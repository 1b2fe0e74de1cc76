"""Reading samples by their byte ranges (train/ranged.py): the samples index's `offset` and
`size` are where `tarfile` finds each sample; on a real S3-compatible server (moto, tests/
s3_server.py) a visit fetches those ranges only and gives the samples, Skips and batches a
local read gives; an index without ranges (written before them) still trains, by streaming;
and a range that does not hold its sample is reported, never trusted."""

from __future__ import annotations

import itertools
import multiprocessing
import os
import tarfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from pipeline.shards import write_shard
from train.data import LoaderConfig, TrainLoader
from train.ranged import Span, max_range, plan_spans, plan_windows
from train.sample_checks import BAD_RECORD, SHARD_UNREADABLE, Sample, Skip
from train.shards import Dataset
from weakly.fixtures import build_fixture
from weakly_base import index_tables as tables
from weakly_base import shard_format as fmt
from weakly_base.storage import Store


def _upload(local: Path, url: str) -> None:
    store = Store.at(url)
    for path in sorted(local.rglob("*")):
        if path.is_file():
            store.put(str(path.relative_to(local)), path.read_bytes())


def _tar_ranges(tar: Path) -> dict[str, tuple[int, int]]:
    """(offset, size) of each sample as `tarfile` lays the members out."""
    with tarfile.open(tar) as t:
        members = t.getmembers()
    out = {}
    for jpg, meta in zip(members[::2], members[1::2], strict=True):
        key = jpg.name.rsplit(".", 1)[0]
        assert meta.name == f"{key}.json"
        end = meta.offset_data + -(-meta.size // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE
        out[key] = (jpg.offset, end - jpg.offset)
    return out


def _index_ranges(root: Path) -> dict[str, tuple[int, int]]:
    t = tables.read_index(root, tables.SAMPLES, columns=["key", "offset", "size"]).to_pydict()
    return {k: (o, s) for k, o, s in zip(t["key"], t["offset"], t["size"], strict=True)}


def test_index_ranges_are_where_tarfile_finds_each_sample(tmp_path):
    # the ingest writer (pipeline/shards.py) and the fixtures both write the ranges
    records = [
        fmt.ShardRecord(f"k{i:02d}", bytes([i]) * (100 + 700 * i), {"labels": [i]})
        for i in range(5)
    ]
    rows = pa.table({"key": [r.key for r in records], "split": ["train"] * 5,
                     "shard": ["shards/s.tar"] * 5, "labels": [[i] for i in range(5)],
                     "weight": [1.0] * 5, "phash": pa.array([0] * 5, pa.uint64())})  # fmt: skip
    store = Store.at(str(tmp_path / "out"))
    write_shard(store, "shards/train-00-000000.tar", records, "train", 0, [1.0] * 5, rows)
    part = pq.read_table(tmp_path / "out" / tables.samples_part("shards/train-00-000000.tar"))
    assert part.schema.equals(fmt.SAMPLES_SCHEMA)
    ranges = zip(part["offset"].to_pylist(), part["size"].to_pylist(), strict=True)
    got = dict(zip(part["key"].to_pylist(), ranges, strict=True))
    assert got == _tar_ranges(tmp_path / "out" / "shards" / "train-00-000000.tar")
    # rows that are not the shard's keys in stored order are refused, not mislabelled
    with pytest.raises(ValueError, match="stored order"):
        fmt.with_ranges(rows.slice(1), fmt.shard_tar(records))

    root = build_fixture(tmp_path / "ds", samples=60, max_shard=13)
    want: dict[str, tuple[int, int]] = {}
    for tar in sorted((root / "shards").glob("*.tar")):
        want |= _tar_ranges(tar)
    assert _index_ranges(root) == want and len(want) == 60


def test_plan_spans_coalesces_small_gaps_and_caps_requests():
    ranges = [(0, 1024), (1024, 1024), (5120, 1024), (100_000, 2048), (50_000, 1024)]
    spans = plan_spans(ranges, max_gap=4096, span=1 << 20)
    assert spans == [Span(0, 6144, (0, 1, 2)), Span(100_000, 102_048, (3,)),
                     Span(50_000, 51_024, (4,))]  # fmt: skip
    assert plan_spans(ranges[:3], max_gap=0, span=1 << 20) == [
        Span(0, 2048, (0, 1)), Span(5120, 6144, (2,))
    ]  # fmt: skip
    assert [s.items for s in plan_spans(ranges[:3], max_gap=4096, span=2048)] == [(0, 1), (2,)]
    windows = plan_windows(spans, window=4096)
    assert [[s.items for s in w] for w in windows] == [[(0, 1, 2)], [(3,), (4,)]]
    assert max_range(1000) == 2 * (512 + 1024)


def _items(ds: Dataset, positions_of=lambda n: range(0, n, 2), cap: int = 32 << 20) -> list:
    out = []
    for i in range(len(ds.shards.files)):
        positions = list(positions_of(len(ds.index_rows(i))))
        out += list(ds.read_positions(i, positions, cap))
    return out


@pytest.mark.parametrize("sampling", ["natural", "weighted"])
def test_s3_by_range_gives_the_local_batches_and_old_indexes_stream(s3_server, tmp_path, sampling):
    local = build_fixture(tmp_path / "ds", samples=90, max_shard=20, seed=3)
    old = build_fixture(tmp_path / "old", samples=90, max_shard=20, seed=3, sample_ranges=False)
    assert "offset" not in pq.read_schema(next((old / "index" / "samples").glob("*.parquet")))
    old_index = tables.read_index(old, tables.SAMPLES)  # the columns read as nulls
    assert old_index.schema.equals(fmt.SAMPLES_SCHEMA) and old_index["size"].null_count == 90
    url, old_url = (s3_server.bucket(f"rng-{sampling}") + p for p in ("/ds", "/old"))
    _upload(local, url)
    _upload(old, old_url)
    cfg = LoaderConfig(batch_size=8, image_size=16, shuffle_buffer=8, open_shards=3, seed=5,
                       sampling=sampling)  # fmt: skip

    def batches(where: str) -> tuple[list, Dataset]:
        ds = Dataset(where)
        got = [(b["keys"], b["images"]) for b in itertools.islice(TrainLoader(ds, cfg), 12)]
        return got, ds

    want, _ = batches(str(local))
    for where, ranged in ((url, True), (old_url, False)):
        got, ds = batches(where)
        assert [k for k, _ in got] == [k for k, _ in want]
        assert all(torch.equal(a, b) for (_, a), (_, b) in zip(got, want, strict=True))
        # ranged: every sample fetched by its range; old index: no ranges, the tar streamed
        assert (ds.fetch_stats.requests > 0) is ranged
        assert (ds.sample_ranges(0) is not None) is ranged
    # and the Samples themselves, every other position of every shard, are the local ones
    assert _items(Dataset(url)) == _items(Dataset(str(local)))


def _keys_in_child(ds: Dataset, conn) -> None:
    try:
        conn.send([x.key for x in ds.read_positions(0, [0, 1, 2]) if isinstance(x, Sample)])
    except Exception as exc:  # noqa: BLE001 - sent to the test as text
        conn.send(f"{type(exc).__name__}: {exc}")
    os._exit(0)  # not the s3 client's exit handlers, which wait on its closed connections


def test_a_forked_loader_worker_reads_by_range_from_s3(s3_server, tmp_path):
    """A loader worker is a fork of a process whose s3 client is in use; the parent's client
    is not fork-safe, so the worker's Dataset opens its own."""
    local = build_fixture(tmp_path / "ds", samples=30, max_shard=10, seed=9)
    url = s3_server.bucket("workers") + "/ds"
    _upload(local, url)
    ds = Dataset(url)
    want = [x.key for x in ds.read_positions(0, [0, 1, 2])]
    parent, child = multiprocessing.Pipe()
    proc = multiprocessing.get_context("fork").Process(target=_keys_in_child, args=(ds, child))
    proc.start()
    got = parent.recv() if parent.poll(60) else "no answer"
    proc.join(10)
    assert got == want and len(want) == 3


def test_damaged_members_give_the_local_skips_on_s3(s3_server, tmp_path):
    """The same checks as a streamed read: a json overwritten in place, members over the cap
    (some samples within `max_range` of it, fetched by range; others past it, streamed)."""
    local = build_fixture(tmp_path / "ds", samples=40, max_shard=40, seed=4)
    disk = Dataset(str(local))
    big = int(disk.shards.n.argmax())
    n = int(disk.shards.n[big])
    tar = local / disk.shards.files[big]
    with tarfile.open(tar) as t:
        at = t.getmembers()[9].offset_data  # the 5th sample's json
    data = bytearray(tar.read_bytes())
    data[at : at + 1] = b"X"
    tar.write_bytes(bytes(data))
    url = s3_server.bucket("damaged") + "/ds"
    _upload(local, url)
    remote, disk = Dataset(url), Dataset(str(local))
    every = range  # all positions
    got, want = _items(remote, every), _items(disk, every)
    assert got == want and remote.fetch_stats.requests > 0
    assert [x.reason for x in got if isinstance(x, Skip)] == [BAD_RECORD]
    cap = sorted(len(s.jpg) for s in want if isinstance(s, Sample))[len(want) // 2]
    before = remote.fetch_stats.requests
    one_by_one = [list(d.read_positions(big, [p], cap)) for d in (remote, disk) for p in range(n)]
    assert one_by_one[:n] == one_by_one[n:]
    over = [x[0] for x in one_by_one[:n] if isinstance(x[0], Skip) and "cap" in x[0].detail]
    assert len(over) > 5 and remote.fetch_stats.requests > before


def test_a_wrong_range_in_the_index_is_reported_not_trusted(s3_server, tmp_path):
    local = build_fixture(tmp_path / "ds", samples=60, max_shard=60, seed=6)
    disk = Dataset(str(local))
    big = int(disk.shards.n.argmax())
    assert disk.shards.n[big] >= 20
    part = local / tables.samples_part(disk.shards.files[big])
    table = pq.read_table(part)
    offsets, sizes = table["offset"].to_pylist(), table["size"].to_pylist()
    keys = table["key"].to_pylist()
    shard_bytes = (local / disk.shards.files[big]).stat().st_size
    wrong = {
        3: (offsets[4], sizes[3]),  # another sample's members
        6: (offsets[6] + 512, sizes[6]),  # inside the image's bytes
        9: (offsets[9], sizes[9] - 512),  # cut short
        12: (offsets[12], sizes[12] + sizes[13]),  # runs into the next sample
        15: (shard_bytes, 1024),  # past the shard
        17: (offsets[17] + 100, sizes[17]),  # not on a block
    }
    for i, (o, s) in wrong.items():
        offsets[i], sizes[i] = o, s
    table = table.set_column(table.schema.get_field_index("offset"), "offset",
                             pa.array(offsets, pa.int64()))  # fmt: skip
    table = table.set_column(table.schema.get_field_index("size"), "size",
                             pa.array(sizes, pa.int64()))  # fmt: skip
    pq.write_table(table, part)
    url = s3_server.bucket("wrongrange") + "/ds"
    _upload(local, url)
    ds = Dataset(url)
    n = len(keys)
    items = list(ds.read_positions(big, list(range(n))))
    file = ds.shards.files[big]
    for i, item in enumerate(items):
        if i in wrong:
            assert isinstance(item, Skip) and item.reason == SHARD_UNREADABLE, (i, item)
            assert item.key == keys[i] and file in item.detail and repr(keys[i]) in item.detail
        else:  # one bad row spoils only itself
            assert isinstance(item, Sample) and item.key == keys[i]
    assert ds.fetch_stats.requests > 0
    # a streamed read of the same index does not use the ranges: all are fine locally
    assert all(isinstance(x, Sample) for x in Dataset(str(local)).read_positions(big, range(n)))


def test_a_missing_or_truncated_tar_on_s3_is_shard_unreadable(s3_server, tmp_path):
    local = build_fixture(tmp_path / "ds", samples=40, max_shard=20, seed=8)
    url = s3_server.bucket("cut") + "/ds"
    _upload(local, url)
    ds = Dataset(url)
    store = Store.at(url)
    first, second = ds.shards.files[:2]
    store.remove(first)
    data = (local / second).read_bytes()
    store.put(second, data[: len(data) // 2])
    assert {(x.reason, x.detail) for x in ds.read_positions(0, [0, 1])} == {
        (SHARD_UNREADABLE, f"{first}: not found")
    }
    items = list(ds.read_positions(1, list(range(len(ds.index_rows(1))))))
    assert isinstance(items[0], Sample)
    assert isinstance(items[-1], Skip) and items[-1].reason == SHARD_UNREADABLE
    assert second in items[-1].detail
