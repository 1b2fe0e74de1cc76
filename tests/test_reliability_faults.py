"""Faults injected into real processes: a Ray worker SIGKILLed mid pass 2, a full disk under
the shard folder, a write error inside `write_shard`, stray uncommitted files beside committed
shards. Each run's output is compared byte for byte with a clean run."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from contextlib import contextmanager
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from hostile_http import HostileServer
from ingest_fixtures import output_digest
from proc_tools import cmdline, descendants

from pipeline.ingest import IngestConfig, RunOptions, ingest, prepare_out
from pipeline.shards import committed_stats
from train.shards import Dataset, check_shard_files, iter_tar_samples
from weakly.cli import main
from weakly.synth import synth
from weakly_base.index_tables import read_index
from weakly_base.shard_format import stats_name
from weakly_base.storage import StorageError, Store

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def images(tmp_path_factory, lexicon_dir):
    root = tmp_path_factory.mktemp("faults")
    synth(60, root / "syn", max_px=700, lexicon_dir=str(lexicon_dir))
    return root / "syn"


def _url_manifest(images: Path, base_url: str, out: Path) -> Path:
    rows = pq.read_table(images / "manifest.parquet").to_pylist()
    lines = [
        json.dumps({"key": r["key"], "url": f"{base_url}/slow-file/{Path(r['path']).name}",
                    "tags": r["tags"]})
        for r in rows
    ]  # fmt: skip
    out.write_text("\n".join(lines) + "\n")
    return out


def test_sigkill_of_a_ray_worker_mid_pass2(images, tmp_path, lexicon_dir, ray_local):
    """The driver runs as its own process with its own local Ray; only a worker of that Ray that
    is running `process_chunk` is killed. Ray reruns the lost task; the output is the clean
    run's, byte for byte, and no reader can open the dataset before it is finished."""
    files = {p.name: p.read_bytes() for p in (images / "images").iterdir()}
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
    with HostileServer(files) as server:
        manifest = _url_manifest(images, server.url, tmp_path / "m.jsonl")
        config = tmp_path / "job.yaml"
        config.write_text(
            f"lexicon_dir: {lexicon_dir}\nshard_size: 15\nchunk_rows: 3\nnum_cpus: 2\n"
            "no_progress: true\n"
        )
        cmd = [sys.executable, "-m", "weakly.cli", "ingest", str(manifest), "--config",
               str(config), "--out"]  # fmt: skip
        faulty = tmp_path / "faulty"
        proc = subprocess.Popen(
            [*cmd, str(faulty)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, start_new_session=True,
        )  # fmt: skip
        killed = None
        deadline = time.monotonic() + 180
        try:
            while killed is None and time.monotonic() < deadline and proc.poll() is None:
                for pid in descendants(proc.pid):
                    if cmdline(pid).startswith("ray::process_chunk"):
                        os.kill(pid, signal.SIGKILL)
                        killed = pid
                        break
                time.sleep(0.01)
            assert killed is not None, "no process_chunk worker seen to kill"
            with pytest.raises(FileNotFoundError, match="ingest not finished"):
                Dataset(str(faulty))
            stdout, stderr = proc.communicate(timeout=240)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
        assert proc.returncode == 0, stderr[-3000:]
        assert killed not in descendants(os.getpid())
        clean = tmp_path / "clean"
        assert main([*cmd[3:], str(clean)]) == 0
    assert output_digest(faulty) == output_digest(clean)
    totals = json.loads((faulty / "dataset.json").read_text())["totals"]
    assert totals["input_rows"] == 60 == totals["written"] + totals["rejected"]
    assert totals["written"] >= 55


@contextmanager
def _full_disk(folder: Path, size: int, victim: str):
    """Make shard writes under `folder` fail with ENOSPC: a tiny tmpfs mounted on it where this
    process may mount (root with CAP_SYS_ADMIN), else the victim shard's `.tmp` name made a
    symlink to /dev/full (whose writes always fail with ENOSPC; open follows the link). Yields
    a function that frees the space (remount bigger / drop the link), keeping what was written."""
    mounted = (
        os.geteuid() == 0
        and subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
            capture_output=True,
        ).returncode
        == 0
    )
    trap = folder / f"{victim}.tmp"
    if not mounted:
        trap.symlink_to("/dev/full")

    def free() -> None:
        if mounted:
            subprocess.run(["mount", "-o", "remount,size=256m", str(folder)], check=True)
        else:
            trap.unlink(missing_ok=True)

    try:
        yield free
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(folder)], check=False)


def stats_path(tar: Path) -> Path:
    return tar.with_name(stats_name(tar.name))


def _check_nothing_half_written(shards: Path) -> int:
    committed = 0
    for path in shards.iterdir():
        assert not path.name.endswith(".tmp"), f"leftover {path.name}"
        if path.suffix == ".tar" and stats_path(path).exists():
            stats = json.loads(stats_path(path).read_text())
            assert hashlib.sha256(path.read_bytes()).hexdigest() == stats["sha256"]
            committed += 1
        elif path.name.endswith(".stats.json"):
            assert (shards / path.name.replace(".stats.json", ".tar")).exists()
    return committed


@pytest.fixture(scope="module")
def clean_run(images, tmp_path_factory, lexicon_dir, ray_local):
    config = IngestConfig(lexicon_dir=str(lexicon_dir), shard_size=6, chunk_rows=8)
    clean = tmp_path_factory.mktemp("clean") / "out"
    ingest([str(images / "manifest.parquet")], clean, config, RunOptions(progress=False))
    return config, clean


def test_full_disk_while_writing_shards(images, tmp_path, lexicon_dir, clean_run, capsys):
    config, clean = clean_run
    manifest = str(images / "manifest.parquet")
    tars = sorted((clean / "shards").glob("*.tar"))
    shard_bytes = [p.stat().st_size for p in tars]
    out = tmp_path / "out"
    prepare_out(Store.at(out), config, RunOptions())
    (out / "shards").mkdir()  # objects make their folders; this one must exist to be filled
    with _full_disk(out / "shards", sum(shard_bytes) // 2, tars[len(tars) // 2].name) as free:
        argv = ["ingest", manifest, "--out", str(out), "--lexicon-dir", str(lexicon_dir),
                "--shard-size", "6", "--chunk-rows", "8", "--no-progress"]  # fmt: skip
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert "could not write" in err and "rerun the same command" in err
        assert len(err.strip().splitlines()) == 1, err  # one line, no remote traceback
        assert "No space left on device" in err
        assert not (out / "dataset.json").exists()
        committed = _check_nothing_half_written(out / "shards")
        assert committed < len(shard_bytes)
        free()
        if committed:  # a committed shard truncated later is noticed and rewritten
            victim = sorted((out / "shards").glob("*.tar"))[0]
            victim.write_bytes(victim.read_bytes()[:-512])
            assert committed_stats(Store.at(out), f"shards/{victim.name}") is None
        assert main(argv) == 0
        assert output_digest(out) == output_digest(clean)


def test_write_error_inside_write_shard_leaves_nothing(tmp_path):
    """RLIMIT_FSIZE makes the kernel fail the tar write part way (EFBIG) in a real process."""
    script = textwrap.dedent(
        f"""
        import resource, signal, sys
        from pathlib import Path
        sys.path.insert(0, {str(ROOT)!r})
        import pyarrow as pa
        from pipeline.shards import WriteFailed, write_shard
        from weakly_base.shard_format import SAMPLES_SCHEMA, ShardRecord
        from weakly_base.storage import Store
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (20000, 20000))
        samples = [ShardRecord(f"k{{i}}", bytes(3000), {{"labels": [1]}}) for i in range(20)]
        try:
            write_shard(Store.at({str(tmp_path)!r}), "s-00-000000.tar", samples, "train", 0,
                        [1.0] * 20, SAMPLES_SCHEMA.empty_table())
        except WriteFailed as exc:
            print(exc)
            sys.exit(3)
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert proc.returncode == 3, proc.stderr
    assert "could not write" in proc.stdout and "s-00-000000.tar" in proc.stdout
    assert "File too large" in proc.stdout
    assert list(tmp_path.iterdir()) == []


def test_readers_ignore_tmp_and_uncommitted_shards(clean_run, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(clean_run[1], out)
    shards = out / "shards"
    real = sorted(shards.glob("*.tar"))
    (shards / "train-00-000099.tar").write_bytes(real[0].read_bytes())  # no commit marker
    (shards / "train-00-000098.tar.tmp").write_bytes(real[0].read_bytes()[:1000])
    (shards / "train-00-000001.stats.json.tmp").write_text("{")
    dataset = Dataset(str(out))
    check_shard_files(dataset, verify=True)
    assert all(".tmp" not in f and "0000099" not in f for f in dataset.shards.files)
    keys = []
    for i in range(len(dataset.shards.files)):
        keys += [s.key for s in dataset.read_shard(i)]
    indexed = read_index(out, "samples")["key"].to_pylist()
    assert sorted(keys) == sorted(indexed) and len(keys) == dataset.num_samples
    with open(real[0], "rb") as f:
        assert len(list(iter_tar_samples(f))) == dataset.shards.n[0]
    (tmp_path / "a-file").write_bytes(b"")
    with pytest.raises(StorageError, match="could not write"):  # the documented error type
        Store.at(tmp_path / "a-file").put("x", b"x")
