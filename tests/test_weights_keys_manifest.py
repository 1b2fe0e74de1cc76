"""Pure pieces of the ingest job: weights, buckets, keys, manifest parsing."""

from __future__ import annotations

import gzip
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from one_row_reference import duplicate_of, image_weight, synset_weights

from pipeline.keys import sanitise_key
from pipeline.label_plan import apply_label_noise
from pipeline.manifest import ManifestError, list_manifest_files, read_manifest
from pipeline.weights import WeightConfig
from weakly_base.shard_format import KEY_MAX_LEN, KEY_RE, weight_bucket

COUNTS = {"a": 100, "b": 4, "c": 25}


def test_inv_sqrt_weights_by_hand():
    cfg = WeightConfig("inv-sqrt", "max", rare_threshold=5, rare_upsample=100)
    per = synset_weights(COUNTS, cfg)
    assert per == {"a": 0.1, "b": 0.5, "c": 0.2}
    assert image_weight(["a"], per, COUNTS, cfg) == pytest.approx(0.1)
    assert image_weight(["a", "c"], per, COUNTS, cfg) == pytest.approx(0.2)  # max over tags
    assert image_weight(["a", "b"], per, COUNTS, cfg) == pytest.approx(50.0)  # b is rare: x100


def test_mean_reducer_sqrt_and_natural_by_hand():
    mean = WeightConfig("inv-sqrt", "mean", rare_threshold=0)
    per = synset_weights(COUNTS, mean)
    assert image_weight(["a", "c"], per, COUNTS, mean) == pytest.approx(0.15)
    sqrt = WeightConfig("sqrt", "max", rare_threshold=5)
    assert image_weight(["b"], synset_weights(COUNTS, sqrt), COUNTS, sqrt) == pytest.approx(
        0.5
    )  # no upsampling
    natural = WeightConfig("natural")
    assert image_weight(["b"], synset_weights(COUNTS, natural), COUNTS, natural) == 1.0


def test_sqrt_sampling_law():
    """Per-image f^-1/2 makes a single-tag synset's sampled share grow like sqrt(f)."""
    counts = {"x": 10_000, "y": 100}
    per = synset_weights(counts, WeightConfig("sqrt"))
    share = {s: counts[s] * per[s] for s in counts}
    assert share["x"] / share["y"] == pytest.approx(math.sqrt(100))


def test_bad_weight_options():
    with pytest.raises(ValueError, match="--weighting"):
        WeightConfig("log")
    with pytest.raises(ValueError, match="--weight-reduce"):
        WeightConfig(reduce="min")
    with pytest.raises(ValueError, match="at least one label"):
        image_weight([], {}, {}, WeightConfig())


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


def test_label_noise_is_seeded_and_about_p():
    keys = [f"k{i}" for i in range(4000)]
    labels = [["a"]] * 4000
    counts = {"a": 10, "b": 45, "c": 45}
    first = apply_label_noise(labels, keys, counts, 0.25, seed=1)
    assert first == apply_label_noise(labels, keys, counts, 0.25, seed=1)
    assert first != apply_label_noise(labels, keys, counts, 0.25, seed=2)
    changed = sum(row != ["a"] for row in first) / len(first)
    # replaced with prob 0.25, and a replacement is "a" again with prob 0.1: 0.225 expected
    assert abs(changed - 0.225) < 0.03


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
