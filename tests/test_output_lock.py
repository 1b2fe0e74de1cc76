"""One writer per output: a second `weakly ingest` on the same `--out` is refused in one line
naming the holder, on a local folder (flock) and in a bucket (a lease object on a real moto S3
server, tests/s3_server.py); a SIGKILLed holder's lock is free at once and the rerun resumes
to the same bytes; a lease left by a run on another machine is taken over once it expires; a
holder whose lease was taken over stops; `--overwrite` keeps the lock it holds.

The first writer is a real process (its own local Ray), killed with SIGKILL; the second is a
real process too where that matters (a different pid holding a flock), else the CLI in-process.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from ingest_fixtures import output_digest

from pipeline.ingest import IngestConfig, RunOptions, prepare_out
from pipeline.lock_holder import Holder, OutputLocked, OutputLockLost
from pipeline.output_lease import ObjectLease, S3Backend
from pipeline.output_lock import hold_output
from pipeline.work_layout import WRITER_LOCK
from weakly.cli import main
from weakly_base.storage import Store

ROOT = Path(__file__).resolve().parents[1]
WEAKLY = [sys.executable, "-m", "weakly.cli"]
ELSEWHERE = Holder(host="elsewhere", pid=4242, started="2026-01-01T00:00:00Z",
                   node="another-machine/1", ticks=1, token="t")  # fmt: skip


class GatedServer:
    """Serves the synth images over loopback HTTP; while the gate is shut, images from row 6 on
    wait (up to 20 s, then they are served as usual): a first writer then commits two chunks
    and stays busy, alive, holding the output, for as long as a test needs it to."""

    def __init__(self, images: Path) -> None:
        self.gate = threading.Event()
        self.gate.set()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802
                name = self.path.rsplit("/", 1)[-1]
                if int(name[1:8]) >= 6:
                    outer.gate.wait(20)
                body = (images / name).read_bytes()
                try:
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except OSError:
                    pass  # a killed writer

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """(gate, manifest of 40 image URLs on a `GatedServer`)."""
    root = tmp_path_factory.mktemp("syn")
    assert main(["synth", "--n", "40", "--out", str(root / "syn"), "--max-px", "400"]) == 0
    table = pq.read_table(root / "syn" / "manifest.parquet", columns=["key", "path", "tags"])
    server = GatedServer(root / "syn" / "images")
    urls = [f"{server.url}/img/{os.path.basename(p)}" for p in table["path"].to_pylist()]
    manifest = root / "urls.parquet"
    pq.write_table(table.drop(["path"]).append_column("url", pa.array(urls)), manifest)
    yield server.gate, str(manifest)
    server.gate.set()
    server.httpd.shutdown()
    server.httpd.server_close()


def _argv(manifest: str, out: str, lexicon_dir, *extra: str) -> list[str]:
    return ["ingest", manifest, "--out", out, "--lexicon-dir", str(lexicon_dir),
            "--shard-size", "7", "--chunk-rows", "3", "--no-progress", *extra]  # fmt: skip


@pytest.fixture(scope="module")
def clean_run(source, tmp_path_factory, lexicon_dir, ray_local):
    out = tmp_path_factory.mktemp("clean") / "ds"
    assert main(_argv(source[1], str(out), lexicon_dir)) == 0
    return out


def _objects(store: Store) -> dict[str, bytes]:
    store.refresh()
    root = store.full("")
    names = [p[len(root) + 1 :] for p in sorted(store.fs.find(root)) if not p.endswith(".tmp")]
    return {name: store.get(name) for name in names}


def _start_writer(argv: list[str], env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [*WEAKLY, *argv, "--num-cpus", "1"],
        env={**os.environ, **(env or {}), "PYTHONUNBUFFERED": "1"}, cwd=ROOT,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True,
    )  # fmt: skip


def _wait_for_chunks(proc: subprocess.Popen, store: Store, at_least: int) -> None:
    """Until the writer has committed `at_least` pass-2 chunks (it holds the lock by then)."""
    deadline = time.monotonic() + 240
    while len(store.list("_work/done/f000000")) < at_least:
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        assert time.monotonic() < deadline, "the first writer made no progress"
        time.sleep(0.2)


def _kill(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _refusal_names(err: str, url: str, pid: int) -> None:
    assert len(err.strip().splitlines()) == 1, err
    assert f"{url} is being written by another run" in err
    assert f"host {socket.gethostname()}, pid {pid}, started 20" in err


def test_second_local_writer_is_refused_and_a_killed_holder_frees_the_lock(
    source, clean_run, lexicon_dir, tmp_path, capsys
):
    gate, synth_manifest = source
    gate.clear()
    out = tmp_path / "ds"
    store = Store.at(out)
    first = _start_writer(_argv(synth_manifest, str(out), lexicon_dir))
    try:
        _wait_for_chunks(first, store, 2)
        config_before = (out / "config.json").read_bytes()
        done_before = set(store.list("_work/done/f000000"))
        # the bug this prevents: a second run with --overwrite and another image size
        second = subprocess.run(
            [*WEAKLY, *_argv(synth_manifest, str(out), lexicon_dir, "--overwrite",
                             "--image-size", "96")],
            cwd=ROOT, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert second.returncode == 2
        _refusal_names(second.stderr, str(out), first.pid)
        assert second.stderr.startswith("weakly ingest: error: ")
        assert (out / "config.json").read_bytes() == config_before  # nothing deleted
        assert done_before <= set(store.list("_work/done/f000000"))
    finally:
        _kill(first)
        gate.set()
    assert not (out / "dataset.json").exists()
    capsys.readouterr()
    assert main(_argv(synth_manifest, str(out), lexicon_dir)) == 0  # the kernel freed the lock
    err = capsys.readouterr().err
    assert f"taking over the writer lock of a run that is gone (host {socket.gethostname()}, " \
        f"pid {first.pid}" in err and "its process has exited" in err  # fmt: skip
    assert output_digest(out) == output_digest(clean_run)
    assert not (out / WRITER_LOCK).exists()


def test_second_s3_writer_is_refused_and_a_killed_holders_lease_is_taken_over(
    s3_server, source, clean_run, lexicon_dir, capsys
):
    gate, synth_manifest = source
    gate.clear()
    url = s3_server.bucket("locked") + "/ds"
    store = Store.at(url, s3_server.storage_options)
    options = ["--storage-options", json.dumps(s3_server.storage_options)]
    first = _start_writer(_argv(synth_manifest, url, lexicon_dir), s3_server.env)
    try:
        _wait_for_chunks(first, store, 2)
        config_before = store.get("config.json")
        capsys.readouterr()
        argv = _argv(synth_manifest, url, lexicon_dir, "--overwrite", "--image-size", "96")
        assert main([*argv, *options]) == 2
        err = capsys.readouterr().err
        _refusal_names(err, url, first.pid)
        assert "running on this machine" in err
        assert store.get("config.json") == config_before
        assert len(store.list("_work/done/f000000")) >= 2
    finally:
        _kill(first)
        gate.set()
    assert store.exists(WRITER_LOCK)  # a killed process cannot delete its lease...
    capsys.readouterr()
    assert main([*_argv(synth_manifest, url, lexicon_dir), *options]) == 0
    err = capsys.readouterr().err  # ...but its pid is gone from this machine: taken at once
    assert f"pid {first.pid}" in err and "its process has exited" in err
    assert _objects(store) == _objects(Store.at(clean_run))  # the lease removed at the end


def test_ctrl_c_releases_the_lease(s3_server, source, lexicon_dir):
    """SIGINT to the writer's process group (what Ctrl-C in its terminal does): the run ends
    and deletes its lease, so no run anywhere has to wait for it to expire."""
    gate, synth_manifest = source
    gate.clear()
    url = s3_server.bucket("interrupted") + "/ds"
    store = Store.at(url, s3_server.storage_options)
    first = _start_writer(_argv(synth_manifest, url, lexicon_dir), s3_server.env)
    try:
        _wait_for_chunks(first, store, 2)
        assert store.exists(WRITER_LOCK)
        os.killpg(first.pid, signal.SIGINT)
        assert first.wait(timeout=120) == 130
        err = first.stderr.read().decode()
        assert "interrupted; rerun the same command to resume" in err, err[-2000:]
        assert "Traceback" not in err, err[-2000:]
    finally:
        if first.poll() is None:
            _kill(first)
        with contextlib.suppress(ProcessLookupError):  # Ray processes it left behind
            os.killpg(first.pid, signal.SIGKILL)
        gate.set()
    assert not store.exists(WRITER_LOCK)
    assert not store.exists("dataset.json") and store.exists("config.json")


def test_a_lease_left_on_another_machine_is_taken_over_once_it_expires(
    s3_server, source, lexicon_dir, capsys, ray_local
):
    """Its holder's pid means nothing here, so only the expiry (by the store's clock) says it
    is gone."""
    synth_manifest = source[1]
    url = s3_server.bucket("stale") + "/ds"
    store = Store.at(url, s3_server.storage_options)
    store.put(WRITER_LOCK, json.dumps({"holder": ELSEWHERE.to_dict(), "ttl": 2}).encode())
    argv = [*_argv(synth_manifest, url, lexicon_dir), "--plan-only",
            "--storage-options", json.dumps(s3_server.storage_options)]  # fmt: skip
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert "host elsewhere, pid 4242, started 2026-01-01T00:00:00Z, lease renewed" in err
    assert not store.exists("config.json")
    backend = S3Backend(store, WRITER_LOCK)
    while backend.read().age <= 2:
        time.sleep(0.2)
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert f"{url}: taking over the writer lock of a run that is gone (host elsewhere" in err
    assert "its lease was last renewed" in err
    assert store.exists("plan.json") and not store.exists(WRITER_LOCK)


def test_a_holder_whose_lease_was_taken_over_stops(s3_server):
    """A run paused longer than its lease (on another machine the lease is then fair game)
    finds out at its next renewal: the job's main thread is interrupted and ends in one line."""
    store = Store.at(s3_server.bucket("lost") + "/ds", s3_server.storage_options)
    said: list[str] = []
    lost = threading.Event()
    lease = ObjectLease(store, WRITER_LOCK, ttl=1.0, say=said.append, on_lost=lambda m: lost.set())
    lease.acquire()
    taker = json.dumps({"holder": ELSEWHERE.to_dict(), "ttl": 60}).encode()
    store.put(WRITER_LOCK, taker)
    assert lost.wait(30)
    with pytest.raises(OutputLockLost, match="was taken over by another run .host elsewhere"):
        lease.check()
    lease.release()
    assert store.get(WRITER_LOCK) == taker  # the new holder's lease is left alone

    store.remove(WRITER_LOCK)  # the taker is done
    with pytest.raises(OutputLockLost, match=r"taken over .* this run stops"):
        with hold_output(store, lease_seconds=1.0, say=said.append):
            store.remove(WRITER_LOCK)
            store.put(WRITER_LOCK, taker)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:  # a job waiting on Ray
                time.sleep(0.05)
    assert store.get(WRITER_LOCK) == taker


@pytest.mark.parametrize("where", ["local", "s3"])
def test_overwrite_keeps_the_lock_and_a_refused_run_leaves_nothing(where, s3_server, tmp_path):
    if where == "local":
        store = Store.at(tmp_path / "ds")
    else:
        store = Store.at(s3_server.bucket("overwrite") + "/ds", s3_server.storage_options)
    with hold_output(store, say=print):
        store.put("shards/old.tar", b"x")
        store.put("_work/done/f000000/c000000.json", b"{}")
        prepare_out(store, IngestConfig(), RunOptions(overwrite=True))
        assert store.exists(WRITER_LOCK) and store.exists("config.json")
        assert not store.exists("shards/old.tar")
        assert not store.exists("_work/done/f000000/c000000.json")
        with pytest.raises(OutputLocked, match="is being written by another run"):
            with hold_output(store, say=print):
                pass
    assert not store.exists(WRITER_LOCK)
    # a folder that is not an output: refused, and left as it was (no lock, no `_work/`)
    other = Store.at(tmp_path / "theirs") if where == "local" else store.child("theirs")
    other.put("notes.txt", b"someone else's")
    with hold_output(other, say=print), pytest.raises(ValueError, match="not empty"):
        prepare_out(other, IngestConfig(), RunOptions())
    assert _objects(other) == {"notes.txt": b"someone else's"}
    if where == "local":
        assert os.listdir(tmp_path / "theirs") == ["notes.txt"]
