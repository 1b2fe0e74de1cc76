"""Property tests (hypothesis) on the pure functions hostile input flows through: tag
normalisation, key sanitising, weights, and the sampler's per-epoch counts."""

from __future__ import annotations

import math
import re

import numpy as np
import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st
from one_row_reference import law_weight

from pipeline.ingest import IngestConfig
from pipeline.keys import sanitise_key
from pipeline.label_plan import plan_labels
from pipeline.manifest import ROWS_SCHEMA
from pipeline.pass1 import canonicalise_rows
from pipeline.weights import Law
from train.epoch_plan import EpochPlan, Plan
from train.shards import MEMBER_RE
from wordnet_tools.normalise import MAX_FORM_LENGTH, normalise_tag

HOSTILE_TEXT = st.text(
    st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=200
) | st.sampled_from(["../../etc/passwd", "/abs", "a\x00b", "\r\n", "#", "..", "a.b.c", "ﬁ", "Ⅻ"])


@given(HOSTILE_TEXT)
@settings(max_examples=400, deadline=None)
def test_normalised_tags_are_stable_alphanumeric_forms(tag):
    form = normalise_tag(tag)
    if form is None:
        return
    assert form == normalise_tag(form)  # idempotent: lemmas and tags meet in one space
    assert all(c.isalnum() for c in form) and not form.isdigit()
    assert 0 < len(form) <= MAX_FORM_LENGTH
    assert normalise_tag("#" + tag) == form == normalise_tag(f"_{tag}-")


@given(HOSTILE_TEXT)
@settings(max_examples=400, deadline=None)
def test_sanitised_keys_are_tar_safe_and_readable_by_the_trainer(key):
    safe = sanitise_key(key) if key else "k"
    for ext in ("jpg", "json"):
        name = f"{safe}.{ext}"
        assert MEMBER_RE.match(name) and len(name.encode()) <= 100  # USTAR name field
    assert sanitise_key(safe) == safe == sanitise_key(key or "k")
    assert "/" not in safe and "." not in safe and "\x00" not in safe


@given(st.lists(HOSTILE_TEXT.filter(bool), min_size=2, max_size=20, unique=True))
@settings(max_examples=200, deadline=None)
def test_distinct_unsafe_keys_stay_distinct(keys):
    unsafe = [k for k in keys if sanitise_key(k) != k]
    assert len({sanitise_key(k) for k in unsafe}) == len(unsafe)


def test_a_key_forged_to_collide_is_a_recorded_duplicate(in1k_lexicon):
    """`a.b` sanitises to `a_b-<digest>`; a row whose own key is that string collides. It must be
    rejected as a duplicate (named), never overwrite the other sample."""
    forged = sanitise_key("a.b")
    rows = pa.table(
        {
            "source": ["m.jsonl", "m.jsonl"], "row": [0, 1], "key": ["a.b", forged],
            "url": [None, None], "path": ["/x.jpg", "/y.jpg"], "image": [None, None],
            "tags": [["tabby"], ["tabby"]], "row_error": [None, None], "extra": [None, None],
        },
        schema=ROWS_SCHEMA,
    )  # fmt: skip
    table = canonicalise_rows(rows, in1k_lexicon)
    plan = plan_labels(table, IngestConfig(), in1k_lexicon)
    assert plan.keys.to_pylist() == [forged, forged]
    assert plan.rejects.to_pylist() == [None, "duplicate_key: first at m.jsonl row 0"]


COUNTS = st.dictionaries(st.sampled_from("abcdefghij"), st.integers(1, 10_000), min_size=1)
LAWS = st.builds(
    Law,
    scheme=st.sampled_from(["inv-sqrt", "sqrt", "uniform", "natural"]),
    reduce=st.just("max"),
    epoch_size=st.just(1.0),
    images=st.just(1),
    t=st.floats(0.0, 1e5),
    scale=st.floats(1e-3, 1e3),
    rare_cutoff=st.integers(0, 100),
    rare_upsample=st.floats(1.0, 100.0),
)


@given(COUNTS, st.data(), LAWS)
@settings(max_examples=300, deadline=None)
def test_image_weights_are_finite_and_a_rarer_tag_never_lowers_them(counts, data, law):
    labels = data.draw(st.lists(st.sampled_from(sorted(counts)), min_size=1, unique=True))
    w = law_weight(labels, counts, law)
    assert math.isfinite(w) and w > 0
    if law.scheme in ("sqrt", "uniform"):
        assert w >= 1.0
    rarest = min(counts, key=counts.get)
    assert law_weight([*labels, rarest], counts, law) >= w * (1 - 1e-12)
    vocab = tuple(sorted(counts))
    parents = np.zeros(len(labels), np.int64)
    codes = np.array(sorted(vocab.index(s) for s in labels), np.int64)
    got = law.weights(parents, codes, np.array([counts[s] for s in vocab]), 1, np.ones(1, bool))
    assert math.isclose(got[0], w, rel_tol=1e-12)


SHARDS = st.lists(
    st.lists(st.floats(0.05, 20.0, allow_nan=False), min_size=1, max_size=12),
    min_size=1,
    max_size=6,
)


@given(SHARDS, st.integers(0, 2**31), st.integers(1, 5))
@settings(max_examples=25, deadline=None, derandomize=True)
def test_every_epoch_shows_each_sample_floor_or_ceil_of_its_weight(shards, seed, n_slots):
    """Real epoch plans (`EpochPlan`) over many epochs, whatever the shard sizes and weights:
    each sample appears floor(w) or ceil(w) times in every epoch and w times on average; the
    epoch's slots split its visits exactly, with equal shares (+-1), and a sample's copies
    land in different visits of its shard."""
    plan = Plan(
        weight_sums=tuple(float(sum(s)) for s in shards),
        sizes=tuple(len(s) for s in shards),
        weight_maxes=tuple(float(max(s)) for s in shards),
        seed=seed,
    )
    epochs = 200
    seen = [np.zeros(len(s)) for s in shards]
    for epoch in range(epochs):
        ep = EpochPlan(plan, epoch)
        got = [ep.shard_counts(s, np.asarray(w)) for s, w in enumerate(shards)]
        for s, weights in enumerate(shards):
            w = np.asarray(weights)
            assert np.all((got[s] >= np.floor(w - 1e-9)) & (got[s] <= np.ceil(w + 1e-9)))
            seen[s] += got[s]
        if epoch >= 20:
            continue
        # the first epochs in full: the slots' pieces give exactly those counts
        pieced = [np.zeros(len(s), dtype=int) for s in shards]
        pieces = [ep.pieces(j, n_slots) for j in range(n_slots)]
        sizes = [sum(p.size for p in share) for share in pieces]
        assert sum(sizes) == ep.total == sum(int(g.sum()) for g in got)
        assert max(sizes) - min(sizes) <= 1
        for share in pieces:
            for p in share:
                w = np.asarray(shards[p.shard])
                positions = ep.visit_positions(p.shard, p.visit, w)
                if np.ceil(w.max()) <= ep.per_shard[p.shard]:  # copies in different visits
                    assert len(set(positions.tolist())) == len(positions)
                np.add.at(pieced[p.shard], ep.piece_positions(p, w), 1)
        assert all(np.array_equal(a, b) for a, b in zip(pieced, got, strict=True))
    for s, weights in enumerate(shards):
        # each epoch's count is within 1 of w, variance <= 1/4: 5 sigma of the mean is 0.177
        assert np.all(np.abs(seen[s] / epochs - np.asarray(weights)) <= 0.177), s


def test_member_pattern_is_what_the_writer_emits():
    assert re.fullmatch(MEMBER_RE.pattern[1:-1], "a_b-0123456789ab.json")
