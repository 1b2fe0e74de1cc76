"""Ingest into an object store and train from it, against a real S3-compatible server (moto's,
started locally; tests/s3_server.py): the output in the bucket is byte for byte the output on a
disk, a killed job resumes there to the same bytes, the trainer streams it from the URL, and
every bad target fails in one line before any work starts."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from train.shards import Dataset
from weakly.cli import main
from weakly_base.storage import Store

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def synth_manifest(tmp_path_factory):
    root = tmp_path_factory.mktemp("syn")
    assert main(["synth", "--n", "48", "--out", str(root / "syn"), "--max-px", "400"]) == 0
    return str(root / "syn" / "manifest.parquet")


def _argv(manifest: str, out: str, lexicon_dir, *extra: str) -> list[str]:
    return ["ingest", manifest, "--out", out, "--lexicon-dir", str(lexicon_dir),
            "--shard-size", "7", "--chunk-rows", "4", "--no-progress", *extra]  # fmt: skip


def _objects(store: Store) -> dict[str, bytes]:
    """Every object under the store, by path relative to its root."""
    store.refresh()
    root = store.full("")
    names = [p[len(root) + 1 :] for p in sorted(store.fs.find(root)) if not p.endswith(".tmp")]
    return {name: store.get(name) for name in names}


@pytest.fixture(scope="module")
def local_run(synth_manifest, tmp_path_factory, lexicon_dir, ray_local):
    out = tmp_path_factory.mktemp("local") / "ds"
    assert main(_argv(synth_manifest, str(out), lexicon_dir)) == 0
    return out


def test_s3_output_is_byte_identical_to_local_and_trains(
    s3_server, synth_manifest, local_run, lexicon_dir, ray_local
):
    url = s3_server.bucket("same") + "/ds"
    options = json.dumps(s3_server.storage_options)  # Ray workers get them with the Store
    assert main(_argv(synth_manifest, url, lexicon_dir, "--storage-options", options)) == 0
    remote = _objects(Store.at(url, s3_server.storage_options))
    local = _objects(Store.at(local_run))
    assert sorted(remote) == sorted(local)
    assert remote == local
    assert any(name.startswith("shards/") and name.endswith(".tar") for name in remote)

    # The trainer streams the dataset from the URL (endpoint and keys from the environment).
    from_s3, from_disk = Dataset(url), Dataset(str(local_run))
    assert from_s3.shards.files == from_disk.shards.files
    assert from_s3.shards.n.tolist() == from_disk.shards.n.tolist()
    for i in range(len(from_s3.shards.files)):
        got = [(s.key, s.labels, s.jpg) for s in from_s3.read_shard(i)]
        assert got == [(s.key, s.labels, s.jpg) for s in from_disk.read_shard(i)]


def test_killed_s3_job_resumes_to_identical_bytes(
    s3_server, synth_manifest, local_run, lexicon_dir, ray_local
):
    """A real CLI process (its own Ray, endpoint and keys from the standard variables) is
    SIGKILLed mid pass 2; nothing half-written is visible and the rerun finishes the rest."""
    url = s3_server.bucket("killed") + "/ds"
    store = Store.at(url, s3_server.storage_options)
    env = {**os.environ, **s3_server.env, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "weakly.cli", *_argv(synth_manifest, url, lexicon_dir),
         "--num-cpus", "1"],
        env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and len(store.list("_work/done/f000000")) < 2:
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    store.refresh()
    assert not store.exists("dataset.json")
    for name, data in _objects(store).items():  # every visible object is whole
        if name.endswith(".json"):
            json.loads(data)
    options = json.dumps(s3_server.storage_options)
    assert main(_argv(synth_manifest, url, lexicon_dir, "--storage-options", options)) == 0
    assert _objects(Store.at(url, s3_server.storage_options)) == _objects(Store.at(local_run))


def _one_line_error(capsys, argv) -> str:
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def test_bad_targets_fail_in_one_line(s3_server, synth_manifest, lexicon_dir, capsys, tmp_path):
    good = json.dumps(s3_server.storage_options)
    missing = "s3://no-such-bucket-here/ds"
    err = _one_line_error(
        capsys, _argv(synth_manifest, missing, lexicon_dir, "--storage-options", good)
    )
    assert missing in err and "does not exist" in err

    # an output URL that already holds a different dataset
    url = s3_server.bucket("taken") + "/ds"
    store = Store.at(url, s3_server.storage_options)
    store.put("config.json", b'{"vocab": "nouns"}')
    err = _one_line_error(
        capsys, _argv(synth_manifest, url, lexicon_dir, "--storage-options", good)
    )
    assert "different config" in err and url in err
    store.put("config.json", b"")
    store.remove("config.json")
    store.put("notes.txt", b"someone else's")
    err = _one_line_error(
        capsys, _argv(synth_manifest, url, lexicon_dir, "--storage-options", good)
    )
    assert "not empty" in err and url in err

    # a bucket this user may read but not write
    url = s3_server.bucket("readonly") + "/ds"
    read_only = json.dumps(s3_server.read_only_options("reader"))
    with s3_server.enforce_auth():
        err = _one_line_error(
            capsys, _argv(synth_manifest, url, lexicon_dir, "--storage-options", read_only)
        )
    assert url in err and ("denied" in err.lower() or "forbidden" in err.lower())
    assert not Store.at(url, s3_server.storage_options).list("")


def test_missing_credentials_fail_in_one_line(s3_server, synth_manifest, lexicon_dir, tmp_path):
    """A real CLI process with an endpoint but no keys and no profile (HOME empty)."""
    url = s3_server.bucket("nokeys") + "/ds"
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(
        AWS_ENDPOINT_URL=s3_server.endpoint, AWS_EC2_METADATA_DISABLED="true", HOME=str(tmp_path)
    )
    proc = subprocess.run(
        [sys.executable, "-m", "weakly.cli", *_argv(synth_manifest, url, lexicon_dir)],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    err = proc.stderr.strip()
    assert proc.returncode == 2 and len(err.splitlines()) == 1, err
    assert url in err and "no credentials" in err


def test_manifest_and_eval_index_read_from_the_bucket(s3_server, tmp_path, lexicon_dir, ray_local):
    """Object stores in: the manifest and the eval index are s3:// URLs; the result equals the
    same job on local copies (same samples, same dedup removals)."""
    from pipeline.dedup import EvalIndex
    from weakly.synth import synth
    from weakly_base.index_tables import read_index

    synth(24, tmp_path / "train", tmp_path / "eval", max_px=400, eval_images=4,
          planted_fraction=0.3, lexicon_dir=str(lexicon_dir))  # fmt: skip
    EvalIndex.build({"synth-eval": str(tmp_path / "eval")}).save(tmp_path / "eval.idx")
    bucket = s3_server.bucket("inputs")
    inputs = Store.at(bucket + "/in", s3_server.storage_options)
    inputs.put("manifest.parquet", (tmp_path / "train" / "manifest.parquet").read_bytes())
    inputs.put("eval.idx", (tmp_path / "eval.idx").read_bytes())
    options = json.dumps(s3_server.storage_options)
    remote_in = [
        *_argv(inputs.url_of("manifest.parquet"), str(tmp_path / "from-s3"), lexicon_dir),
        "--eval-index", inputs.url_of("eval.idx"), "--storage-options", options,
    ]  # fmt: skip
    assert main(remote_in) == 0
    local_in = [*_argv(str(tmp_path / "train" / "manifest.parquet"), str(tmp_path / "local"),
                       lexicon_dir), "--eval-index", str(tmp_path / "eval.idx")]  # fmt: skip
    assert main(local_in) == 0
    got, want = (
        json.loads((tmp_path / d / "dataset.json").read_text()) for d in ("from-s3", "local")
    )
    assert got["eval_dedup"]["removed"] == want["eval_dedup"]["removed"] > 0
    assert got["eval_dedup"]["index"] == inputs.url_of("eval.idx")
    assert got["totals"] == want["totals"] and got["vocabulary"] == want["vocabulary"]
    samples = [
        read_index(str(tmp_path / d), "samples").sort_by("key") for d in ("from-s3", "local")
    ]
    assert (
        samples[0]
        .select(["key", "labels", "weight", "phash"])
        .equals(samples[1].select(["key", "labels", "weight", "phash"]))
    )


def test_the_loader_streams_from_s3_as_from_disk(s3_server, tmp_path):
    """The training loader on an s3:// URL (each open visit read ahead in its own thread, only
    the emitted members fetched) gives the batches it gives on the local copy, byte for byte,
    and resumes mid-run from s3 to the same batches."""
    import copy
    import itertools

    import torch

    from train.data import LoaderConfig, TrainLoader
    from weakly.fixtures import build_fixture

    local = build_fixture(tmp_path / "ds", samples=80, seed=7)
    url = s3_server.bucket("loader") + "/ds"
    store = Store.at(url)
    for path in sorted(local.rglob("*")):
        if path.is_file():
            store.put(str(path.relative_to(local)), path.read_bytes())
    cfg = LoaderConfig(batch_size=6, image_size=24, shuffle_buffer=8, open_shards=3, seed=2)
    want = [
        (b["keys"], b["images"]) for b in itertools.islice(TrainLoader(Dataset(str(local)), cfg), 8)
    ]
    remote = TrainLoader(Dataset(url), cfg)
    assert remote.dataset.store.protocol == "s3"
    got, state = [], None
    for i, b in enumerate(itertools.islice(remote, 8)):
        got.append((b["keys"], b["images"]))
        if i == 2:
            state = copy.deepcopy(remote.state_dict())
    assert [k for k, _ in got] == [k for k, _ in want]
    assert all(torch.equal(a, b) for (_, a), (_, b) in zip(got, want, strict=True))
    resumed = TrainLoader(Dataset(url), cfg)
    resumed.load_state_dict(state)
    again = [b["keys"] for b in itertools.islice(resumed, 5)]
    assert again == [k for k, _ in want[3:]]
