"""`Store` against a real S3-compatible server (moto, in its own process: `s3_server`) and a
local folder: the same contract on both, checked from outside where it matters (another
process writes, a pickled store reads in a subprocess, a writer is SIGKILLed mid-upload), and
each kind of bad input failing as one line that names the URL and the cause.
"""

from __future__ import annotations

import base64
import hashlib
import os
import pickle
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from ports import free_ports

from weakly_base.storage import (
    S3_CONFIG_DEFAULTS,
    S3_RETRY_DEFAULTS,
    StorageError,
    StorageNotFound,
    Store,
)

ROOT = Path(__file__).resolve().parents[1]
BACKENDS = ["local", "s3"]
# s3fs's pipe_file goes multipart from 2 x its 50 MiB part size: this is just over
BIG = 101 * 2**20


def new_bucket(s3_server) -> str:
    return s3_server.bucket(f"t-{uuid.uuid4().hex[:16]}")


@pytest.fixture(params=BACKENDS)
def backend(request) -> str:
    return request.param


@pytest.fixture
def store(backend, request, tmp_path) -> Store:
    """An empty dataset root `ds` in a fresh bucket or folder. On s3 a plain URL: endpoint and
    keys come from the environment, as a user's would."""
    if backend == "local":
        return Store.at(tmp_path / "ds")
    return Store.at(new_bucket(request.getfixturevalue("s3_server")) + "/ds")


def sibling(store: Store, name: str) -> Store:
    """A store next to `store`'s root (same bucket or folder)."""
    return Store(store.url.rsplit("/", 1)[0] + "/" + name, store.storage_options)


def run_python(code: str, *args: str, stdin: bytes = b"", env: dict | None = None) -> str:
    """Run `code` in a fresh interpreter that imports this checkout, in `env` (default: ours);
    its stdout, or fail with its stderr."""
    env = {**(os.environ if env is None else env), "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-c", code, *args],
        input=stdin,
        env=env,
        capture_output=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")[-3000:]
    return proc.stdout.decode()


def pickled(store: Store) -> bytes:
    return base64.b64encode(pickle.dumps(store))


STORE_FROM_STDIN = """
import base64, pickle, sys
store = pickle.loads(base64.b64decode(sys.stdin.buffer.read()))
"""


def assert_one_line(err: pytest.ExceptionInfo, url: str, *causes: str) -> None:
    message = str(err.value)
    assert "\n" not in message, message
    assert url in message, message
    for cause in causes:
        assert cause in message, message


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# -- the contract, on both backends ------------------------------------------------------------


def test_round_trip(store: Store) -> None:
    store.put("a/b.bin", b"\x00payload\xff")
    store.put("top.txt", b"t")
    assert store.get("a/b.bin") == b"\x00payload\xff"
    assert store.exists("a/b.bin") and store.size("a/b.bin") == 9
    assert store.list("a") == ["b.bin"]
    assert store.list("") == ["top.txt"]  # files directly under the root, not folder `a`
    with store.open("a/b.bin") as handle:
        assert handle.read() == b"\x00payload\xff"


def test_missing_object_and_folder(store: Store) -> None:
    store.put("present", b"1")
    assert not store.exists("absent") and store.size("absent") is None
    assert store.list("no-folder") == []
    with pytest.raises(StorageNotFound) as err:
        store.get("absent")
    assert_one_line(err, store.url_of("absent"), "not found")
    with pytest.raises(FileNotFoundError):  # open keeps the ordinary "not there" exception
        store.open("absent")


def test_overwrite_replaces_whole(store: Store) -> None:
    store.put("obj", os.urandom(10_000))
    store.put("obj", b"short")
    assert store.get("obj") == b"short"
    assert store.size("obj") == 5


def test_remove_tree_removes_that_folder_only(store: Store) -> None:
    """Object stores match prefixes: `run` must not take `run2` or `ds2` with it."""
    for rel in ("run/x", "run/sub/y", "run2/z", "keep"):
        store.put(rel, b"1")
    neighbour = sibling(store, "ds2")
    neighbour.put("n", b"1")

    store.remove_tree("run")
    assert not store.exists("run/x") and not store.exists("run/sub/y")
    assert store.list("run") == [] and store.list("run/sub") == []
    assert store.list("run2") == ["z"] and store.list("") == ["keep"]

    store.remove("run2/z")
    store.remove("run2/z")  # absent: not an error
    assert store.list("run2") == []

    store.remove_tree()
    assert store.list("") == [] and not store.exists("keep")
    assert neighbour.get("n") == b"1"


def test_other_process_writes_are_seen(store: Store) -> None:
    """s3fs caches listings per filesystem instance: after this process has listed `d`, an
    object another process adds, replaces or deletes must still show as it is now. The other
    process is a pickled copy of the store, so it also shows a Store travels (as to a Ray task)
    and reads what this process wrote."""
    store.put("d/a", b"old")
    store.put("d/c", b"c")
    assert store.list("d") == ["a", "c"]
    assert not store.exists("d/b") and store.size("d/a") == 3

    out = run_python(
        STORE_FROM_STDIN
        + "print(store.get('d/a').decode())\n"
        + "store.put('d/b', b'b'); store.put('d/a', b'newer'); store.remove('d/c')\n",
        stdin=pickled(store),
    )
    assert out.strip() == "old"
    assert store.exists("d/b") and not store.exists("d/c")
    assert store.size("d/a") == 5 and store.get("d/a") == b"newer"
    assert store.list("d") == ["a", "b"]


# -- s3 specifics ------------------------------------------------------------------------------


def test_options_alone_reach_the_server(s3_server, tmp_path: Path) -> None:
    """A store whose storage options name endpoint and keys needs nothing from the environment
    of the process it is unpickled in (a Ray worker started elsewhere)."""
    store = Store.at(new_bucket(s3_server) + "/ds", s3_server.storage_options)
    store.put("x", b"from parent")
    bare = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "AWS_EC2_METADATA_DISABLED": "1"}
    out = run_python(
        STORE_FROM_STDIN + "print(store.get('x').decode())", stdin=pickled(store), env=bare
    )
    assert out.strip() == "from parent"


def test_env_endpoint_is_honoured(s3_server) -> None:
    """AWS_ENDPOINT_URL alone (botocore reads it) points a plain s3:// store at the server."""
    url = new_bucket(s3_server)
    Store.at(url + "/ds").put("k", b"v")
    assert s3_server.client().get_object(Bucket=url[5:], Key="ds/k")["Body"].read() == b"v"


def test_s3_defaults_yield_to_user_settings(monkeypatch) -> None:
    """Store's fail-fast defaults fill gaps only: the user's config_kwargs win key by key, and
    retries named in the environment are not overridden by a Config (which botocore ranks
    above the environment)."""
    fs = Store.at("s3://b", {"config_kwargs": {"connect_timeout": 30}}).fs
    assert fs.config_kwargs == {"connect_timeout": 30, "retries": S3_RETRY_DEFAULTS}
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "10")
    fs = Store.at("s3://b", {"config_kwargs": {"read_timeout": 7}}).fs
    assert fs.config_kwargs == {**S3_CONFIG_DEFAULTS, "read_timeout": 7}


def test_missing_bucket(s3_server) -> None:
    store = Store.at(f"s3://no-such-bucket-{uuid.uuid4().hex[:8]}/ds")
    for action in (lambda: store.put("a", b"1"), store.check_writable, lambda: store.get("a")):
        with pytest.raises(StorageNotFound) as err:
            action()
        assert_one_line(err, store.url, "bucket does not exist")
    with pytest.raises(StorageError) as err:  # not [], which would read as "nothing done yet"
        store.list("shards")
    assert_one_line(err, store.url_of("shards"), "bucket", "does not exist")
    assert not store.exists("a")


CREDENTIALS_PROBE = """
import sys
from weakly_base.storage import Store, StorageError
store = Store.at(sys.argv[1])
for name, action in [("put", lambda: store.put("a", b"1")), ("list", lambda: store.list("")),
                     ("exists", lambda: store.exists("a")), ("get", lambda: store.get("a"))]:
    try:
        action()
        print(name, "no error")
    except StorageError as exc:
        print(exc)
"""


def test_missing_credentials(s3_server, tmp_path: Path) -> None:
    """No keys in the environment, no ~/.aws (HOME is empty), no instance metadata to ask."""
    url = new_bucket(s3_server) + "/ds"
    empty_home = tmp_path / "home"
    empty_home.mkdir()
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(empty_home),
        "AWS_ENDPOINT_URL": s3_server.endpoint,
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    lines = run_python(CREDENTIALS_PROBE, url, env=env).splitlines()
    assert len(lines) == 4, lines
    for line in lines:
        assert line.startswith("could not ") and url in line, line
        assert "no credentials found" in line, line


@pytest.mark.timeout(90)  # a hang is the failure this guards against; no timing asserted
def test_unreachable_endpoint_fails_fast() -> None:
    (port,) = free_ports(1)  # nothing listens there
    options = {"endpoint_url": f"http://127.0.0.1:{port}", "key": "k", "secret": "s"}
    store = Store.at("s3://bucket/ds", options)
    for action in (lambda: store.put("a", b"1"), lambda: store.list("")):
        with pytest.raises(StorageError) as err:
            action()
        assert_one_line(err, store.url, "storage endpoint unreachable", f"127.0.0.1:{port}")


def test_read_only_bucket(s3_server) -> None:
    """Keys that may read but not write (an IAM policy moto enforces inside `enforce_auth`)."""
    url = new_bucket(s3_server) + "/ds"
    Store.at(url).put("a", b"data")
    options = s3_server.read_only_options(f"reader-{uuid.uuid4().hex[:8]}")
    with s3_server.enforce_auth():
        store = Store.at(url, options)
        assert store.get("a") == b"data" and store.list("") == ["a"]
        for action in (lambda: store.put("b", b"1"), store.check_writable):
            with pytest.raises(StorageError) as err:
                action()
            assert_one_line(err, url, "permission denied")
    assert Store.at(url).list("") == ["a"]


def test_read_only_local_target(tmp_path: Path) -> None:
    """A folder under a regular file: fails for root too, unlike a chmod'ed folder."""
    (tmp_path / "file").write_text("not a folder")
    store = Store.at(tmp_path / "file" / "ds")
    for action in (lambda: store.put("a", b"1"), store.check_writable):
        with pytest.raises(StorageError) as err:
            action()
        assert_one_line(err, store.url, "Not a directory", str(tmp_path / "file"))


# -- a writer killed mid-put -------------------------------------------------------------------

# The writer stops at the last moment before its object would become visible (the multipart
# upload's completion on s3, the rename on a local disk), says so through `marker`, and waits
# there to be SIGKILLed: every byte is written, nothing is committed.
KILLED_WRITER = (
    STORE_FROM_STDIN
    + """
import os, time
marker, size = sys.argv[1], int(sys.argv[2])

def stall(*args, **kwargs):
    open(marker, "w").close()
    time.sleep(3600)

if store.is_local:
    os.fsync = stall
else:
    store.fs.s3.meta.events.register("before-call.s3.CompleteMultipartUpload", stall)
store.put("big.bin", os.urandom(2**20) * (size // 2**20))
"""
)


def kill_writer_before_commit(store: Store, marker: Path) -> None:
    """Start KILLED_WRITER, wait until it has written everything, SIGKILL it."""
    proc = subprocess.Popen(
        [sys.executable, "-c", KILLED_WRITER, str(marker), str(BIG)],
        stdin=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    proc.stdin.write(pickled(store))
    proc.stdin.close()
    deadline = time.monotonic() + 120
    while not marker.exists():
        if proc.poll() is not None:  # on s3: it finished with one PUT, or it failed
            pytest.fail(
                "the writer exited before its commit: " + proc.stderr.read().decode()[-3000:]
            )
        assert time.monotonic() < deadline, "the writer never reached its commit"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    proc.stderr.close()


def assert_absent_then_rerun(store: Store) -> None:
    assert not store.exists("big.bin")
    assert store.list("") == [] and store.size("big.bin") is None
    data = os.urandom(2**20) * (BIG // 2**20)
    store.put("big.bin", data)  # the rerun
    assert store.list("") == ["big.bin"] and store.size("big.bin") == BIG
    assert sha(store.get("big.bin")) == sha(data)


def test_killed_multipart_upload_leaves_no_object(s3_server, tmp_path: Path) -> None:
    url = new_bucket(s3_server)
    store = Store.at(url + "/ds")
    kill_writer_before_commit(store, tmp_path / "stalled")

    uploads = s3_server.client().list_multipart_uploads(Bucket=url[5:]).get("Uploads", [])
    assert [u["Key"] for u in uploads] == ["ds/big.bin"]  # it was multipart, left incomplete
    parts = s3_server.client().list_parts(
        Bucket=url[5:], Key="ds/big.bin", UploadId=uploads[0]["UploadId"]
    )
    assert sum(p["Size"] for p in parts["Parts"]) == BIG  # all of it sent, none of it visible
    assert_absent_then_rerun(store)


def test_killed_local_writer_leaves_no_object(tmp_path: Path) -> None:
    store = Store.at(tmp_path / "ds")
    kill_writer_before_commit(store, tmp_path / "stalled")
    leftover = tmp_path / "ds" / "big.bin.tmp"
    assert leftover.stat().st_size == BIG  # the data was there, just not committed
    assert_absent_then_rerun(store)
    assert not leftover.exists()
