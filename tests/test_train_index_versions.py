"""The trainer reads a version-1 and a version-2 copy of one dataset identically: the same shard
table, the same sample index, the same keys planned and the same batches streamed."""

from __future__ import annotations

import itertools
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from train.data import LoaderConfig, TrainLoader, iter_sample_keys
from train.shards import Dataset
from weakly.fixtures import build_fixture
from weakly_base.index_tables import SHARDS, index_parts
from weakly_base.storage import Store

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def pair(tmp_path_factory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("versions")
    kw = {"samples": 80, "classes": 6, "max_shard": 9, "seed": 7, "corrupt": 2, "max_side": 48}
    return build_fixture(base / "v1", format_version=1, **kw), build_fixture(base / "v2", **kw)


def _same_shards(a: Dataset, b: Dataset) -> None:
    assert a.shards.files == b.shards.files and len(a.shards.files) >= 4
    assert np.array_equal(a.shards.n, b.shards.n)
    assert np.array_equal(a.shards.weight_sum, b.shards.weight_sum)
    assert a.shards.sha256 == b.shards.sha256 and all(a.shards.sha256)
    assert (a.num_samples, a.mean_shard_size) == (b.num_samples, b.mean_shard_size)


def test_dataset_reads_both_versions_identically(pair):
    one, two = (Dataset(str(root)) for root in pair)
    assert [one.meta["format_version"], two.meta["format_version"]] == [1, 2]
    _same_shards(one, two)
    assert one.shards.files == tuple(sorted(one.shards.files))
    index = one.sample_index()
    assert index == two.sample_index() and sum(map(len, index.values())) == 80
    for i in range(len(one.shards.files)):
        assert list(one.read_shard(i)) == list(two.read_shard(i))


def test_the_shard_table_is_numbered_by_file_whatever_the_stored_order(pair, tmp_path):
    """Version 2 promises no order inside a shards part: the reader sorts, so the sampler's
    shard numbers (and with them a checkpoint's stream state) do not depend on it."""
    v2 = shutil.copytree(pair[1], tmp_path / "v2")
    parts = index_parts(Store.at(v2), SHARDS)
    for rel in parts:
        table = pq.read_table(v2 / rel)
        pq.write_table(table.take(list(reversed(range(table.num_rows)))), v2 / rel)
    assert any(pq.read_table(v2 / rel).num_rows > 1 for rel in parts)
    _same_shards(Dataset(str(pair[0])), Dataset(str(v2)))


def test_planned_keys_agree(pair):
    one, two = (
        list(itertools.islice(iter_sample_keys(str(root), seed=2, workers=2), 300)) for root in pair
    )
    assert one == two and len(set(one)) > 40


def test_the_loader_streams_the_same_batches(pair):
    cfg = LoaderConfig(batch_size=8, image_size=24, seed=1, shuffle_buffer=16)
    one, two = (list(itertools.islice(TrainLoader(Dataset(str(root)), cfg), 12)) for root in pair)
    for a, b in zip(one, two, strict=True):
        assert a["keys"] == b["keys"]
        assert torch.equal(a["targets"], b["targets"]) and torch.equal(a["images"], b["images"])
    assert len({k for batch in one for k in batch["keys"]}) > 40
