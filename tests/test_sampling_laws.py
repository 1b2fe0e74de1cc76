"""The sampling laws (pipeline/weights.py) against values computed by hand, and their
properties: weights sum to the epoch size, sqrt/uniform never show an image less than once,
weights grow with the epoch and with rarity, the rare cutoff means the same at any scale."""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from one_row_reference import bisect_threshold, law_weight, plain_rare_cutoff, plain_weights

from pipeline.exact_sum import exact_parts, merge_parts, parts_total
from pipeline.ingest_config import IngestConfig
from pipeline.label_plan import label_codes, plan_labels
from pipeline.manifest import ROWS_SCHEMA
from pipeline.pass1 import canonicalise_rows
from pipeline.split import split_of
from pipeline.weights import (
    VAL_WEIGHT,
    LawTally,
    WeightConfig,
    rare_cutoff,
    solve_law,
    solve_threshold,
    tally_rows,
)

# Ten train images; f(a) = 8, f(b) = 3, f(c) = 1; 12 (image, tag) pairs. The rarest-tag count
# m(I) is 8 for the six `a` images, 3 for the three with b, 1 for the `c` image.
IMAGES = [["a"]] * 6 + [["a", "b"]] * 2 + [["b"], ["c"]]
VOCAB = ("a", "b", "c")
COUNTS = np.array([8, 3, 1])
SQRT3 = math.sqrt(3)


def solve(config: WeightConfig, images=IMAGES, holdout: float = 0.0, train=None):
    """(law, per-image weights) of `images` (all train unless `train` says otherwise)."""
    lists = pa.array([sorted(x) for x in images], pa.list_(pa.string()))
    parents, codes = label_codes(lists, VOCAB)
    train = np.ones(len(images), bool) if train is None else np.asarray(train)
    counts = np.bincount(codes[train[parents]], minlength=len(VOCAB))
    tally = tally_rows(parents, codes, counts, len(images), train, config)
    law = solve_law(config, counts, tally, holdout)
    return law, law.weights(parents, codes, counts, len(images), train)


def by_image(weights) -> tuple[float, float, float, float]:
    """(a-only image, a+b image, b image, c image) weights."""
    return weights[0], weights[6], weights[8], weights[9]


def test_sqrt_by_hand():
    # E = 12 lands on the piece t in [3, 8]: sqrt(t) * (1/1 + 3/sqrt(3)) + 6 = 12, so
    # sqrt(t) = 6 / (1 + sqrt 3) = 3 (sqrt 3 - 1) and t = 36 - 18 sqrt 3 ~ 4.82.
    law, w = solve(WeightConfig("sqrt", epoch_size="12"))
    assert law.t == pytest.approx(36 - 18 * SQRT3, rel=1e-12)
    a, ab, b, c = by_image(w)
    assert a == 1.0  # f(a) = 8 >= t: the head keeps its natural frequency
    assert ab == b == pytest.approx(3 - SQRT3, rel=1e-12)  # sqrt(t / 3)
    assert c == pytest.approx(3 * (SQRT3 - 1), rel=1e-12)  # sqrt(t / 1)
    assert w.sum() == pytest.approx(12.0, rel=1e-12)
    assert law.reference == pytest.approx(c, rel=1e-12) and law.images == 10


def test_uniform_by_hand():
    # phi(x) = x. E = 14: t * (1/1 + 3/3) + 6 = 14, t = 4: r = 4 for c, 4/3 for b, 1 for a.
    law, w = solve(WeightConfig("uniform", epoch_size="1.4x"))
    assert law.epoch_size == pytest.approx(14.0) and law.t == pytest.approx(4.0, rel=1e-12)
    assert by_image(w) == pytest.approx((1.0, 4 / 3, 4 / 3, 4.0), rel=1e-12)
    # E = 12 is the end of the first piece: t = 3 exactly, b images stay at 1
    law, w = solve(WeightConfig("uniform", epoch_size="12"))
    assert law.t == pytest.approx(3.0) and by_image(w) == pytest.approx((1, 1, 1, 3))
    # E = 22 is past f(a) = 8: every image is lifted, t = 22 / (1 + 1 + 6/8) = 8
    law, w = solve(WeightConfig("uniform", epoch_size="22"))
    assert law.t == pytest.approx(8.0) and by_image(w) == pytest.approx((1, 8 / 3, 8 / 3, 8))


def test_sqrt_and_uniform_at_one_epoch_are_natural():
    for scheme in ("sqrt", "uniform"):
        law, w = solve(WeightConfig(scheme, epoch_size="1x"))
        assert law.t == pytest.approx(1.0) and w.tolist() == pytest.approx([1.0] * 10)


def test_natural_by_hand():
    law, w = solve(WeightConfig("natural"))  # default 1x: r = 1
    assert w.tolist() == [1.0] * 10 and law.reference == 1.0
    _, w = solve(WeightConfig("natural", epoch_size="15"))
    assert w.tolist() == [1.5] * 10


def test_inv_sqrt_by_hand():
    # rare_mass 0.1: the count-1 tags hold 1/12 of the pairs (<= 0.1), adding the count-3 tags
    # 4/12 (> 0.1): only c (f = 1) is rare. Unscaled: 8^-1/2 for a images, 3^-1/2 for images
    # with b, 1 * 100 for the c image; the scale makes the ten weights sum to E = 10.
    config = WeightConfig("inv-sqrt", rare_mass=0.1, rare_upsample=100)
    law, w = solve(config)
    raw_sum = 6 / math.sqrt(8) + 3 / SQRT3 + 100
    assert law.rare_cutoff == 1 and law.scale == pytest.approx(10 / raw_sum, rel=1e-12)
    expected = (8**-0.5, 3**-0.5, 3**-0.5, 100.0)
    assert by_image(w) == pytest.approx([10 * x / raw_sum for x in expected], rel=1e-12)
    assert w.sum() == pytest.approx(10.0, rel=1e-12) and law.reference == pytest.approx(w[9])
    # mean: the a+b image averages its tags' f^-1/2; nothing is rare at rare_mass 0
    law, w = solve(WeightConfig("inv-sqrt", "mean", rare_mass=0.0, epoch_size="20"))
    raw = (8**-0.5, (8**-0.5 + 3**-0.5) / 2, 3**-0.5, 1.0)
    raw_sum = 6 * raw[0] + 2 * raw[1] + raw[2] + raw[3]
    assert by_image(w) == pytest.approx([20 * x / raw_sum for x in raw], rel=1e-12)
    assert law.rare_cutoff == 0


def test_held_out_rows_weigh_one_and_do_not_count():
    # the c image held out: f(c) = 0, so only a and b count; the c row gets VAL_WEIGHT
    train = [True] * 9 + [False]
    law, w = solve(WeightConfig("uniform", epoch_size="1.5x"), holdout=0.5, train=train)
    assert law.images == 9 and law.epoch_size == pytest.approx(13.5)
    # hist {3: 3, 8: 6}: t * 3/3 + 6 = 13.5 on [3, 8], t = 7.5
    assert law.t == pytest.approx(7.5) and w[9] == VAL_WEIGHT
    assert w[:9].sum() == pytest.approx(13.5) and law.reference >= VAL_WEIGHT


def test_epoch_size_options_and_errors():
    assert WeightConfig("sqrt").epoch_size == "2x" and WeightConfig().epoch_size == "1x"
    assert WeightConfig("uniform", epoch_size=5000).epoch_samples(100) == 5000.0
    assert WeightConfig("natural", epoch_size="0.5X").epoch_samples(100) == 50.0
    with pytest.raises(ValueError, match="--epoch-size 0.5x: sqrt shows every train image"):
        WeightConfig("sqrt", epoch_size="0.5x")
    with pytest.raises(ValueError, match="fewer than the 10 train images"):
        solve(WeightConfig("sqrt", epoch_size="9"))
    for bad in ("x", "-2x", "1.5", "ten"):
        with pytest.raises(ValueError, match="--epoch-size"):
            WeightConfig(epoch_size=bad)
    with pytest.raises(ValueError, match="--weight-reduce mean: sqrt takes r"):
        WeightConfig("sqrt", "mean")
    with pytest.raises(ValueError, match="--rare-mass"):
        WeightConfig(rare_mass=1.5)
    with pytest.raises(ValueError, match="--weighting"):
        WeightConfig("log")


def test_rare_cutoff_means_the_same_at_two_scales():
    """Zipf counts over 2,000 tags, and the same counts a million times larger (1e3-ish
    images vs 1e9-ish): the same tags are rare, holding the same share of the pairs."""
    ranks = np.arange(1, 2001)
    small = np.maximum(1, np.round(5000 * ranks**-1.1)).astype(np.int64)
    big = small * 10**6
    for mass in (0.02, 0.05, 0.2):
        cut_small, cut_big = rare_cutoff(small, mass), rare_cutoff(big, mass)
        assert cut_small > 0 and cut_big == cut_small * 10**6
        assert np.array_equal(small <= cut_small, big <= cut_big)
        held = small[small <= cut_small].sum() / small.sum()
        assert held <= mass and held == big[big <= cut_big].sum() / big.sum()
        assert cut_small == plain_rare_cutoff(dict(enumerate(small.tolist())), mass)
    # an absolute threshold (the old --rare-threshold 10) would mark a third of the small
    # set's tags and none of the big set's
    assert (small < 10).mean() > 0.3 and not (big < 10).any()


@given(
    st.lists(st.lists(st.sampled_from("abcdefgh"), min_size=1, max_size=3, unique=True),
             min_size=1, max_size=40),
    st.sampled_from(["sqrt", "uniform", "inv-sqrt", "natural"]),
    st.floats(1.0, 6.0),
    st.data(),
)  # fmt: skip
@settings(max_examples=150, deadline=None)
def test_laws_equal_their_plain_definitions(images, scheme, multiple, data):
    reduce = data.draw(st.sampled_from(["max", "mean"])) if scheme == "inv-sqrt" else "max"
    mass = data.draw(st.sampled_from([0.0, 0.1, 0.3]))
    config = WeightConfig(scheme, reduce, mass, 50.0, f"{multiple}x")
    lists = pa.array([sorted(x) for x in images], pa.list_(pa.string()))
    vocab = tuple("abcdefgh")
    parents, codes = label_codes(lists, vocab)
    n = len(images)
    counts = np.bincount(codes, minlength=len(vocab))
    law = solve_law(config, counts, tally_rows(parents, codes, counts, n, np.ones(n, bool), config))
    w = law.weights(parents, codes, counts, n, np.ones(n, bool))
    epoch = multiple * n
    assert math.isclose(w.sum(), epoch, rel_tol=1e-9)  # weights sum to the epoch size
    assert w.tolist() == pytest.approx(plain_weights(images, config, epoch)[0], rel=1e-7)
    named = dict(zip(vocab, counts.tolist(), strict=True))
    assert w.tolist() == pytest.approx([law_weight(x, named, law) for x in images], rel=1e-12)
    assert w.max() <= law.reference * (1 + 1e-12)
    if scheme in ("sqrt", "uniform"):
        assert w.min() >= 1.0  # every image at least once per epoch
        # rarer rarest tag, larger weight; the head (m >= t) keeps weight 1
        rarest = [min(named[s] for s in x) for x in images]
        order = np.argsort(rarest, kind="stable")
        assert all(np.diff(w[order]) <= 1e-12)
        assert all(w[i] == 1.0 for i in range(n) if rarest[i] >= law.t)


@given(st.dictionaries(st.integers(1, 10_000), st.integers(1, 20), min_size=1, max_size=8),
       st.floats(1.01, 30.0), st.sampled_from([0.5, 1.0]))  # fmt: skip
@settings(max_examples=60, deadline=None)
def test_threshold_is_exact_and_monotone_in_the_epoch(hist, multiple, power):
    images = sum(hist.values())
    rarest = [m for m, k in hist.items() for _ in range(k)]
    scheme = "sqrt" if power == 0.5 else "uniform"
    t = solve_threshold(hist, multiple * images, power)
    assert t == pytest.approx(bisect_threshold(rarest, multiple * images, scheme), rel=1e-7)
    total = sum(k * max(1.0, (t / m) ** power) for m, k in hist.items())
    assert total == pytest.approx(multiple * images, rel=1e-10)
    more = solve_threshold(hist, multiple * images * 1.1, power)
    assert more > t  # a larger epoch lifts more of the tail, never less


def test_exact_sums_do_not_depend_on_order_or_split():
    rng = np.random.default_rng(0)
    values = rng.random(10_000) ** 8 * 1e3
    whole = parts_total(exact_parts(values))
    assert whole == math.fsum(values)  # correctly rounded, like fsum
    merged: dict = {}
    for piece in np.array_split(rng.permutation(values), 7):
        merge_parts(merged, exact_parts(piece))
    assert parts_total(merged) == whole
    tally = LawTally().add({"images": 2, "min_counts": {"3": 2}, "raw_parts": {}})
    assert tally.min_counts == {3: 2}


def _rows(tags_by_key: list[tuple[str, str]]) -> pa.Table:
    n = len(tags_by_key)
    return pa.table(
        {
            "source": ["m.jsonl"] * n, "row": list(range(n)), "key": [k for k, _ in tags_by_key],
            "url": [f"http://x/{i}.jpg" for i in range(n)], "path": [None] * n,
            "image": [None] * n, "tags": [[t] for _, t in tags_by_key], "row_error": [None] * n,
            "extra": [None] * n,
        },
        schema=ROWS_SCHEMA,
    )  # fmt: skip


def test_counts_vocabulary_noise_and_weights_see_only_train_rows(in1k_lexicon):
    keys = [f"k{i}" for i in range(200)]
    train = [k for k in keys if split_of(k, 0.5) == "train"][:6]
    val = [k for k in keys if split_of(k, 0.5) == "val"][:8]
    # zebra is the most frequent tag overall but only held-out images carry it
    rows = [(k, "tabby") for k in train[:5]] + [(train[5], "beagle")]
    rows += [(k, "zebra") for k in val[:7]] + [(val[7], "tabby")]
    table = canonicalise_rows(_rows(rows), in1k_lexicon)
    tabby, beagle, zebra = (in1k_lexicon.canonical(t) for t in ("tabby", "beagle", "zebra"))
    config = IngestConfig(vocab="top:2", holdout=0.5, weighting=WeightConfig("sqrt"))
    plan = plan_labels(table, config, in1k_lexicon)
    assert set(plan.vocabulary) == {tabby, beagle}  # top:K from train rows only
    assert dict(plan.counts) == {tabby: 5, beagle: 1}  # the held-out tabby does not count
    rejects = plan.rejects.to_pylist()
    assert rejects[6:13] == ["out_of_vocabulary: no tag's synset is in top:2"] * 7
    assert plan.law.images == 6 and plan.weights[:6].sum() == pytest.approx(12.0)
    assert plan.weights[13] == VAL_WEIGHT and plan.wnids[13].as_py() == [tabby]

    config = IngestConfig(vocab="in1k", holdout=0.5, label_noise=0.9, seed=4)
    plan = plan_labels(table, config, in1k_lexicon)
    assert plan.counts[zebra] == 0 and sum(plan.counts.values()) == 6
    assert plan.wnids.to_pylist()[6:] == [[zebra]] * 7 + [[tabby]]  # held out: never noised
    assert plan.noise.labels == 6 and plan.noise.replaced >= 1


def test_cli_flags_reach_the_weight_config():
    from pipeline.ingest_cli import config_from_args
    from weakly.cli import build_parser

    def parse(*flags):
        args = build_parser(["ingest"]).parse_args(["ingest", "m.jsonl", "--out", "o", *flags])
        return config_from_args(args).weighting

    assert parse() == WeightConfig("inv-sqrt", "max", 0.001, 100.0, "1x")
    assert parse("--weighting", "uniform", "--epoch-size", "3x") == WeightConfig(
        "uniform", epoch_size="3x"
    )
    assert parse("--weighting", "sqrt").epoch_size == "2x"
    assert parse("--rare-mass", "0.02", "--rare-upsample", "10").rare_mass == 0.02
    with pytest.raises(ValueError, match="--rare-threshold was removed.*--rare-mass"):
        parse("--rare-threshold", "10")
