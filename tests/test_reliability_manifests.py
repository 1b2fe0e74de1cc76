"""Hostile manifests: oversized tags, millions of tags, NUL and control characters, path
traversal in keys and paths, non-UTF-8. Each costs its own row, with a reason, never the file
and never a file outside the output folder."""

from __future__ import annotations

import json
import os
import tarfile

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from ingest_fixtures import encode, photo

from pipeline.fetch import FetchConfig, FetchError, fetch_one, resolve_path
from pipeline.ingest import IngestConfig, RunOptions, ingest
from pipeline.manifest import MAX_TAG_CHARS, MAX_TAGS_PER_ROW, read_manifest
from pipeline.pass1 import canonicalise_rows
from weakly_base.index_tables import read_index
from weakly_base.shard_format import KEY_RE, MEMBER_RE


def _errors(path) -> list[str | None]:
    return read_manifest(str(path))["row_error"].to_pylist()


def test_one_megabyte_tag_costs_its_row_not_the_csv(tmp_path):
    csv = tmp_path / "m.csv"
    csv.write_text("key,path,tags\na,/x.jpg," + "t" * 1_000_000 + "\nb,/y.jpg,cat\n")
    errors = _errors(csv)
    assert errors[0] == f"bad_tags: a tag of 1000000 characters; at most {MAX_TAG_CHARS}"
    assert errors[1] is None


def test_millions_of_tags_in_one_row(tmp_path):
    many = ["cat"] * 2_000_000
    rows = [
        {"key": "list", "path": "/x.jpg", "tags": many},
        {"key": "string", "path": "/x.jpg", "tags": " ".join(many)},
        {"key": "ok", "path": "/x.jpg", "tags": ["cat"] * MAX_TAGS_PER_ROW},
    ]
    path = tmp_path / "m.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    errors = _errors(path)
    assert errors[0] == f"bad_tags: 2000000 tags; at most {MAX_TAGS_PER_ROW}"
    assert errors[1].startswith("bad_tags: ") and errors[2] is None
    parquet = tmp_path / "m.parquet"
    pq.write_table(pa.table({"key": ["p"], "path": ["/x.jpg"], "tags": [many]}), parquet)
    assert _errors(parquet)[0] == f"bad_tags: 2000000 tags; at most {MAX_TAGS_PER_ROW}"


def test_non_utf8_line_costs_its_row_not_the_jsonl(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_bytes(
        b'{"key": "a", "path": "/x", "tags": ["cat"]}\n'
        b'{"key": "b\xff\xfe", "path": "/x", "tags": ["dog"]}\n'
        b'{"key": "c", "path": "/y", "tags": ["cat"]}\n'
    )
    table = read_manifest(str(path))
    assert table["key"].to_pylist() == ["a", None, "c"]
    assert table["row_error"].to_pylist()[1] == f"bad_row: {path}: line 2: not valid UTF-8"


def test_nul_and_control_characters_in_keys_and_tags(tmp_path, in1k_lexicon):
    path = tmp_path / "m.csv"
    path.write_text('key,path,tags\na\x00b,/x.jpg,ta\x00bby\n"c\x1b[31md\r",/y.jpg,tabby\n')
    table = canonicalise_rows(read_manifest(str(path)), in1k_lexicon)
    keys = table["key"].to_pylist()
    assert all(k.isascii() and k.replace("-", "").replace("_", "").isalnum() for k in keys)
    assert table["orig_key"].to_pylist() == ["a\x00b", "c\x1b[31md\r"]
    assert table["reject"].to_pylist() == [None, None]  # NUL dropped by tag normalisation
    assert table["wnids"].to_pylist() == [["n02123045"], ["n02123045"]]


def test_paths_are_confined_to_the_root(tmp_path):
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "a.jpg").write_bytes(b"inside")
    (tmp_path / "secret.jpg").write_bytes(b"outside")
    (root / "link.jpg").symlink_to(tmp_path / "secret.jpg")
    assert resolve_path("sub/a.jpg", str(root)) == str(root / "sub" / "a.jpg")
    assert resolve_path("sub/../sub/a.jpg", str(root)) == str(root / "sub" / "a.jpg")
    assert resolve_path("/etc/passwd", None) == "/etc/passwd"  # no root: paths as given
    hostile = [
        "../secret.jpg", "sub/../../secret.jpg", str(tmp_path / "secret.jpg"), "/etc/passwd",
        "link.jpg", "file:///etc/passwd", "memory://x.jpg",
    ]  # fmt: skip
    config = FetchConfig(path_root=str(root))
    for path in hostile:
        result = fetch_one((None, path, None), config)
        assert isinstance(result, FetchError) and result.reason == "path_outside_root", path
    assert fetch_one((None, "sub/a.jpg", None), config) == b"inside"
    assert fetch_one((None, "a\x00b", None), config).reason == "bad_path"
    for path in ("../x", "a/../../x", "/x", "s3://other/x"):
        with pytest.raises(FetchError):
            resolve_path(path, "memory://bucket/imgs")
    assert resolve_path("a/./b.jpg", "memory://bucket/imgs/") == "memory://bucket/imgs/a/b.jpg"


def test_hostile_manifest_through_ingest_writes_only_inside_out(tmp_path, lexicon_dir, ray_local):
    root = tmp_path / "images"
    root.mkdir()
    (root / "good.jpg").write_bytes(encode(photo(0), "JPEG"))
    (tmp_path / "private.jpg").write_bytes(encode(photo(1), "JPEG"))
    rows = [
        {"key": "../../escape", "path": "good.jpg", "tags": ["#tabby"]},
        {"key": "/abs/key", "path": "good.jpg", "tags": ["#tabby"]},
        {"key": "nul\x00key\x07", "path": "good.jpg", "tags": ["#tabby", "x" * 5000]},
        {"key": "ctl\nkey", "path": "good.jpg", "tags": ["#tabby"]},
        {"key": "up", "path": "../private.jpg", "tags": ["#tabby"]},
        {"key": "abs", "path": str(tmp_path / "private.jpg"), "tags": ["#tabby"]},
        {"key": "a" * 500, "path": "good.jpg", "tags": ["#tabby"]},
    ]
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    before = set(os.listdir(tmp_path))
    config = IngestConfig(lexicon_dir=str(lexicon_dir), fetch=FetchConfig(path_root=str(root)))
    summary = ingest([str(manifest)], tmp_path / "out", config, RunOptions(progress=False))
    assert set(os.listdir(tmp_path)) == before | {"out"}
    reasons = {r["row"]: r["reason"] for r in read_index(tmp_path / "out", "rejects").to_pylist()}
    assert reasons == {2: "bad_tags", 4: "path_outside_root", 5: "path_outside_root"}
    assert summary.written == 4
    names = []
    for tar_path in (tmp_path / "out" / "shards").glob("*.tar"):
        with tarfile.open(tar_path) as tar:
            names += tar.getnames()
    assert len(names) == 8
    assert all(MEMBER_RE.match(n) and KEY_RE.fullmatch(n.rpartition(".")[0]) for n in names)
