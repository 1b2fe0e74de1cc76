"""Hostile manifest files and the files they name: FIFOs, devices and directories are refused
without blocking; a gzip bomb or an oversized file is refused at the manifest cap without being
inflated; an http(s) `path` is fetched under the fetch deadline with the fetcher's reasons.
Real FIFOs (os.mkfifo), real /dev/zero, a real raw-socket HTTP server; nothing mocked.

The whole-job versions of these cases (rows in = written + rejected) are in
test_reliability_manifests.py::test_hostile_files_and_rows_through_ingest."""

from __future__ import annotations

import dataclasses
import os
import threading

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hostile_http import GOOD, HostileServer
from ingest_fixtures import gzip_bomb
from proc_tools import HeapPeak

from pipeline.fetch import FetchConfig, FetchError, fetch_one
from pipeline.manifest import (
    MAX_MANIFEST_BYTES,
    Columns,
    ManifestError,
    list_manifest_files,
    read_manifest,
)
from pipeline.pass1 import pass1_file

HTTP = FetchConfig(timeout=0.5, deadline=1.5, retries=1, backoff=0.1, max_bytes=1 << 20)
HANG = 60  # seconds after which a call counts as blocked (a guard, not a measurement)


def _without_blocking(call, fifos=()):
    """What `call()` returns or raises. If it is still running after HANG seconds it is
    blocked, most likely opening a FIFO: the FIFOs get a writer (which frees the reader) and
    the test fails, instead of hanging the suite."""
    out: dict = {}

    def run() -> None:
        try:
            out["value"] = call()
        except BaseException as exc:  # noqa: BLE001 - handed to the test as the result
            out["value"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(HANG)
    if thread.is_alive():
        for fifo in fifos:
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        thread.join(HANG)
        pytest.fail(f"blocked for {HANG} s")
    return out["value"]


def test_fifo_device_and_directory_paths_are_refused_without_blocking(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    (root / "good.jpg").write_bytes(b"image bytes")
    os.mkfifo(root / "pipe.jpg")
    (root / "folder.jpg").mkdir()
    (root / "link.jpg").symlink_to(root / "pipe.jpg")
    fifos = [root / "pipe.jpg"]
    plain, rooted = FetchConfig(), FetchConfig(path_root=str(root))
    cases = [
        (plain, str(root / "pipe.jpg")),
        (plain, "file://" + str(root / "pipe.jpg")),
        (plain, "/dev/zero"),
        (plain, str(root / "folder.jpg")),
        (rooted, "pipe.jpg"),
        (rooted, "link.jpg"),
        (rooted, "folder.jpg"),
    ]
    for config, path in cases:
        result = _without_blocking(lambda c=config, p=path: fetch_one((None, p, None), c), fifos)
        assert isinstance(result, FetchError) and result.reason == "not_a_file", (path, result)
    assert "FIFO" in fetch_one((None, "pipe.jpg", None), rooted).detail
    assert "character device" in fetch_one((None, "/dev/zero", None), plain).detail
    assert fetch_one((None, "good.jpg", None), rooted) == b"image bytes"
    assert fetch_one((None, str(root / "absent.jpg"), None), plain).reason == "missing_file"


def test_fifo_device_and_directory_manifests_are_bad_manifests(tmp_path, in1k_lexicon):
    folder = tmp_path / "manifests"
    folder.mkdir()
    (folder / "good.jsonl").write_text('{"key": "a", "path": "/x.jpg", "tags": ["cat"]}\n')
    os.mkfifo(folder / "pipe.jsonl")
    (folder / "zero.parquet").symlink_to("/dev/zero")
    (folder / "dir.csv").mkdir()
    fifos = [folder / "pipe.jsonl"]
    listed = list_manifest_files([str(folder)])
    assert sorted(os.path.basename(f) for f in listed) == [
        "good.jsonl",
        "pipe.jsonl",
        "zero.parquet",
    ]
    kinds = {"pipe.jsonl": "FIFO", "zero.parquet": "character device", "dir.csv": "directory"}
    for name, kind in kinds.items():
        url = str(folder / name)
        error = _without_blocking(lambda u=url: read_manifest(u), fifos)
        assert isinstance(error, ManifestError), (name, error)
        assert str(error) == f"{url}: a {kind}, not a regular file"
        table = _without_blocking(lambda u=url: pass1_file(u, Columns(), in1k_lexicon), fifos)
        assert table["row"].to_pylist() == [-1]  # one rejected row naming the file
        assert table["reject"][0].as_py() == f"bad_manifest: {url}: a {kind}, not a regular file"
    assert read_manifest(str(folder / "good.jsonl"))["key"].to_pylist() == ["a"]


def test_a_parquet_path_column_naming_devices_and_fifos(tmp_path):
    """Parquet rows take the columnar reader; their paths reach the same fetcher checks."""
    os.mkfifo(tmp_path / "pipe.jpg")
    (tmp_path / "good.jpg").write_bytes(b"image bytes")
    manifest = tmp_path / "m.parquet"
    paths = ["/dev/zero", str(tmp_path / "pipe.jpg"), str(tmp_path / "good.jpg")]
    pq.write_table(pa.table({"path": paths, "tags": [["cat"]] * 3}), manifest)
    rows = read_manifest(str(manifest))
    results = [
        _without_blocking(lambda p=p: fetch_one((None, p, None), FetchConfig()), [paths[1]])
        for p in rows["path"].to_pylist()
    ]
    assert [getattr(r, "reason", r) for r in results] == [
        "not_a_file",
        "not_a_file",
        b"image bytes",
    ]


def test_http_paths_are_fetched_under_the_deadline_with_the_fetchers_reasons():
    """A `path` that is an http URL used to go through fsspec's HTTP reader, which knows no
    deadline (601 s against a 2 s deadline, then `missing_file`)."""
    with HostileServer() as server:
        want = {
            "/silent": "timeout",  # accepts, never answers
            "/drip-body": "timeout",
            "/endless": "too_large",
            "/nothing-here": "http_404",
            "/to-file": "bad_redirect",
        }
        for route, reason in want.items():
            result = fetch_one((None, server.url + route, None), HTTP)
            assert isinstance(result, FetchError) and result.reason == reason, (route, result)
        assert fetch_one((None, server.url + "/good", None), HTTP) == GOOD
        assert fetch_one((None, "HTTP" + server.url[4:] + "/good", None), HTTP) == GOOD
        rooted = dataclasses.replace(HTTP, path_root=server.url + "/")
        assert fetch_one((None, "good", None), rooted) == GOOD
        assert fetch_one((None, "silent", None), rooted).reason == "timeout"
        assert fetch_one((None, "../silent", None), rooted).reason == "path_outside_root"


def test_a_gzip_bomb_is_refused_at_the_cap_without_inflating_it(tmp_path):
    bomb = tmp_path / "bomb.jsonl.gz"
    gzip_bomb(bomb, 1024)  # 1 GiB of JSON lines
    assert os.path.getsize(bomb) < 1200 << 10  # 1.1 MiB
    with HeapPeak() as heap, pytest.raises(ManifestError) as caught:
        read_manifest(str(bomb))
    peak = heap.peak
    assert f"over {MAX_MANIFEST_BYTES:,} bytes once decompressed" in str(caught.value)
    assert peak < 2 * MAX_MANIFEST_BYTES  # gzip.decompress held the whole GiB (3.2 GB RSS)
    small = tmp_path / "small.jsonl.gz"
    gzip_bomb(small, 2)
    assert read_manifest(str(small), max_bytes=2 << 20).num_rows == 2


def test_manifests_over_the_byte_and_row_caps_are_refused_whole(tmp_path):
    line = '{"key": "k%d", "path": "/x.jpg", "tags": ["cat"]}\n'
    text = tmp_path / "m.jsonl"
    text.write_text("".join(line % i for i in range(100)))
    size = text.stat().st_size
    with pytest.raises(ManifestError, match=f"{size:,} bytes, over the manifest cap"):
        read_manifest(str(text), max_bytes=size - 1)
    assert read_manifest(str(text), max_bytes=size).num_rows == 100
    with pytest.raises(ManifestError, match="100 lines, over the manifest cap"):
        read_manifest(str(text), max_rows=99)
    newlines = tmp_path / "n.csv"  # 3 bytes a line would still be 89M rows in 256 MiB
    newlines.write_bytes(b"key,path,tags\n" + b"\n" * 1000 + b"\r\n" * 1000 + b"\r" * 1000)
    with pytest.raises(ManifestError, match="3,001 lines, over the manifest cap"):
        read_manifest(str(newlines), max_rows=2999)
    assert read_manifest(str(newlines), max_rows=3000).num_rows == 0
    # Parquet: rows from the footer, before decoding; decoded columns against the byte cap (a
    # 100 kB value repeated 1000 times is a small file that decodes to 100 MB).
    wide = tmp_path / "w.parquet"
    pq.write_table(
        pa.table({"key": [f"k{i}" for i in range(1000)], "tags": ["t" * 100_000] * 1000}), wide
    )
    assert wide.stat().st_size < 1 << 20
    with pytest.raises(ManifestError, match="1,000 rows, over the manifest cap of 999"):
        read_manifest(str(wide), max_rows=999)
    with pytest.raises(ManifestError, match="columns decode to over 10,000,000 bytes"):
        read_manifest(str(wide), max_bytes=10_000_000)
    only_used = read_manifest(str(wide), Columns(tags="other"), max_bytes=10_000_000)
    assert only_used.num_rows == 1000  # columns the job does not use are never decoded
