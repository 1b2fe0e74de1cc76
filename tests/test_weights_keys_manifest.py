"""Pure pieces of the ingest job: weights, buckets, keys, manifest parsing."""

from __future__ import annotations

import gzip
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from one_row_reference import duplicate_of

from pipeline.keys import sanitise_key
from pipeline.label_noise import Marginal, apply_label_noise, noise_one
from pipeline.manifest import ManifestError, list_manifest_files, read_manifest
from weakly_base.shard_format import KEY_MAX_LEN, KEY_RE, weight_bucket


def test_weight_buckets_are_log2():
    assert [weight_bucket(w, 8.0) for w in (8.0, 5.0, 4.0, 3.9, 1.0, 0.9)] == [0, 0, 1, 1, 3, 3]


@given(st.lists(st.floats(1e-6, 1e6), min_size=1, max_size=50))
@settings(max_examples=200, deadline=None)
def test_same_bucket_means_within_factor_two(weights):
    top = max(weights)
    by_bucket: dict[int, list[float]] = {}
    for w in weights:
        by_bucket.setdefault(weight_bucket(w, top), []).append(w)
    for bucket, values in by_bucket.items():
        if bucket < 99:
            assert max(values) <= 2.0 * min(values) * (1 + 1e-9)


@given(st.text(min_size=1, max_size=300))
@settings(max_examples=300, deadline=None)
def test_sanitised_keys_are_safe_and_injective_enough(key):
    safe = sanitise_key(key)
    assert KEY_RE.fullmatch(safe)
    assert sanitise_key(safe) == safe


def test_a_long_unsafe_key_is_cut_to_the_key_rule():
    """80 readable characters plus "-" and a 12-digit digest used to give 93-character keys,
    over the format's 90 (shard_bytes refuses them)."""
    for key in ("a" * 100 + ".x", "é" + "b" * 200, "c" * 77 + "/"):
        safe = sanitise_key(key)
        assert KEY_RE.fullmatch(safe) and len(safe) <= KEY_MAX_LEN, safe
        assert sanitise_key(safe) == safe
    assert len(sanitise_key("a" * 100 + ".x")) == KEY_MAX_LEN


def test_sanitise_keeps_good_keys_and_separates_bad_ones():
    assert sanitise_key("abc_123-X") == "abc_123-X"
    assert sanitise_key("a.b") != sanitise_key("a/b")
    assert "/" not in sanitise_key("../../etc/passwd") and "." not in sanitise_key("x.jpg")


def test_duplicate_of_points_at_the_first():
    assert duplicate_of(["a", "b", "a", None, None, "a"]) == [None, None, 0, None, None, 0]


def test_label_noise_is_seeded_about_p_and_never_redraws_the_original():
    rng = np.random.default_rng(5)
    tags = list("abcdefgh")
    keys = [f"k{i}" for i in range(3000)]
    labels = [sorted(rng.choice(tags, size=int(rng.integers(1, 4)), replace=False)) for _ in keys]
    counts = {"a": 500, "b": 300, "c": 100, "d": 50, "e": 20, "f": 10, "g": 5, "h": 1}
    for p in (0.1, 0.5):
        noisy, tally = apply_label_noise(labels, keys, counts, p, seed=1)
        again, _ = apply_label_noise(labels, keys, counts, p, seed=1)
        assert noisy == again and noisy != apply_label_noise(labels, keys, counts, p, seed=2)[0]
        assert tally.labels == sum(map(len, labels))
        # every image keeps its k labels, and exactly `replaced` of them are new to it: a
        # replacement is never the original nor another of the image's own labels
        assert [len(set(x)) for x in noisy] == [len(x) for x in labels]
        assert sum(len(set(n) - set(o)) for n, o in zip(noisy, labels, strict=True)) == (
            tally.replaced
        )
        realised = tally.report(p)["realised"]
        sd = math.sqrt(p * (1 - p) / tally.labels)
        assert abs(realised - p) < 4 * sd, (p, realised)  # the nominal fraction is realised
    # a label whose image already carries every other tag cannot be replaced: kept, not counted
    out, replaced = noise_one(
        ["a", "b"], np.random.default_rng(0), 0.99, Marginal({"a": 1, "b": 1})
    )
    assert (out, replaced) == (["a", "b"], 0)


def test_marginal_draws_exclude_exactly():
    marginal = Marginal({"a": 10, "b": 45, "c": 45})
    quantiles = (np.arange(1000) + 0.5) / 1000
    draws = [marginal.draw(u, {"b"}) for u in quantiles]
    assert draws.count("b") == 0 and abs(draws.count("a") / 1000 - 10 / 55) < 0.002
    draws = [marginal.draw(u, {"a"}) for u in quantiles]
    assert draws.count("b") == draws.count("c") == 500
    assert marginal.draw(0.3, {"a", "b", "c"}) is None


def test_malformed_manifests_name_file_and_line(tmp_path):
    bad_utf8 = tmp_path / "m.csv"  # one bad byte costs its row, named by file and line
    bad_utf8.write_bytes(b"key,path,tags\nk,p,#cat\nk2,p,\xff\n")
    errors = read_manifest(str(bad_utf8))["row_error"].to_pylist()
    assert errors == [None, f"bad_row: {bad_utf8}: line 3: not valid UTF-8"]
    bad_header = tmp_path / "h.csv"  # without a header nothing can be read
    bad_header.write_bytes(b"key,pa\xffth,tags\nk,p,#cat\n")
    with pytest.raises(ManifestError, match=r"h\.csv: line 1: header: not valid UTF-8"):
        read_manifest(str(bad_header))
    bad_gz = tmp_path / "m.jsonl.gz"
    bad_gz.write_bytes(b"not gzip")
    with pytest.raises(ManifestError, match="not a valid gzip"):
        read_manifest(str(bad_gz))
    with pytest.raises(ManifestError, match="unknown manifest type"):
        read_manifest(str(_touch(tmp_path / "m.xml")))
    with pytest.raises(ManifestError, match="no such manifest"):
        list_manifest_files([str(tmp_path / "absent.parquet")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ManifestError, match="holds no manifest files"):
        list_manifest_files([str(tmp_path / "empty")])


def _touch(path):
    path.write_text("x")
    return path


def test_jsonl_rows_keep_their_positions_and_errors(tmp_path):
    path = tmp_path / "m.jsonl.gz"
    with gzip.open(path, "wt") as f:
        f.write('{"key": "a", "url": "http://x/1.jpg", "tags": "#cat #dog"}\n')
        f.write("[1, 2]\n")
        f.write('{"key": "b", "path": "p", "tags": ["#cat", 7]}\n')
    rows = read_manifest(str(path)).to_pylist()
    assert [r["row"] for r in rows] == [0, 1, 2]
    assert rows[0]["tags"] == ["#cat", "#dog"] and rows[0]["row_error"] is None
    assert "line 2: not a JSON object" in rows[1]["row_error"]
    assert rows[2]["row_error"] == "bad_tags: a tag is a int, not a string"


def test_memory_fsspec_manifest():
    import fsspec

    with fsspec.open("memory://weakly-test/m.jsonl", "w") as f:
        f.write('{"key": "a", "path": "memory://x.jpg", "tags": ["#cat"]}\n')
    files = list_manifest_files(["memory://weakly-test"])
    assert files == ["memory:///weakly-test/m.jsonl"] or files[0].endswith("weakly-test/m.jsonl")
    assert read_manifest(files[0]).num_rows == 1
