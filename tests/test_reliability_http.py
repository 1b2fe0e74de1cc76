"""HTTP sources that misbehave: every row ends within its deadline, holds at most the byte cap,
and lands in the rejects table with a reason. A real raw-socket server on loopback."""

from __future__ import annotations

import json
import time

import pytest
from hostile_http import GOOD, HostileServer
from proc_tools import HeapPeak

from pipeline.fetch import FetchConfig, FetchError, fetch_url
from pipeline.images import ImageConfig, ImageReject, prepare_image
from pipeline.ingest import IngestConfig, RunOptions, ingest
from weakly_base.index_tables import read_index

CONFIG = FetchConfig(timeout=0.5, deadline=1.5, retries=1, backoff=0.1, max_bytes=1 << 20)
SLACK = 1.5  # thread scheduling on a loaded 2-core machine; the bound is what is tested

REJECTED = {
    "/drip-headers": "timeout",
    "/drip-body": "timeout",
    "/endless": "too_large",
    "/short": "short_body",
    "/hop": "redirect_loop",
    "/to-file": "bad_redirect",
    "/to-ftp": "bad_redirect",
    "/garbage": "http_error",
    "/silent": "timeout",
}


@pytest.fixture(scope="module")
def server():
    with HostileServer() as s:
        yield s


@pytest.mark.parametrize("path, reason", sorted(REJECTED.items()))
def test_each_hostile_source_is_bounded_and_named(server, path, reason):
    with HeapPeak() as heap, pytest.raises(FetchError) as caught:
        start = time.monotonic()  # after HeapPeak may have stopped this process's Ray
        fetch_url(server.url + path, CONFIG)
    peak = heap.peak
    elapsed = time.monotonic() - start
    assert caught.value.reason == reason, caught.value
    assert caught.value.detail
    assert elapsed < CONFIG.deadline + SLACK, f"{path} held the row {elapsed:.1f} s"
    assert peak < 3 * CONFIG.max_bytes, f"{path} used {peak} bytes"


def test_lies_that_still_parse_are_caught_by_the_decoder(server):
    assert fetch_url(server.url + "/good", CONFIG) == GOOD
    cut = fetch_url(server.url + "/long", CONFIG)  # the reader stops at the claimed length
    html = fetch_url(server.url + "/html", CONFIG)
    assert len(cut) == 700
    for data, reason in ((cut, "corrupt_image"), (html, "not_an_image")):
        with pytest.raises(ImageReject) as caught:
            prepare_image(data, ImageConfig(image_size=64))
        assert caught.value.reason == reason


def test_ingest_records_every_hostile_row(server, tmp_path, lexicon_dir, ray_local):
    paths = [*REJECTED, "/long", "/html", "/good"]
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(
        "".join(
            json.dumps({"key": f"r{i}", "url": server.url + p, "tags": ["#tabby"]}) + "\n"
            for i, p in enumerate(paths)
        )
    )
    config = IngestConfig(
        lexicon_dir=str(lexicon_dir), fetch=CONFIG, image=ImageConfig(image_size=64)
    )
    start = time.monotonic()
    summary = ingest([str(manifest)], tmp_path / "out", config, RunOptions(progress=False))
    elapsed = time.monotonic() - start
    rejects = {r["key"]: r["reason"] for r in read_index(tmp_path / "out", "rejects").to_pylist()}
    want = {f"r{i}": REJECTED.get(p) for i, p in enumerate(paths)}
    want.update({f"r{len(REJECTED)}": "corrupt_image", f"r{len(REJECTED) + 1}": "not_an_image"})
    del want[f"r{len(paths) - 1}"]
    assert rejects == want
    assert summary.written == 1 and summary.input_rows == len(paths)
    # All rows fetch in parallel threads: the job is bounded by one deadline, not their sum.
    assert elapsed < 60
