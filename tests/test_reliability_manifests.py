"""Hostile manifests: oversized tags, millions of tags, NUL and control characters, path
traversal in keys and paths, non-UTF-8, JSON nested 100k deep, stray and unterminated CSV
quotes, oversized carried-through columns. Each costs its own row (or, an over-long tag, only
itself), with a reason, never the file and never a file outside the output folder; every job
keeps rows in = written + rejected. Hostile files (FIFOs, devices, bombs) are in
test_reliability_manifest_files.py, and all of it through one job in
`test_hostile_files_and_rows_through_ingest` below."""

from __future__ import annotations

import json
import os
import tarfile

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hostile_http import HostileServer
from ingest_fixtures import encode, gzip_bomb, photo

from pipeline.fetch import FetchConfig, FetchError, fetch_one, resolve_path
from pipeline.images import ImageConfig
from pipeline.ingest import IngestConfig, RunOptions, ingest
from pipeline.manifest import (
    MAX_EXTRA_BYTES,
    MAX_TAG_CHARS,
    MAX_TAGS_PER_ROW,
    Columns,
    read_manifest,
    tags_dropped,
)
from pipeline.manifest_text import (
    MAX_JSON_DEPTH,
    MAX_RECORD_LINES,
    careful_records,
    unquoted_records,
)
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
    assert reasons == {4: "path_outside_root", 5: "path_outside_root"}  # row 2: tag dropped
    assert summary.written == 5 and summary.input_rows == summary.written + summary.rejected
    names = []
    for tar_path in (tmp_path / "out" / "shards").glob("*.tar"):
        with tarfile.open(tar_path) as tar:
            names += tar.getnames()
    assert len(names) == 10
    assert all(MEMBER_RE.match(n) and KEY_RE.fullmatch(n.rpartition(".")[0]) for n in names)


def _nested(depth: int) -> str:
    """A JSON value `depth` levels deep (lists)."""
    return "[" * depth + "]" * depth


def test_json_nested_100k_deep_costs_its_row(tmp_path):
    """Arrow's JSON parser crashed the process (SIGSEGV) on such a line and Python's raised
    RecursionError; either way the Ray task died and the whole ingest with it."""
    lines = [
        '{"key": "a", "path": "/x", "tags": ["cat"]}',
        '{"key": "b", "path": "/x", "tags": ["cat"], "x": ' + _nested(100_000) + "}",
        '{"key": "c", "path": "/x", "tags": ["' + "[{" * 500 + '"]}',  # brackets in a string
        '{"key": "d", "path": "/x", "tags": ["cat"], "x": ' + _nested(MAX_JSON_DEPTH) + "}",
        '{"key": "e", "path": "/x", "tags": ["cat"], "x": ' + _nested(MAX_JSON_DEPTH - 1) + "}",
        '{"key": "f", "path": "/x", "tags": ["cat"]}',
    ]
    path = tmp_path / "m.jsonl"
    path.write_text("\n".join(lines) + "\n")
    table = read_manifest(str(path))
    deep = f"nested deeper than {MAX_JSON_DEPTH} levels"
    assert table["row_error"].to_pylist() == [
        None, f"bad_row: {path}: line 2: {deep}", None, f"bad_row: {path}: line 4: {deep}",
        None, None,
    ]  # fmt: skip
    assert table["key"].to_pylist() == ["a", None, "c", None, "e", "f"]
    assert len(table["tags"][2].as_py()[0]) == 1000
    extra = read_manifest(str(path), Columns(extra=("x",)))  # the carried column, one row
    assert json.loads(extra["extra"][4].as_py())["x"] == json.loads(_nested(MAX_JSON_DEPTH - 1))


def test_csv_and_tsv_bad_lines_cost_their_rows(tmp_path):
    """A stray quote, an unterminated quote or one Latin-1 byte used to turn the whole file
    into one `bad_manifest` row. Now each costs the row it starts on (by line number) and the
    rest is read; a record whose quoted field legitimately holds a line break is one row."""
    body = [
        b"key,path,tags",  # line 1
        b"a,/x.jpg,tabby",
        b'b,/x.jpg,"tab"by',  # 3: text after a closing quote
        b'c,/x.jpg,"tabby',  # 4: opens a quote that line 7 "closes"; then an error
        b"d,/x.jpg,tabby",
        b"e,/x.jpg,caf\xe9",  # 6: Latin-1
        b'f,/x.jpg,"tabby,',  # 7-8: one record, a line break inside quotes
        b'kitten"',
        b"g,/x.jpg,tabby,extra",  # 9: four fields
        b"h,/x.jpg,tabby",
        b"",
        b"i,/x.jpg,tabby",
        b'j,/x.jpg,"tabby',  # 13: still open at the end of the file
    ]
    for suffix, sep in (("csv", b","), ("tsv", b"\t")):
        path = tmp_path / f"m.{suffix}"
        path.write_bytes(b"\r\n".join(line.replace(b",", sep) for line in body))
        table = read_manifest(str(path))
        errors = dict(enumerate(table["row_error"].to_pylist()))
        bad = {i: e.removeprefix(f"bad_row: {path}: ") for i, e in errors.items() if e}
        sepchar = sep.decode()
        assert bad == {
            1: f"line 3: '{sepchar}' expected after '\"'",
            2: f"line 4: '{sepchar}' expected after '\"'",
            4: "line 6: not valid UTF-8",
            6: "line 9: 4 fields, header has 3",
            9: "line 13: a quoted field is still open at the end of the file",
        }, suffix
        assert table.num_rows == 10  # 11 data lines (and a blank), one record over two
        kept = [k for k, e in zip(table["key"].to_pylist(), errors.values(), strict=True) if not e]
        assert kept == ["a", "d", "f", "h", "i"]
        assert table["tags"][5].as_py() == ["tabby", "kitten"]
    # A quote that never closes swallows at most MAX_RECORD_LINES lines, then costs one row.
    path = tmp_path / "long.csv"
    rows = [f"k{i},/x.jpg,tabby" for i in range(2 * MAX_RECORD_LINES)]
    path.write_text("key,path,tags\n" + 'bad,/x.jpg,"tabby\n' + "\n".join(rows) + "\n")
    table = read_manifest(str(path))
    assert table["row_error"].to_pylist() == [
        f"bad_row: {path}: line 2: a quoted field is still open after {MAX_RECORD_LINES} lines"
    ] + [None] * len(rows)
    assert table["key"].to_pylist()[1:] == [f"k{i}" for i in range(len(rows))]
    # Files without a quote take a reader at C speed; it agrees with the careful one (CRLF,
    # a blank line, a short row, an empty field, a last line without its end, a bad byte).
    plain = b"key,path,tags\r\na,/x.jpg,tabby\r\n\r\nb,/x.jpg\r\nc,,tabby"
    fast = unquoted_records("p.csv", plain, ",")
    assert fast is not None and fast == careful_records("p.csv", plain, ",")
    assert [r.get("key") for r in fast] == ["a", None, "c"] and fast[2]["path"] is None
    for other in (plain + b'\n"', plain.replace(b"\r\n", b"\r"), plain + b"\n\xff"):
        assert unquoted_records("p.csv", other, ",") is None  # left to the careful reader


def test_an_oversized_extra_value_costs_its_row(tmp_path):
    """A 40 MB `--extra-columns` value went into the sample json, which the trainer then
    skipped as a member over its 32 MiB cap, without a word."""
    huge = "n" * (40 << 20)
    rows = [
        {"key": "a", "path": "/x", "tags": ["cat"], "note": huge},
        {"key": "b", "path": "/x", "tags": ["cat"], "note": "small", "other": 1},
        {"key": "c", "path": "/x", "tags": ["cat"]},
    ]
    jsonl = tmp_path / "m.jsonl"
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in rows))
    parquet = tmp_path / "m.parquet"  # the columnar reader
    pq.write_table(
        pa.table({k: [r.get(k) for r in rows] for k in ("key", "path", "tags", "note")}), parquet
    )
    size = len(json.dumps({"note": huge}))
    for path in (jsonl, parquet):
        table = read_manifest(str(path), Columns(extra=("note",)))
        assert table["row_error"].to_pylist() == [
            f"bad_extra: {size:,} bytes of JSON; at most {MAX_EXTRA_BYTES:,}",
            None,
            None,
        ], path
        assert table["extra"][0].as_py() is None  # not carried into pass 1's output either
        assert json.loads(table["extra"][1].as_py()) == {"note": "small"}
    row = {"key": "a", "path": "/x", "tags": ["cat"], "note": "é" * (MAX_EXTRA_BYTES // 2)}
    jsonl.write_text(json.dumps(row, ensure_ascii=False) + "\n")  # the cap counts UTF-8 bytes
    assert (
        read_manifest(str(jsonl), Columns(extra=("note",)))["row_error"][0]
        .as_py()
        .startswith("bad_extra: ")
    )


def test_an_overlong_tag_is_dropped_and_counted_not_its_row(tmp_path, in1k_lexicon):
    long = "x" * 100_000
    rows = [
        {"key": "kept", "path": "/x", "tags": ["tabby", long]},
        {"key": "only", "path": "/x", "tags": [long]},
        {"key": "two", "path": "/x", "tags": [long, long + "y"]},
        {"key": "text", "path": "/x", "tags": f"tabby,{long}"},
    ]
    jsonl = tmp_path / "m.jsonl"
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in rows))
    parquet = tmp_path / "m.parquet"  # list<string> through the columnar reader
    pq.write_table(
        pa.table({k: [r[k] for r in rows[:3]] for k in ("key", "path", "tags")}), parquet
    )
    want = [
        None,
        f"bad_tags: a tag of 100000 characters; at most {MAX_TAG_CHARS}",
        f"bad_tags: 2 tags of up to 100001 characters, none within {MAX_TAG_CHARS}",
        None,
    ]
    for path, n in ((jsonl, 4), (parquet, 3)):
        table = read_manifest(str(path))
        assert table["row_error"].to_pylist() == want[:n], path
        assert table["tags"][0].as_py() == ["tabby"]
        assert tags_dropped(table) == n - 2  # counted on kept rows only
        canonical = canonicalise_rows(table, in1k_lexicon)
        assert (
            canonical["wnids"][0].as_py() == ["n02123045"]
            and canonical["reject"][0].is_valid is False
        )


def test_hostile_files_and_rows_through_ingest(tmp_path, lexicon_dir, ray_local):
    """Every case of this file and test_reliability_manifest_files.py in one job: it ends,
    every row is written or in `index/rejects/` with its reason, rows in = written + rejected."""
    images = tmp_path / "images"
    images.mkdir()
    good = images / "good.jpg"
    good.write_bytes(encode(photo(0), "JPEG"))
    os.mkfifo(images / "pipe.jpg")
    (images / "folder.jpg").mkdir()
    folder = tmp_path / "manifests"
    folder.mkdir()
    with HostileServer() as server:
        note_rows = [
            {"path": str(good), "tags": ["#tabby"]},
            {"path": str(images / "pipe.jpg"), "tags": ["#tabby"]},
            {"path": "/dev/zero", "tags": ["#tabby"]},
            {"path": str(images / "folder.jpg"), "tags": ["#tabby"]},
            {"path": server.url + "/silent", "tags": ["#tabby"]},
            {"path": server.url + "/good", "tags": ["#tabby"]},
            {"path": str(good), "tags": ["#tabby"], "note": json.loads(_nested(5))},
            {"path": str(good), "tags": ["#tabby", "x" * 100_000]},
            {"path": str(good), "tags": ["y" * 100_000]},
            {"path": str(good), "tags": ["#tabby"], "note": "n" * (1 << 20)},
            {"path": str(good), "tags": ["#tabby"], "note": "small"},
        ]
        lines = [json.dumps({"key": f"r{i}", **r}) for i, r in enumerate(note_rows)]
        lines[6] = lines[6].replace(_nested(5), _nested(100_000))
        (folder / "rows.jsonl").write_text("\n".join(lines) + "\n")
        csv_rows = [
            b"key,path,tags", b"a,GOOD,#tabby", b'b,GOOD,"#tab"by', b'c,GOOD,"#tabby',
            b"d,GOOD,#tabby", b"e,GOOD,caf\xe9", b'f,GOOD,"#tabby,', b'kitten"',
            b"g,GOOD,#tabby,x", b"h,GOOD,#tabby", b"i,GOOD,#tabby", b'j,GOOD,"#tabby',
        ]  # fmt: skip
        (folder / "bad.csv").write_bytes(b"\n".join(csv_rows).replace(b"GOOD", str(good).encode()))
        os.mkfifo(folder / "pipe.jsonl")
        (folder / "zero.parquet").symlink_to("/dev/zero")
        gzip_bomb(folder / "bomb.jsonl.gz", 1024)
        pq.write_table(
            pa.table(
                {"key": ["p0", "p1"], "path": ["/dev/zero", str(good)], "tags": [["#tabby"]] * 2}
            ),
            folder / "paths.parquet",
        )
        config = IngestConfig(
            lexicon_dir=str(lexicon_dir),
            fetch=FetchConfig(timeout=0.5, deadline=1.5, retries=1, backoff=0.1),
            image=ImageConfig(image_size=64),
            columns=Columns(extra=("note",)),
        )
        out = tmp_path / "out"
        summary = ingest([str(folder)], out, config, RunOptions(progress=False))
    assert summary.input_rows == summary.written + summary.rejected
    rejects = {
        (os.path.basename(r["source"]), r["key"] or r["row"]): r["reason"]
        for r in read_index(out, "rejects").to_pylist()
    }
    assert rejects == {
        ("rows.jsonl", "r1"): "not_a_file",
        ("rows.jsonl", "r2"): "not_a_file",
        ("rows.jsonl", "r3"): "not_a_file",
        ("rows.jsonl", "r4"): "timeout",
        ("rows.jsonl", 6): "bad_row",  # the line had no key the parser could reach
        ("rows.jsonl", "r8"): "bad_tags",
        ("rows.jsonl", "r9"): "bad_extra",
        ("bad.csv", 1): "bad_row",
        ("bad.csv", 2): "bad_row",
        ("bad.csv", 4): "bad_row",
        ("bad.csv", 6): "bad_row",
        ("bad.csv", 9): "bad_row",
        ("pipe.jsonl", -1): "bad_manifest",
        ("zero.parquet", -1): "bad_manifest",
        ("bomb.jsonl.gz", -1): "bad_manifest",
        ("paths.parquet", "p0"): "not_a_file",
    }
    written = {"r0", "r5", "r7", "r10", "a", "d", "f", "h", "i", "p1"}
    assert summary.written == len(written) and summary.rejected == len(rejects)
    assert summary.input_rows == 11 + 10 + 1 + 1 + 1 + 2
    samples = {}
    for tar_path in (out / "shards").glob("*.tar"):
        with tarfile.open(tar_path) as tar:
            for member in tar.getmembers():
                if member.name.endswith(".json"):
                    meta = json.loads(tar.extractfile(member).read())
                    samples[meta["key"]] = meta
    assert set(samples) == written
    assert samples["r7"]["tags"] == ["#tabby"]  # the 100 kB tag dropped, the row kept
    assert samples["r10"]["extra"] == {"note": "small"}
    assert json.loads((out / "plan.json").read_text())["tags_dropped"] == 1
