"""The weighted stream: frequency law, determinism, rank/worker split, natural passes."""

from __future__ import annotations

import itertools
from collections import Counter

import numpy as np
import pytest

from train.data import iter_sample_keys
from train.sampler import Plan, SampleStream, visit_shard
from train.shards import Dataset
from weakly.fixtures import build_fixture


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory):
    # ~200 samples, 11 shards of sizes 2..23 with weight sums differing 30x.
    return str(build_fixture(tmp_path_factory.mktemp("sampler") / "ds", samples=200, seed=1))


def _z_scores(dataset_dir: str, counts: Counter, m: int, law: str) -> np.ndarray:
    """Per-key z-score of the observed count under a sampling law.

    Visits are independent, so a key's count over V visits has mean V*E[X] and variance
    V*Var[X], X being its emissions in one visit: the shard is hit with probability p_s and the
    key then emits floor(x) + Bernoulli(frac(x)) copies. With E[emissions per visit] = c,
    m outputs correspond to V = m / c visits.
    """
    ds = Dataset(dataset_dir)
    index = ds.sample_index()
    ws = ds.shards.weight_sum
    c = ds.mean_shard_size
    visits = m / c
    z = []
    for s, file in enumerate(ds.shards.files):
        p = ws[s] / ws.sum() if law == "weighted" else 1 / len(ws)
        for key, w in index[file]:
            x = c * w / ws[s]
            f, r = np.floor(x), x - np.floor(x)
            mean = p * x
            var = p * (f * f + (2 * f + 1) * r) - mean**2
            z.append((counts[key] - visits * mean) / np.sqrt(visits * var))
    return np.asarray(z)


def test_frequency_proportional_to_weight_whatever_the_shard_sizes(dataset_dir):
    m = 60_000
    counts = Counter(itertools.islice(iter_sample_keys(dataset_dir, seed=3, shuffle_buffer=8), m))
    z = _z_scores(dataset_dir, counts, m, "weighted")
    # 200 keys; |z| > 5 has probability ~6e-7 each under the normal approximation (each count
    # sums ~3,300 independent visits), so a correct sampler fails this < 1e-4 of the time.
    assert np.abs(z).max() < 5, np.abs(z).max()
    assert 0.5 < np.mean(z**2) < 2.0
    # Power: the same counts are far from what uniform shard choice would give.
    assert np.abs(_z_scores(dataset_dir, counts, m, "uniform-shards")).max() > 10


def test_same_seed_same_order_other_seed_other_order(dataset_dir):
    a = list(itertools.islice(iter_sample_keys(dataset_dir, seed=5, batch_size=4), 300))
    b = list(itertools.islice(iter_sample_keys(dataset_dir, seed=5, batch_size=4), 300))
    c = list(itertools.islice(iter_sample_keys(dataset_dir, seed=6, batch_size=4), 300))
    assert a == b and a != c


def test_natural_sampling_emits_every_sample_once_per_pass(dataset_dir):
    passes, buffer = 10, 16
    keys = list(
        itertools.islice(
            iter_sample_keys(dataset_dir, sampling="natural", shuffle_buffer=buffer), 200 * passes
        )
    )
    counts = Counter(keys)
    assert len(counts) == 200
    # Only the shuffle buffer blurs pass boundaries: it holds back `buffer` items of the last
    # pass and lets as many of the next one through.
    assert passes - 1 <= min(counts.values()) and max(counts.values()) <= passes + 1
    assert sum(n != passes for n in counts.values()) <= 2 * buffer


@pytest.mark.parametrize("world_size", [1, 2, 3, 4])
def test_ranks_split_the_visits_and_each_yields_what_is_asked(dataset_dir, world_size):
    steps, batch = 12, 5
    per_rank = [
        list(
            itertools.islice(
                iter_sample_keys(
                    dataset_dir,
                    seed=0,
                    rank=r,
                    world_size=world_size,
                    batch_size=batch,
                    workers=2,
                    shuffle_buffer=4,
                ),
                steps * batch,
            )
        )
        for r in range(world_size)
    ]
    assert all(len(keys) == steps * batch for keys in per_rank)
    if world_size > 1:
        assert per_rank[0] != per_rank[1]


def test_slots_partition_the_global_visits():
    """Slot j of n reads exactly global visits j, j+n, ...: checked through the reads made."""
    plan = Plan(weight_sums=(1.0, 2.0, 0.5), seed=9, mean_shard_size=2, buffer_size=1)
    reads: list[tuple[int, int]] = []

    def reader(slot):
        def read(shard):
            reads.append((slot, shard))
            return [(0.4, f"{shard}-0"), (0.6, f"{shard}-1")]

        return read

    streams = [iter(SampleStream(plan, j, 3, reader(j))) for j in range(3)]
    for s in streams:
        list(itertools.islice(s, 40))
    for j in range(3):
        mine = [shard for slot, shard in reads if slot == j]
        assert mine == [visit_shard(plan, j + 3 * v) for v in range(len(mine))]


def test_stream_state_resumes_exactly():
    plan = Plan(weight_sums=(1.0, 2.0, 0.5, 3.0), seed=2, mean_shard_size=3, buffer_size=7)
    data = {s: [(w, f"{s}-{i}") for i, w in enumerate([0.3, 0.9, 0.1][: s + 1])] for s in range(4)}
    data[3] = [(1.5, "3-0"), (1.5, "3-1")]  # x > 1: several copies per visit
    full = SampleStream(plan, 1, 2, data.__getitem__)
    it = iter(full)
    head = [next(it) for _ in range(23)]
    state = full.state()
    tail = [next(it) for _ in range(40)]
    again = list(itertools.islice(SampleStream(plan, 1, 2, data.__getitem__, state), 40))
    assert again == tail and len(head) == 23
