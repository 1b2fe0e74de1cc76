"""`weakly ingest` against a real two-node Ray cluster (two `ray start` processes), both as a
driver joining with `--address` and as a `ray job submit` job: the output must be byte-identical
to the embedded local-Ray run of the same command."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from ingest_fixtures import output_digest
from ray_cluster import RAY, LocalCluster

from weakly.cli import main

ROOT = Path(__file__).resolve().parents[1]
WEAKLY = [sys.executable, "-m", "weakly.cli"]


@pytest.fixture(scope="module")
def job_inputs(tmp_path_factory, lexicon_dir):
    root = tmp_path_factory.mktemp("cluster-data")
    # The inputs are made in-process (same CLI code); only the ingest runs need real processes.
    assert main(["synth", "--n", "30", "--out", str(root / "syn"), "--eval-out",
                 str(root / "eval"), "--eval-images", "4", "--planted-fraction", "0.2",
                 "--max-px", "700"]) == 0  # fmt: skip
    assert main(["eval-index", "build", "--eval", f"demo={root / 'eval'}", "--out",
                 str(root / "eval.idx")]) == 0  # fmt: skip
    options = ["--eval-index", "eval.idx", "--lexicon-dir", str(lexicon_dir), "--shard-size", "8"]
    options += ["--chunk-rows", "4", "--no-progress"]
    return root, options


def test_cluster_ingest_equals_local_run(job_inputs, tmp_path, monkeypatch):
    root, options = job_inputs
    monkeypatch.chdir(root)  # the reference: the same command on the in-process local Ray
    assert main(["ingest", "syn/manifest.parquet", "--out", "local", *options]) == 0
    want = output_digest(root / "local")
    dataset = json.loads((root / "local" / "dataset.json").read_text())
    assert dataset["totals"]["input_rows"] == 30 and dataset["eval_dedup"]["removed"] >= 1
    assert any(name.startswith("shards/") and name.endswith(".tar") for name in want)

    with LocalCluster(tmp_path / "ray", pythonpath=str(ROOT)) as cluster:
        assert cluster.alive_nodes() == 2
        # Two clients of the cluster at once, each writing its own output folder:
        # a driver joining the cluster, paths relative to its own cwd (the Ray workers run
        # elsewhere: the job must not depend on sharing a working directory with them) ...
        joined = [*WEAKLY, "ingest", "syn/manifest.parquet", "--out", "joined", *options,
                  "--address", cluster.address]  # fmt: skip
        # ... and the same command as a Ray job: the entrypoint runs on the cluster with
        # --address auto.
        entry = [*WEAKLY, "ingest", str(root / "syn" / "manifest.parquet"), "--out",
                 str(root / "submitted"), *options, "--address", "auto"]  # fmt: skip
        entry[entry.index("eval.idx")] = str(root / "eval.idx")
        submit = [RAY, "job", "submit", "--address", cluster.dashboard, "--", *entry]
        procs, logs = [], []
        for name, cmd, cwd in (("joined", joined, root), ("submitted", submit, tmp_path)):
            logs.append((tmp_path / f"{name}.out", tmp_path / f"{name}.err"))
            with open(logs[-1][0], "w") as out, open(logs[-1][1], "w") as err:
                procs.append(
                    subprocess.Popen(cmd, cwd=cwd, env=cluster.env, stdout=out, stderr=err)
                )
        try:
            for proc in procs:
                proc.wait(timeout=300)
        finally:
            for proc in procs:  # only the two clients this test started
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
        (j_out, j_err), (s_out, s_err) = ((o.read_text(), e.read_text()) for o, e in logs)
        assert procs[0].returncode == 0, j_err[-3000:] + cluster.logs()
        assert "rows in" in j_out
        assert output_digest(root / "joined") == want

        assert procs[1].returncode == 0, s_out[-3000:] + s_err[-3000:]
        assert "succeeded" in s_out and "rows in" in s_out
        assert output_digest(root / "submitted") == want


def test_driver_side_paths_are_absolute_and_urls_untouched(tmp_path, monkeypatch):
    """What makes the cluster run independent of the workers' cwd (pure functions): the
    driver makes every local path it hands out absolute, and tasks join manifest paths to the
    driver's working directory, not their own."""
    import pyarrow as pa

    from pipeline.plan_tasks import _fetch_paths
    from weakly_base.storage import normalise_url

    monkeypatch.chdir(tmp_path)
    assert normalise_url("syn/manifest.parquet") == str(tmp_path / "syn" / "manifest.parquet")
    assert normalise_url("/abs/m.jsonl") == "/abs/m.jsonl"
    assert normalise_url("s3://bucket/m.parquet") == "s3://bucket/m.parquet"
    assert normalise_url("s3://bucket/ds/") == "s3://bucket/ds"
    paths = pa.chunked_array([["img/a.jpg", "/abs/b.jpg", None, "s3://b/c.jpg", "../d.jpg"]])
    assert _fetch_paths(paths, "/driver/cwd", rooted=False).to_pylist() == [
        "/driver/cwd/img/a.jpg", "/abs/b.jpg", None, "s3://b/c.jpg", "/driver/d.jpg"
    ]  # fmt: skip
    assert _fetch_paths(paths, "/driver/cwd", rooted=True).to_pylist() == paths.to_pylist()
