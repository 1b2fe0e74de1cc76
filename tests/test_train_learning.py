"""What the issue asks of the stream and the loop as numbers: frequency law within 3% over
2e5 draws on a long-tailed set, read efficiency on weight-stratified shards, and a loss that
really goes down on data whose labels are visible in the pixels."""

from __future__ import annotations

import itertools
import json
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from train.cli import main
from train.data import make_plan
from train.sampler import Plan, SampleStream
from train.shards import Dataset
from weakly.fixtures import build_fixture, colour_stripes_jpeg
from weakly_base.index_tables import read_index

torch.set_num_threads(1)


def test_class_frequencies_follow_weights_within_3_percent():
    """Long tail: class c has 500/(c+1)^1.5 samples (11x head to tail); weights 1/sqrt(count)
    flatten it so that the tail class is ~11% of draws, where 2e5 draws resolve a frequency
    to ~0.8% (one sigma), making 3% a real bound rather than a coin toss.

    Shards of uneven size (3..18) hold a random mix of classes. With weight-stratified shards
    one class sits in a handful of shards and its draws arrive in shard-sized clumps, so 2e5
    draws cannot pin a tail class to 3% whatever the sampler does; the exact per-key law on
    stratified shards is checked with z-scores in test_train_sampler.py.
    """
    rng = np.random.default_rng(0)
    counts = [int(500 / (c + 1) ** 1.5) for c in range(5)]
    classes = np.repeat(np.arange(5), counts)
    weights = np.asarray([counts[c] ** -0.5 for c in classes]) * rng.uniform(0.8, 1.2, len(classes))
    order = rng.permutation(len(classes))
    cuts = np.cumsum(rng.integers(3, 19, len(classes)))
    shards = [s for s in np.split(order, cuts[cuts < len(order)]) if len(s)]
    plan = Plan(
        weight_sums=tuple(float(weights[s].sum()) for s in shards),
        seed=11,
        mode="weighted",
        mean_shard_size=len(classes) / len(shards),
        buffer_size=500,
    )

    def read(shard: int):
        return [(float(weights[i]), int(classes[i])) for i in shards[shard]]

    draws = 200_000
    got = Counter(c for _, c in itertools.islice(SampleStream(plan, 0, 1, read), draws))
    want = np.bincount(classes, weights=weights) / weights.sum()
    rel = np.abs(np.asarray([got[c] for c in range(5)]) / draws - want) / want
    assert rel.max() <= 0.03, rel
    # The weights really reshape the set: the head class is 11x the tail in counts, ~3x here.
    assert counts[0] / counts[-1] > 10 and want[0] / want[-1] < 4


def test_read_efficiency_on_weight_stratified_shards(tmp_path):
    """Emitted / read >= 0.9: a shard is read whole on each visit, so the sampler must pick
    shards with probability proportional to their weight sum for reads not to be wasted."""
    ds = Dataset(build_fixture(tmp_path / "ds", samples=1500, max_shard=40, seed=2, max_side=40))
    index = ds.sample_index()
    reads = [0]

    def read(shard: int):
        rows = index[ds.shards.files[shard]]
        reads[0] += len(rows)
        return [(w, key) for key, w in rows]

    plan = make_plan(ds, seed=0, sampling="weighted", shuffle_buffer=200)
    emitted = sum(1 for _ in itertools.islice(SampleStream(plan, 0, 1, read), 100_000))
    assert len(ds.shards.files) >= 30
    assert emitted / reads[0] >= 0.9, emitted / reads[0]


def _label_prior_loss(dataset: Path) -> float:
    """The lowest loss a model blind to the pixels can reach: the 1/k softmax loss of the best
    constant prediction (the weighted label marginal) under the sampling weights."""
    t = read_index(dataset, "samples").to_pydict()
    w = np.asarray(t["weight"]) / np.sum(t["weight"])
    marginal = np.zeros(1 + max(max(x) for x in t["labels"]))
    for wi, labels in zip(w, t["labels"], strict=True):
        marginal[labels] += wi / len(labels)
    return float(
        sum(
            wi * -np.log(marginal[labels]).mean() for wi, labels in zip(w, t["labels"], strict=True)
        )
    )


def test_loss_goes_down_on_a_learnable_set(tmp_path):
    """The final loss is well below what the label prior alone allows, so the model learned
    from the pixels (a first-steps average would not do: correlated early batches let a model
    fit the prior within a few steps)."""
    data = build_fixture(tmp_path / "ds", samples=240, classes=4, seed=4, image=colour_stripes_jpeg)
    out = tmp_path / "run"
    argv = [
        "--data", str(data), "--model", "tiny", "--out", str(out), "--steps", "48",
        "--batch-size", "16", "--image-size", "16", "--device", "cpu", "--workers", "0",
        "--shuffle-buffer", "64", "--log-every", "1", "--lr", "2.0", "--warmup-steps", "4",
    ]  # fmt: skip
    assert main(argv) == 0
    losses = [json.loads(x)["loss"] for x in (out / "metrics.jsonl").read_text().splitlines()]
    last, prior = float(np.mean(losses[-8:])), _label_prior_loss(data)
    assert last < 0.75 * prior and last < losses[0], (losses[0], last, prior)
