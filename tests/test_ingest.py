"""`weakly ingest` end to end on a real local Ray, real files and a real loopback HTTP server."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import shutil
import tarfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import webdataset as wds
from ingest_fixtures import LoopbackServer, encode, image_files, output_digest, photo

from pipeline.dedup import EvalIndex
from pipeline.fetch import FetchConfig
from pipeline.images import ImageConfig
from pipeline.ingest import IngestConfig, RunOptions, ingest
from weakly.synth import synth
from weakly_base.index_tables import read_index
from weakly_base.shard_format import FORMAT_VERSION

QUIET = RunOptions(progress=False)


def _config(lexicon_dir, **kw) -> IngestConfig:
    kw.setdefault("shard_size", 20)
    kw.setdefault("chunk_rows", 16)
    return IngestConfig(lexicon_dir=str(lexicon_dir), **kw)


@pytest.fixture(scope="module")
def synth_data(tmp_path_factory, lexicon_dir):
    root = tmp_path_factory.mktemp("synth")
    result = synth(80, root / "train", root / "eval", max_px=700, eval_images=8, planted_fraction=0.15,
                   lexicon_dir=str(lexicon_dir))  # fmt: skip
    index = EvalIndex.build({"synth-eval": str(root / "eval")})
    index.save(root / "eval.idx")
    return root, result


@pytest.fixture(scope="module")
def ingested(synth_data, lexicon_dir, tmp_path_factory):
    """`ingested(**config)`: the synth manifest ingested once per config for this module, for
    the tests that only read an output; a test that changes one works on a copy. Checked
    unchanged at teardown."""
    root, _ = synth_data
    done: dict[tuple, tuple[Path, dict]] = {}

    def get(**kw) -> Path:
        key = tuple(sorted(kw.items()))
        if key not in done:
            out = tmp_path_factory.mktemp("ingested") / "out"
            manifest = [str(root / "train" / "manifest.parquet")]
            ingest(manifest, out, _config(lexicon_dir, **kw), QUIET)
            done[key] = (out, _all_files(out))
        return done[key][0]

    yield get
    for out, files in done.values():
        assert _all_files(out) == files, f"a test changed the shared ingest output {out}"


def _all_files(out: Path) -> dict[str, str]:
    return {
        str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(out.rglob("*"))
        if p.is_file()
    }


def test_synth_ingest_dedup_and_format(ray_local, synth_data, lexicon_dir, tmp_path):
    root, result = synth_data
    out = tmp_path / "out"
    config = _config(lexicon_dir, eval_index=str(root / "eval.idx"))
    summary = ingest([str(root / "train" / "manifest.parquet")], out, config, QUIET)

    assert summary.input_rows == 80 == summary.written + summary.rejected
    # --profile's phases: a small pass 1 ran in a driver thread alongside Ray start
    assert {"ray start", "lexicon load", "pass 1: read", "pass 2", "shards", "index"} <= set(
        summary.phases
    )
    assert summary.phases["pass 1: read"].get("overlapped") and "job total" in summary.profile()
    assert sum(t["wall"] for t in summary.phases.values() if not t.get("overlapped")) <= (
        summary.seconds
    )
    matches = read_index(out, "eval_matches")
    removed = set(matches["key"].to_pylist())
    manifest = pq.read_table(root / "train" / "manifest.parquet").to_pylist()
    planted = {r["key"] for r in manifest if r["planted_from"]}
    assert planted and removed == planted  # every planted copy caught, nothing else removed
    assert summary.rejects_by_reason.get("eval_near_copy") == len(planted)

    dataset = json.loads((out / "dataset.json").read_text())
    assert (
        dataset["format_version"] == FORMAT_VERSION
        and dataset["totals"]["written"] == summary.written
    )
    wnids = dataset["vocabulary"]["wnids"]
    assert len(wnids) == 1000 and wnids == sorted(wnids)

    shards = read_index(out, "shards").to_pylist()
    samples = read_index(out, "samples").to_pylist()
    assert sum(s["n"] for s in shards) == len(samples) == summary.written
    seen = 0
    for shard in shards:
        path = out / shard["file"]
        assert (path.parent / path.name.replace(".tar", ".stats.json")).exists()
        assert hashlib.sha256(path.read_bytes()).hexdigest() == shard["sha256"]
        with tarfile.open(path) as tar:
            names = tar.getnames()
            members = tar.getmembers()
            assert all(m.mtime == 0 and m.uid == 0 for m in members)
        # each sample's index range: its .jpg header to the end of its .json's padded data
        ranges = {
            s["key"]: (s["offset"], s["size"]) for s in samples if s["shard"] == shard["file"]
        }
        assert ranges == {
            jpg.name[:-4]: (jpg.offset, meta.offset_data + -(-meta.size // 512) * 512 - jpg.offset)
            for jpg, meta in zip(members[::2], members[1::2], strict=True)
        }
        keys = [n.rsplit(".", 1)[0] for n in names]
        assert keys[::2] == keys[1::2] and keys[::2] == sorted(keys[::2])  # contiguous, sorted
        weights = []
        for sample in wds.WebDataset(str(path), shardshuffle=False):
            meta = json.loads(sample["json"])
            assert (
                meta["labels"] == sorted(wnids.index(w) for w in meta["wnids"]) and meta["k"] >= 1
            )
            assert min(len(sample["jpg"]), 1) == 1
            weights.append(meta["weight"])
            seen += 1
        assert max(weights) <= 2.0 * min(weights) + 1e-9  # weight-stratified
        assert shard["weight_sum"] == pytest.approx(sum(weights))
    assert seen == summary.written


def test_two_runs_give_identical_bytes(ray_local, synth_data, lexicon_dir, tmp_path):
    root, _ = synth_data
    manifest = [str(root / "train" / "manifest.parquet")]
    config = _config(lexicon_dir, eval_index=str(root / "eval.idx"), chunk_rows=8)
    ingest(manifest, tmp_path / "a", config, QUIET)
    ingest(manifest, tmp_path / "b", config, QUIET)
    a, b = output_digest(tmp_path / "a"), output_digest(tmp_path / "b")
    assert a == b and any(k.startswith("shards/") for k in a)


def test_resume_finishes_only_what_is_missing(
    ray_local, synth_data, ingested, lexicon_dir, tmp_path
):
    """A run cut short (parts and a shard gone, dataset.json missing) completes identically."""
    root, _ = synth_data
    manifest = [str(root / "train" / "manifest.parquet")]
    config = _config(lexicon_dir, chunk_rows=8)
    clean = ingested(chunk_rows=8)
    out = tmp_path / "resumed"
    shutil.copytree(clean, out)  # a finished run of the same config, then damaged
    parts = sorted((out / "_work" / "done" / "f000000").glob("c??????.json"))  # chunk markers
    assert len(parts) >= 4
    for part in parts[::2]:
        part.unlink()  # chunks a killed run never finished (their bucket files may remain)
    (out / "dataset.json").unlink()
    victim = sorted((out / "shards").glob("*.tar"))[0]
    victim.with_name(victim.name.replace(".tar", ".stats.json")).unlink()  # uncommitted
    victim.write_bytes(victim.read_bytes()[:700])  # and truncated, as after a kill
    kept = {p.name: p.stat().st_mtime_ns for p in parts[1::2]}
    ingest(manifest, out, config, QUIET)
    assert output_digest(out) == output_digest(clean)
    assert {p.name: p.stat().st_mtime_ns for p in parts[1::2]} == kept  # done chunks not redone


def test_changed_config_needs_overwrite(ray_local, synth_data, ingested, lexicon_dir, tmp_path):
    root, _ = synth_data
    manifest = [str(root / "train" / "manifest.parquet")]
    shutil.copytree(ingested(), tmp_path / "o")  # a finished run with the default config
    with pytest.raises(ValueError, match="different config; use --overwrite"):
        ingest(manifest, tmp_path / "o", _config(lexicon_dir, shard_size=7), QUIET)
    summary = ingest(
        manifest,
        tmp_path / "o",
        _config(lexicon_dir, shard_size=7),
        RunOptions(overwrite=True, progress=False),
    )
    shards = read_index(tmp_path / "o", "shards")
    assert max(shards["n"].to_pylist()) <= 7 and summary.written == sum(shards["n"].to_pylist())


def test_every_bad_input_is_rejected_with_its_reason(ray_local, lexicon_dir, tmp_path):
    files = image_files(tmp_path / "img")
    served = {name: path.read_bytes() for name, path in files.items()}
    with LoopbackServer(served) as server:
        rows = [
            {"key": "ok-jpg", "path": str(files["good.jpg"]), "tags": ["#BrownBear", "#instagood"]},
            {"key": "ok-big", "path": str(files["big.jpg"]), "tags": "#goldenretriever, #dog"},
            {"key": "ok-cmyk", "path": str(files["cmyk.jpg"]), "tags": ["#espresso"]},
            {"key": "ok-16bit", "path": str(files["grey16.png"]), "tags": ["#goose"]},
            {"key": "ok-palette", "path": str(files["palette.png"]), "tags": ["#geese"]},
            {"key": "ok-alpha", "path": str(files["alpha.png"]), "tags": ["#Samoyed"]},
            {"key": "ok-webp", "path": str(files["webp.webp"]), "tags": ["#samoyeds"]},
            {"key": "ok-gif", "path": str(files["animated.gif"]), "tags": ["#tabby"]},
            {"key": "ok-rotated", "path": str(files["rotated.jpg"]), "tags": ["#tabby"]},
            {"key": "ok-url", "url": f"{server.url}/img/good.jpg", "tags": ["#tabby"]},
            {"key": "a.b/c d", "path": str(files["good.jpg"]), "tags": ["#tabby"]},
            {"key": "truncated", "path": str(files["truncated.jpg"]), "tags": ["#tabby"]},
            {"key": "zero", "path": str(files["zero.jpg"]), "tags": ["#tabby"]},
            {"key": "text", "path": str(files["text.jpg"]), "tags": ["#tabby"]},
            {"key": "svg", "path": str(files["vector.svg"]), "tags": ["#tabby"]},
            {"key": "tiny", "path": str(files["tiny.png"]), "tags": ["#tabby"]},
            {"key": "bomb", "path": str(files["bomb.png"]), "tags": ["#tabby"]},
            {"key": "strip", "path": str(files["strip.jpg"]), "tags": ["#tabby"]},
            {"key": "missing", "path": str(tmp_path / "nope.jpg"), "tags": ["#tabby"]},
            {"key": "u404", "url": f"{server.url}/img/nope.jpg", "tags": ["#tabby"]},
            {"key": "u500", "url": f"{server.url}/500", "tags": ["#tabby"]},
            {"key": "uslow", "url": f"{server.url}/slow", "tags": ["#tabby"]},
            {"key": "uhtml", "url": f"{server.url}/html", "tags": ["#tabby"]},
            {"key": "ufile", "url": f"{server.url}/to-file", "tags": ["#tabby"]},
            {"key": "uloop", "url": f"{server.url}/loop", "tags": ["#tabby"]},
            {"key": "uliar", "url": f"{server.url}/liar", "tags": ["#tabby"]},
            {"key": "ustream", "url": f"{server.url}/stream", "tags": ["#tabby"]},
            {"key": "uftp", "url": "ftp://127.0.0.1/x.jpg", "tags": ["#tabby"]},
            {"key": "notags", "path": str(files["good.jpg"]), "tags": None},
            {"key": "emptytags", "path": str(files["good.jpg"]), "tags": []},
            {
                "key": "junktags",
                "path": str(files["good.jpg"]),
                "tags": ["#instagood", "#2024", "#🔥"],
            },
            {"key": "outofvocab", "path": str(files["good.jpg"]), "tags": ["#sofa"]},
            {"key": "noimage", "path": None, "url": None, "tags": ["#tabby"]},
            {"key": "ok-jpg", "path": str(files["good.jpg"]), "tags": ["#tabby"]},
        ]
        manifest = tmp_path / "rows.jsonl"
        lines = [json.dumps(r) for r in rows]
        lines.insert(5, "{this is not json")
        manifest.write_text("\n".join(lines) + "\n")
        binary = tmp_path / "binary.parquet"
        pq.write_table(
            pa.table({"key": ["nonutf8"], "path": [str(files["good.jpg"])],
                      "tags": pa.array([[b"#tabby", b"\xff\xfe"]], pa.list_(pa.binary()))}),
            binary,
        )  # fmt: skip
        broken = tmp_path / "broken.parquet"
        broken.write_bytes(b"PAR1 this is not parquet")
        config = _config(
            lexicon_dir,
            image=ImageConfig(image_size=64, max_pixels=4_000_000, max_aspect=6.0),
            fetch=FetchConfig(timeout=1.0, deadline=4.0, retries=1, backoff=0.1, max_bytes=1 << 20),
        )
        out = tmp_path / "out"
        summary = ingest([str(manifest), str(binary), str(broken)], out, config, QUIET)
        assert server.hits["/500"] == 2  # retried once, then given up

    rejects = {r["key"] or r["source"]: r for r in read_index(out, "rejects").to_pylist()}
    reasons = {k: r["reason"] for k, r in rejects.items()}
    expected = {
        "truncated": "corrupt_image", "zero": "empty_file", "text": "not_an_image",
        "svg": "not_an_image", "tiny": "too_small", "bomb": "too_many_pixels", "strip": "bad_aspect",
        "missing": "missing_file", "u404": "http_404", "u500": "http_500", "uslow": "timeout",
        "uhtml": "not_an_image", "ufile": "bad_redirect", "uloop": "redirect_loop", "uliar": "too_large",
        "ustream": "too_large", "uftp": "bad_scheme", "notags": "no_tags", "emptytags": "no_tags",
        "junktags": "no_known_tags", "outofvocab": "out_of_vocabulary", "noimage": "no_image",
        "ok-jpg": "duplicate_key", "nonutf8": "bad_tags", str(broken): "bad_manifest",
    }  # fmt: skip
    for key, reason in expected.items():
        assert reasons.get(key) == reason, (key, rejects.get(key))
    bad_json = [r for r in rejects.values() if r["reason"] == "bad_row"]
    assert len(bad_json) == 1 and "rows.jsonl: line 6: not valid JSON" in bad_json[0]["detail"]
    assert rejects[str(broken)]["row"] == -1 and "broken.parquet" in rejects[str(broken)]["detail"]
    assert all(r["detail"] for r in rejects.values())  # every reject says what was wrong

    written = {s["key"] for s in read_index(out, "samples").to_pylist()}
    sanitised = [k for k in written if k.startswith("a_b_c_d-")]
    assert len(sanitised) == 1
    assert written - set(sanitised) == {
        "ok-jpg", "ok-big", "ok-cmyk", "ok-16bit", "ok-palette", "ok-alpha", "ok-webp", "ok-gif",
        "ok-rotated", "ok-url",
    }  # fmt: skip
    total_rows = len(rows) + 1 + 1 + 1  # + the bad JSON line, the binary row, the broken file
    assert summary.input_rows == total_rows == summary.written + summary.rejected

    metas = {}
    for shard in (out / "shards").glob("*.tar"):
        for sample in wds.WebDataset(str(shard), shardshuffle=False):
            meta = json.loads(sample["json"])
            metas[meta["key"]] = (meta, sample["jpg"])
    assert metas[sanitised[0]][0]["orig_key"] == "a.b/c d"
    rotated, data = metas["ok-rotated"]
    assert rotated["height"] > rotated["width"]  # EXIF orientation applied
    from PIL import Image

    big = Image.open(io.BytesIO(metas["ok-big"][1]))
    assert big.format == "JPEG" and min(big.size) == 64 and big.mode == "RGB"
    assert metas["ok-jpg"][0]["wnids"] == ["n02132136"]  # the duplicate's tags never leak in
    assert len(metas["ok-big"][0]["wnids"]) == 1  # 'dog' is not an IN-1k synset


def test_manifest_formats_and_inline_images(ray_local, lexicon_dir, tmp_path):
    good = encode(photo(0), "JPEG")
    path = tmp_path / "g.jpg"
    path.write_bytes(good)
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "a.csv").write_text(f"key,path,tags\nc1,{path},#tabby #goose\n")
    with gzip.open(tmp_path / "m" / "b.tsv.gz", "wt") as f:
        f.write(f"key\tpath\ttags\nt1\t{path}\t#tabby,#goose\nt2\t{path}\t\nt3\t{path}\n")
    (tmp_path / "m" / "c.jsonl").write_text(
        json.dumps({"key": "j1", "path": str(path), "tags": ["#goose"]}) + "\n"
    )
    pq.write_table(pa.table({"key": ["p1"], "image": [good], "tags": [["#tabby"]], "camera": ["x100"]}),
                   tmp_path / "m" / "d.parquet")  # fmt: skip
    (tmp_path / "m" / "notes.txt").write_text("ignored: not a manifest")
    config = _config(lexicon_dir, columns=_columns(extra=("camera",)))
    out = tmp_path / "out"
    summary = ingest([str(tmp_path / "m")], out, config, QUIET)
    assert summary.written == 4 and summary.rejects_by_reason == {"no_tags": 1, "bad_row": 1}
    metas = {}
    for shard in (out / "shards").glob("*.tar"):
        for sample in wds.WebDataset(str(shard), shardshuffle=False):
            meta = json.loads(sample["json"])
            metas[meta["key"]] = meta
    assert set(metas) == {"c1", "t1", "j1", "p1"}
    assert metas["t1"]["k"] == 2 and metas["p1"]["extra"] == {"camera": "x100"}
    assert metas["p1"]["source"].startswith("inline:") and metas["p1"]["source"].endswith(
        "d.parquet:0"
    )


def _columns(**kw):
    from pipeline.manifest import Columns

    return Columns(**kw)


def test_trainer_reads_what_ingest_writes(ray_local, ingested, tmp_path):
    """The two halves meet only at the documented format: ingest output -> weakly train."""
    import itertools

    from train.data import iter_sample_keys

    out = ingested()  # read only
    written = set(read_index(out, "samples")["key"].to_pylist())
    totals = json.loads((out / "dataset.json").read_text())["totals"]
    assert totals["written"] == len(written) and totals["input_rows"] == 80
    keys = list(itertools.islice(iter_sample_keys(str(out), seed=3), 200))
    assert len(keys) == 200 and set(keys) <= written and len(set(keys)) > len(written) // 3
    from weakly.cli import main

    run = tmp_path / "run"
    argv = ["train", "--data", str(out), "--model", "tiny", "--out", str(run), "--steps", "3",
            "--batch-size", "8", "--device", "cpu", "--image-size", "48", "--workers", "0"]  # fmt: skip
    assert main(argv) == 0
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert metrics[-1]["step"] == 3 and metrics[-1]["loss"] > 0


def test_shard_writer_indexes_exactly_what_each_tar_holds(tmp_path):
    """Each shard's samples-index part is written by the task that writes the tar, from the
    same rows: same keys in the same order, the shard's split and path, the rows' labels,
    weights and hashes; the bucket's shards part lists every tar; the driver refuses totals
    that do not add up."""
    import tarfile

    from pipeline.buckets import BUCKET_SCHEMA, write_bucket
    from pipeline.index_writer import Pass2Totals, check_accounting
    from pipeline.parquet_io import put_parquet
    from pipeline.plan import Plan
    from pipeline.work_layout import bucket_part
    from weakly_base.index_tables import read_index, read_shard_samples
    from weakly_base.storage import Store

    store = Store.at(tmp_path / "ds")
    rows = []
    for c in range(2):
        keys = [f"k{c}{i}" for i in range(5)]
        part = pa.table(
            {"key": keys, "weight": [0.5 + i for i in range(5)],
             "meta": [json.dumps({"key": k, "labels": [i]}) for i, k in enumerate(keys)],
             "jpeg": [k.encode() * 10 for k in keys], "labels": [[i] for i in range(5)],
             "phash": pa.array([100 * c + i for i in range(5)], pa.uint64())},
            schema=BUCKET_SCHEMA,
        )  # fmt: skip
        put_parquet(store, bucket_part(2, 0, c), part)
        rows += part.to_pylist()
    totals = write_bucket(store, 2, 3, holdout=0.3)
    assert sum(t["samples"] for t in totals.values()) == 10 and set(totals) == {"train", "val"}
    by_key = {r["key"]: r for r in rows}
    shards = read_index(store, "shards").to_pylist()
    assert sum(s["n"] for s in shards) == 10
    for shard in shards:
        with tarfile.open(tmp_path / "ds" / shard["file"]) as tar:
            in_tar = [m.name[:-4] for m in tar.getmembers() if m.name.endswith(".jpg")]
        indexed = read_shard_samples(store, shard["file"]).to_pylist()
        assert [s["key"] for s in indexed] == in_tar == sorted(in_tar)
        for s in indexed:
            assert (s["split"], s["shard"]) == (shard["split"], shard["file"])
            row = by_key[s["key"]]
            assert (s["labels"], s["weight"], s["phash"]) == (row["labels"], row["weight"],
                                                               row["phash"])  # fmt: skip

    plan = Plan(files=["m"], rows=[10], live=[10], vocab="in1k", vocabulary=[], names=[],
                counts=[], weighting={}, reference=1.0, buckets=[2], rejects_by_reason={},
                partitions=1)  # fmt: skip
    done = Pass2Totals()
    done.add_chunk({"rows": 10, "written": {"2": 10}, "rejects": {}, "matches": {}})
    done.add_bucket(totals)
    assert check_accounting(plan, done) == (10, 0)
    done.add_bucket({"train": {"samples": 1, "shards": 1, "weight_sum": 1.0, "bytes": 1}})
    with pytest.raises(RuntimeError, match="row accounting broken"):
        check_accounting(plan, done)
