"""Pass 1 works on columns; these tests hold it to a plain row-by-row oracle.

The oracle below is the straightforward per-row reading of the rules (one Python loop per row,
as the first version of ingest did); the columnar code must agree with it on every field, for
every vocabulary and weighting scheme, on a manifest built to hit each branch.
"""

from __future__ import annotations

from collections import Counter

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from one_row_reference import duplicate_of, plain_weights, row_key

from pipeline.keys import row_keys, sanitise_key
from pipeline.label_plan import plan_labels
from pipeline.manifest import Columns, _columnar_to_rows, _records_to_table, read_manifest
from pipeline.pass1 import canonicalise_rows, pass1_file
from pipeline.weights import WeightConfig
from weakly_base.shard_format import weight_bucket
from wordnet_tools import top_k_vocabulary


def oracle_canonicalise(rows: list[dict], lexicon) -> list[dict]:
    out = []
    for row in rows:
        if row["key"]:
            raw = row["key"]
        elif row["row_error"]:
            raw = None
        else:
            raw = row_key(row["url"], row["path"], row["image"], row["tags"])
        key = sanitise_key(raw) if raw is not None else None
        labels: list[str] = []
        if row["row_error"]:
            reason = row["row_error"]
        elif not row["tags"]:
            reason = "no_tags: the tags field is empty or null"
        elif not (row["url"] or row["path"] or row["image"] is not None):
            reason = "no_image: row has no url, path or image bytes"
        else:
            labels = sorted({w for w in lexicon.canonical_many(row["tags"]) if w})
            if labels:
                reason = None
            else:
                known = any(lexicon.in_wordnet(t) for t in row["tags"])
                reason = (
                    ("out_of_vocabulary" if known else "no_known_tags")
                    + ": "
                    + " ".join(row["tags"])
                )
        out.append(
            {
                "key": key,
                "orig_key": raw if key != raw else None,
                "wnids": labels,
                "reject": reason,
            }
        )
    return out


def oracle_plan(rows: list[dict], vocab: str, weighting: WeightConfig, lexicon):
    keys = [r["key"] for r in rows]
    rejects = [
        f"duplicate_key: first at {rows[d]['source']} row {rows[d]['row']}"
        if d is not None and r["reject"] is None
        else r["reject"]
        for r, d in zip(rows, duplicate_of(keys), strict=True)
    ]
    wnids = [r["wnids"] for r in rows]
    if vocab in ("in1k", "nouns"):
        vocabulary = tuple(sorted(lexicon.vocabulary))
    else:
        seen = Counter(w for ls, r in zip(wnids, rejects, strict=True) if r is None for w in ls)
        vocabulary = top_k_vocabulary(seen, int(vocab.split(":")[1]))
    wnids = [[w for w in ls if w in set(vocabulary)] for ls in wnids]
    rejects = [
        f"out_of_vocabulary: no tag's synset is in {vocab}" if r is None and not ls else r
        for r, ls in zip(rejects, wnids, strict=True)
    ]
    live = [i for i, r in enumerate(rejects) if r is None]
    counts = Counter(w for i in live for w in wnids[i])
    # Buckets are cut down from the largest weight any image can have: that of an image
    # carrying only the rarest synset.
    epoch = weighting.epoch_samples(len(live))
    plain, top = plain_weights([wnids[i] for i in live], weighting, epoch)
    weights = [0.0] * len(rows)
    for i, w in zip(live, plain, strict=True):
        weights[i] = w
    buckets = [weight_bucket(w, top) if w > 0 else -1 for w in weights]
    return keys, rejects, wnids, vocabulary, counts, weights, buckets


def tricky_manifest() -> pa.Table:
    """Rows that hit every branch: key forms, duplicates, tag forms, missing fields."""
    base = [
        ("a1", "u/1", ["#BrownBear", "#ursusarctos", "#sofa"]),
        ("a2", "u/2", ["#sofa", None, "#couch"]),
        ("", "u/3", ["#geese", "#goose"]),
        (None, "u/4", ["#car", "#automobile", "#Cars"]),
        ("a1", "u/5", ["#plane"]),  # duplicate key
        ("bad/key.with dots", "u/6", ["#dogs"]),
        ("nl\n", "u/7", ["#cat"]),
        ("a8", None, ["#cat"]),  # no image
        ("a9", "u/9", []),  # no tags
        ("a10", "u/10", None),  # null tags
        ("a11", "u/11", ["#instagood", "#love"]),  # no known tags
        ("a12", "u/12", ["#kitten", "#golden_retriever"]),
        ("a13", "u/13", ["#rhizopus", "#dogs"]),  # a rare noun beside a common one
        ("a14", "u/14", ["#rhizopus"]),  # outside in1k: out_of_vocabulary there
        ("a15", "u/15", ["#dogs", "#dog", "#puppy"]),
        ("a16", "u/16", ["#espresso"] * 3),
    ]
    base += [(f"z{i}", f"u/z{i}", ["#espresso", "#tabby"][: 1 + i % 2]) for i in range(20)]
    return pa.table(
        {
            "key": [k for k, _, _ in base],
            "url": [u for _, u, _ in base],
            "tags": pa.array([t for _, _, t in base], pa.list_(pa.string())),
        }
    )


@pytest.fixture(scope="module")
def manifest(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("pass1") / "m.parquet"
    pq.write_table(tricky_manifest(), path)
    return str(path)


def test_columnar_reader_equals_row_reader(manifest):
    table = pq.read_table(manifest)
    columnar = _columnar_to_rows(manifest, table, Columns())
    assert columnar is not None
    assert columnar.equals(_records_to_table(manifest, table.to_pylist(), Columns()))


def test_columnar_reader_splits_string_tags_like_python(tmp_path):
    tags = ["#a, #b\t#c", " lead  trail ", "", None, "x,,y\u2003z\x1cw"]
    path = tmp_path / "s.parquet"
    pq.write_table(pa.table({"url": ["u"] * 5, "tags": tags, "note": list("vwxyz")}), path)
    rows = read_manifest(str(path), Columns(extra=("note",)))
    assert rows["tags"].to_pylist() == [
        None if t is None else t.replace(",", " ").split() for t in tags
    ]
    assert rows["extra"].to_pylist()[0] == '{"note": "v"}'


def test_odd_column_types_fall_back_to_the_row_reader(tmp_path):
    path = tmp_path / "f.parquet"
    pq.write_table(pa.table({"url": [1.5, None], "tags": [[b"\xff"], [b"#cat"]]}), path)
    rows = read_manifest(str(path), Columns())
    assert rows["url"].to_pylist() == ["1.5", None]
    assert rows["row_error"].to_pylist() == ["bad_tags: a tag is not valid UTF-8", None]


@pytest.mark.parametrize("vocab", ["in1k", "nouns", "top:3"])
def test_canonicalise_and_plan_equal_the_oracle(manifest, vocab, request):
    lexicon = request.getfixturevalue("in1k_lexicon" if vocab == "in1k" else "nouns_lexicon")
    got = pass1_file(manifest, Columns(), lexicon)
    expected = oracle_canonicalise(read_manifest(manifest).to_pylist(), lexicon)
    for name in ("key", "orig_key", "wnids", "reject"):
        assert got[name].to_pylist() == [e[name] for e in expected], name
    assert got["key"][6].as_py().startswith("nl-"), "a key with a newline is sanitised"

    rows = got.to_pylist()
    for weighting in (
        WeightConfig(),
        WeightConfig(reduce="mean", rare_mass=0.2),
        WeightConfig(scheme="sqrt"),
        WeightConfig(scheme="uniform", epoch_size="3x"),
        WeightConfig(scheme="natural", epoch_size="50"),
    ):
        config = type("C", (), {"vocab": vocab, "weighting": weighting})()
        config.label_noise, config.seed, config.holdout = 0.0, 0, 0.0
        plan = plan_labels(got, config, lexicon)
        keys, rejects, wnids, vocabulary, counts, weights, buckets = oracle_plan(
            rows, vocab, weighting, lexicon
        )
        assert plan.keys.to_pylist() == keys
        assert plan.rejects.to_pylist() == rejects
        assert plan.wnids.to_pylist() == wnids
        assert plan.vocabulary == vocabulary
        assert plan.counts == counts
        assert plan.weights.tolist() == pytest.approx(weights, rel=1e-7)
        assert plan.weights.sum() == pytest.approx(plan.law.epoch_size, rel=1e-12)
        assert plan.buckets.tolist() == buckets
        assert plan.live.tolist() == [r is None for r in rejects]
        assert plan.live.sum() > 10


def test_empty_and_all_rejected_tables_plan_cleanly(tmp_path, in1k_lexicon):
    lexicon = in1k_lexicon
    path = tmp_path / "e.parquet"
    pq.write_table(pa.table({"url": ["u"], "tags": [["#instagood"]]}), path)
    rows = pass1_file(str(path), Columns(), lexicon)
    config = type("C", (), {"vocab": "in1k", "weighting": WeightConfig()})()
    config.label_noise, config.seed, config.holdout = 0.0, 0, 0.0
    plan = plan_labels(rows, config, lexicon)
    assert plan.rejects[0].as_py().startswith("no_known_tags") and plan.buckets.tolist() == [-1]
    empty = canonicalise_rows(rows.slice(0, 0).select(rows.column_names[:9]), lexicon)
    assert len(plan_labels(empty, config, lexicon).keys) == 0


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.none() | st.text(max_size=8),
            st.none() | st.text(max_size=8),
            st.none() | st.binary(max_size=8),
            st.none() | st.lists(st.text(max_size=5), max_size=4),
        ),
        min_size=1,
        max_size=8,
    )
)
def test_row_keys_equal_row_key_and_separate_different_rows(rows):
    url, path, image, tags = zip(*rows, strict=True)
    keys = row_keys(
        pa.array(url, pa.string()),
        pa.array(path, pa.string()),
        pa.array(image, pa.binary()),
        pa.array(tags, pa.list_(pa.string())),
    )
    assert keys == [row_key(*row) for row in rows]
    by_key = {}
    for key, row in zip(keys, rows, strict=True):
        assert by_key.setdefault(key, row) == row, "two different rows got one key"


@pytest.mark.parametrize(
    "lines, columnar",
    [
        (['{"url": "a", "tags": ["#x", null, "#y"], "key": 7}', "", '{"url": "b", "tags": []}'], 1),
        (['{"path": "p", "tags": "#a,#b c"}', '{"url": "u", "tags": "d"}'], 1),
        (['{"url": "a", "tags": ["#x"]}', '{"url": "b", "tags": "#y"}'], 0),  # mixed types
        (['{"url": NaN, "tags": ["#x"]}', "not json", "[1]"], 0),  # bad lines
    ],
)
def test_jsonl_fast_path_equals_line_reader(tmp_path, lines, columnar):
    from pipeline.manifest import _columnar_jsonl
    from pipeline.manifest_text import read_jsonl

    path = tmp_path / "m.jsonl"
    path.write_text("\n".join(lines) + "\n")
    fast = read_manifest(str(path))
    slow = _records_to_table(str(path), read_jsonl(str(path), path.read_bytes()), Columns())
    assert fast.equals(slow)
    taken = _columnar_jsonl(str(path), path.read_bytes(), Columns()) is not None
    assert taken == bool(columnar)
