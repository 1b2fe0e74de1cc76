"""The epoch stream: per-epoch counts, determinism, equal shares per rank, resume, mixing."""

from __future__ import annotations

import itertools
from collections import Counter

import numpy as np
import pytest

from train.data import epoch_keys, iter_sample_keys
from train.epoch_plan import EpochPlan, Plan, steps_for_epochs
from train.sampler import SampleStream
from train.shards import Dataset
from weakly.fixtures import build_fixture


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory):
    # ~200 samples, 10 shards of sizes 7..23, weights < 1 (an epoch is ~39 samples)
    return str(build_fixture(tmp_path_factory.mktemp("sampler") / "ds", samples=200, seed=1))


@pytest.fixture(scope="module")
def heavy_dir(tmp_path_factory):
    """Weights mostly above 1 (1000 classes: most labels are rare and upsampled), ~25 shards."""
    return str(
        build_fixture(
            tmp_path_factory.mktemp("heavy") / "ds",
            samples=600,
            classes=1000,
            max_shard=30,
            seed=3,
            min_side=8,
            max_side=10,
        )  # fmt: skip
    )


class ListSource:
    """Shards as lists of (weight, payload); records which positions each read asked for."""

    def __init__(self, shards: list[list[tuple[float, str]]]) -> None:
        self.shards = shards
        self.reads: list[tuple[int, list[int]]] = []

    def weights(self, shard: int) -> np.ndarray:
        return np.asarray([w for w, _ in self.shards[shard]])

    def read(self, shard: int, positions):
        self.reads.append((shard, list(positions)))
        return iter([self.shards[shard][i][1] for i in positions])


def _plan(shards, **kw) -> Plan:
    return Plan(
        weight_sums=tuple(sum(w for w, _ in s) for s in shards),
        sizes=tuple(len(s) for s in shards),
        weight_maxes=tuple(max(w for w, _ in s) for s in shards),
        **kw,
    )


HAND = [
    [(1.5, "a"), (2.5, "b"), (1.0, "c")],  # stretch [0, 5): always 5 points
    [(0.5, "d"), (0.5, "e")],  # stretch [5, 6): always exactly one of d, e
]


@pytest.mark.parametrize("maxes", ["table", "none", "nan"])
@pytest.mark.parametrize("n_slots", [1, 3])
def test_hand_checked_epoch_counts(n_slots, maxes):
    """Every epoch: c exactly once, a once or twice, b twice or three times, a + b = 4, one of
    d/e; the union of the slots' epoch shares is that epoch, each slot 6 // n or 6 // n + 1.
    Also when the shards table has no usable weight_max (then visits follow mean copies)."""
    plan = _plan(HAND, seed=4, buffer_size=1, open_shards=2)
    if maxes != "table":
        plan = Plan(plan.weight_sums, plan.sizes, None if maxes == "none" else (np.nan,) * 2,
                    seed=4, buffer_size=1, open_shards=2)  # fmt: skip
        assert EpochPlan(plan, 0).per_shard.tolist() == [2, 1]  # ceil(5 / 3), ceil(1 / 2)
    source = ListSource(HAND)
    seen = Counter()
    for epoch in range(200):
        shares = [
            [key for _, key in SampleStream(plan, j, n_slots, source).epoch_emissions(epoch)]
            for j in range(n_slots)
        ]
        assert sorted(len(s) for s in shares) in ([6], [2, 2, 2])
        counts = Counter(itertools.chain.from_iterable(shares))
        assert counts["c"] == 1 and counts["a"] in (1, 2) and counts["b"] in (2, 3)
        assert counts["a"] + counts["b"] == 4 and counts["d"] + counts["e"] == 1
        seen.update(counts)
    # both roundings happen, in proportion to the fractions: within 4 sigma (<= 0.5 sqrt(200))
    assert 72 <= seen["d"] <= 128 and 272 <= seen["a"] <= 328 and 472 <= seen["b"] <= 528


def test_every_epoch_is_exact_over_ranks_and_streams(dataset_dir):
    ds = Dataset(dataset_dir)
    weights = {r.key: w for s in range(len(ds.shards.files))
               for r, w in zip(ds.index_rows(s), ds.weights(s), strict=True)}  # fmt: skip
    for epoch in range(3):
        shares = [
            keys
            for rank in range(2)
            for keys in epoch_keys(dataset_dir, epoch, seed=2, rank=rank, world_size=2, workers=2)
        ]
        assert max(map(len, shares)) - min(map(len, shares)) <= 1  # equal steps on every rank
        counts = Counter(itertools.chain.from_iterable(shares))
        assert sum(counts.values()) in (
            np.floor(sum(weights.values())),
            np.ceil(sum(weights.values())),
        )
        for key, w in weights.items():
            assert np.floor(w) <= counts[key] <= np.ceil(w), (key, w, counts[key])


def test_mean_count_over_epochs_is_the_weight(heavy_dir):
    """Over 60 epochs each sample's mean count is w within 5 sigma (sigma <= 0.5 / sqrt(60)),
    while the weights spread over 0.1..4: the law, not a uniform one."""
    ds = Dataset(heavy_dir)
    weights = {r.key: w for s in range(len(ds.shards.files))
               for r, w in zip(ds.index_rows(s), ds.weights(s), strict=True)}  # fmt: skip
    plan = Plan(
        weight_sums=tuple(ds.shards.weight_sum), sizes=tuple(ds.shards.n),
        weight_maxes=tuple(ds.shards.weight_max), seed=9,
    )  # fmt: skip
    seen = Counter()
    epochs = 60
    for epoch in range(epochs):
        ep = EpochPlan(plan, epoch)
        for s in range(len(ds.shards.files)):
            rows = ds.index_rows(s)
            for row, c in zip(rows, ep.shard_counts(s, ds.weights(s)), strict=True):
                seen[row.key] += int(c)
    w = np.asarray(list(weights.values()))
    mean = np.asarray([seen[k] for k in weights]) / epochs
    assert np.abs(mean - w).max() <= 5 * 0.5 / np.sqrt(epochs)
    assert w.max() / w.min() > 10 and ds.shards.weight_max.max() > 2


def test_natural_shows_every_sample_once_per_epoch(dataset_dir):
    for epoch in range(2):
        shares = epoch_keys(dataset_dir, epoch, seed=0, world_size=1, workers=3, sampling="natural")
        counts = Counter(itertools.chain.from_iterable(shares))
        assert len(counts) == 200 and set(counts.values()) == {1}


def test_order_is_a_pure_function_of_its_arguments(dataset_dir):
    def keys(**kw):
        args = dict(seed=5, batch_size=4, workers=2, shuffle_buffer=8) | kw
        return list(itertools.islice(iter_sample_keys(dataset_dir, **args), 300))

    a = keys()
    assert a == keys()
    for change in ({"seed": 6}, {"workers": 3}, {"rank": 1, "world_size": 2}, {"open_shards": 2}):
        other = keys(**change)
        assert other != a and other == keys(**change)


@pytest.mark.parametrize("world_size", [1, 2, 3, 4])
def test_every_rank_yields_what_is_asked(dataset_dir, world_size):
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
        )  # fmt: skip
        for r in range(world_size)
    ]
    assert all(len(keys) == steps * batch for keys in per_rank)
    if world_size > 1:
        assert per_rank[0] != per_rank[1]


def test_steps_for_epochs_is_the_exact_epoch_totals(dataset_dir):
    ds = Dataset(dataset_dir)
    plan = Plan(tuple(ds.shards.weight_sum), tuple(ds.shards.n), tuple(ds.shards.weight_max))
    totals = [EpochPlan(plan, e).total for e in range(3)]
    assert steps_for_epochs(plan, 3, 7) == sum(totals) // 7
    assert all(t in (38, 39, 40) for t in totals)  # the weights sum to 39.1


def test_stream_state_resumes_exactly_mid_epoch_and_across_epochs():
    shards = [[(w, f"{s}-{i}") for i, w in enumerate(ws)]
              for s, ws in enumerate([[0.3, 0.9, 0.1], [2.5, 1.5], [0.6] * 5, [3.2, 0.2]])]  # fmt: skip
    plan = _plan(shards, seed=2, buffer_size=5, open_shards=2)
    source = ListSource(shards)
    full = SampleStream(plan, 1, 2, source)
    it = iter(full)
    for cut in (3, 11, 23):  # inside the first epoch, near its end, a few epochs on
        while full.state().out < cut:
            next(it)
        state = full.state()
        tail = [next(it) for _ in range(30)]
        again = list(itertools.islice(SampleStream(plan, 1, 2, source, state), 30))
        assert again == tail
        assert state.epoch >= 0 and state.open is not None


def test_a_visit_reads_only_what_it_emits_in_stored_order():
    """Each read asks for ascending positions, and only those the epoch emits."""
    shards = [[(w, f"{s}-{i}") for i, w in enumerate(ws)]
              for s, ws in enumerate([[0.2] * 10, [0.1] * 20, [1.2, 1.9, 1.1]])]  # fmt: skip
    plan = _plan(shards, seed=1, buffer_size=1, open_shards=3)
    source = ListSource(shards)
    stream = SampleStream(plan, 0, 1, source)
    emitted = [key for _, key in stream.epoch_emissions(0)]
    read = [f"{s}-{i}" for s, positions in source.reads for i in positions]
    assert Counter(read) == Counter(emitted)
    assert all(p == sorted(p) for _, p in source.reads)
    assert len(set(emitted)) < 15  # most of the 0.1/0.2 samples are not read at all


def _batch_stats(batches, shard_of, labels_of):
    shards = np.mean([len({shard_of[k] for k in b}) for b in batches])
    share = np.mean(
        [max(Counter(x for k in b for x in labels_of[k]).values()) / len(b) for b in batches]
    )
    return shards, share


@pytest.mark.parametrize("workers", [0, 4])
def test_batches_draw_on_as_many_shards_as_independent_draws(heavy_dir, workers):
    """Mixing: with 16 visits open per stream, a batch of 32 touches at least 0.8 of the
    distinct shards 32 independent weighted draws touch in expectation (sum_s 1 - (1 - p_s)^32,
    computed), and its most common label's share is within 1.2x (+ one sample) of independent
    draws'. With 4 streams the epoch's ~50 visits are too few for 16 open each: they are cut
    into strided parts, and each stream's batches mix as well as one stream's."""
    ds = Dataset(heavy_dir)
    shard_of, labels_of, weight = {}, {}, {}
    for s in range(len(ds.shards.files)):
        for row, w in zip(ds.index_rows(s), ds.weights(s), strict=True):
            shard_of[row.key], labels_of[row.key], weight[row.key] = s, row.labels, w
    batch, n = 32, 60
    p = ds.shards.weight_sum / ds.shards.weight_sum.sum()
    expected_shards = float(np.sum(1 - (1 - p) ** batch))
    stream = iter_sample_keys(
        heavy_dir, seed=3, batch_size=batch, shuffle_buffer=1, workers=workers
    )
    keys = list(itertools.islice(stream, batch * n))
    ours = [keys[i : i + batch] for i in range(0, len(keys), batch)]
    rng = np.random.default_rng(0)
    names = list(weight)
    w = np.asarray([weight[k] for k in names])
    independent = [
        [names[i] for i in rng.choice(len(names), batch, p=w / w.sum())] for _ in range(n)
    ]
    shards, share = _batch_stats(ours, shard_of, labels_of)
    _, share_independent = _batch_stats(independent, shard_of, labels_of)
    assert len(ds.shards.files) >= 20 and expected_shards > 10
    assert shards >= 0.8 * expected_shards, (shards, expected_shards)
    assert share <= 1.2 * share_independent + 1 / batch, (share, share_independent)
    # the same stream with one visit open at a time does not mix: the bound has teeth
    one = list(itertools.islice(iter_sample_keys(heavy_dir, seed=3, batch_size=batch,
                                                 shuffle_buffer=1, open_shards=1,
                                                 workers=workers), batch * n))  # fmt: skip
    single, _ = _batch_stats([one[i : i + batch] for i in range(0, len(one), batch)],
                             shard_of, labels_of)  # fmt: skip
    assert single < 0.5 * expected_shards, single


def test_reading_ahead_changes_nothing_but_when_reads_start():
    """A source that asks for read-ahead (object stores) has the next pieces, also those of
    the next epoch, opened early: the stream and its resumed continuation are the same."""
    shards = [[(w, f"{s}-{i}") for i, w in enumerate(ws)]
              for s, ws in enumerate([[0.7, 0.9, 0.4], [1.5, 0.5], [0.6] * 5, [2.2, 0.2]])]  # fmt: skip
    plan = _plan(shards, seed=7, buffer_size=3, open_shards=2)
    lazy = ListSource(shards)
    plain = list(itertools.islice(SampleStream(plan, 0, 2, lazy), 80))
    eager = ListSource(shards)
    eager.prefetch = 3
    stream = SampleStream(plan, 0, 2, eager)
    it = iter(stream)
    head = [next(it) for _ in range(37)]
    state = stream.state()
    assert head + [next(it) for _ in range(43)] == plain
    assert len(eager.reads) > len(lazy.reads)  # pieces (of the next epoch too) opened ahead
    assert list(itertools.islice(SampleStream(plan, 0, 2, eager, state), 43)) == plain[37:]
