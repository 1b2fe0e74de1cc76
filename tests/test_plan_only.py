"""`weakly ingest --plan-only`: pass 1 only, no image fetched; the plan it leaves is what a
later run of the same config starts from, and the finished output equals a one-shot run."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest
from ingest_fixtures import output_digest

from weakly.cli import main


@pytest.fixture(scope="module")
def synth_manifest(tmp_path_factory):
    root = tmp_path_factory.mktemp("syn")
    assert main(["synth", "--n", "40", "--out", str(root / "syn"), "--max-px", "400"]) == 0
    return str(root / "syn" / "manifest.parquet")


def _argv(manifest: str, out, lexicon_dir, *extra: str) -> list[str]:
    return ["ingest", manifest, "--out", str(out), "--lexicon-dir", str(lexicon_dir),
            "--shard-size", "7", "--chunk-rows", "6", "--no-progress", *extra]  # fmt: skip


def test_plan_only_fetches_nothing_and_the_full_run_reuses_it(
    synth_manifest, tmp_path, lexicon_dir, ray_local, capsys
):
    out = tmp_path / "planned"
    assert main(_argv(synth_manifest, out, lexicon_dir, "--plan-only")) == 0
    printed = capsys.readouterr().out
    assert "to fetch" in printed and "no image fetched" in printed

    plan = json.loads((out / "plan.json").read_text())
    totals = plan["totals"]
    assert totals["input_rows"] == 40 == totals["to_fetch"] + totals["rejected"]
    assert totals["to_fetch"] > 20
    assert sum(plan["counts"]) >= totals["to_fetch"]  # every image to fetch has a label
    assert len(plan["counts"]) == len(plan["vocabulary"]) == len(plan["names"])
    assert plan["weighting"]["scheme"] == "inv-sqrt" and plan["buckets"]
    assert (out / "index" / "report.png").read_bytes()[:4] == b"\x89PNG"
    rejects = pq.read_table(out / "index" / "rejects").num_rows  # a folder of parts
    assert rejects == totals["rejected"] == sum(plan["rejects_by_reason"].values())
    assert not (out / "dataset.json").exists()
    assert not list(out.rglob("*.tar")) and not (out / "_work" / "done").exists()

    canonical = out / "_work" / "canonical" / "f000000.parquet"
    before = canonical.stat().st_mtime_ns
    assert main(_argv(synth_manifest, out, lexicon_dir)) == 0
    assert canonical.stat().st_mtime_ns == before, "the run started from the saved plan"
    clean = tmp_path / "clean"
    assert main(_argv(synth_manifest, clean, lexicon_dir)) == 0
    assert output_digest(out) == output_digest(clean)
    dataset = json.loads((out / "dataset.json").read_text())
    assert dataset["totals"]["input_rows"] == 40
    assert dataset["vocabulary"]["counts"] == plan["counts"]


def test_plan_only_into_a_different_job_is_refused(
    synth_manifest, tmp_path, lexicon_dir, ray_local, capsys
):
    out = tmp_path / "o"
    assert main(_argv(synth_manifest, out, lexicon_dir, "--plan-only")) == 0
    capsys.readouterr()
    assert main(_argv(synth_manifest, out, lexicon_dir, "--plan-only", "--vocab", "nouns")) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "different config" in err and str(out) in err
    other = tmp_path / "other.parquet"
    other.write_bytes(open(synth_manifest, "rb").read())
    argv = _argv(synth_manifest, out, lexicon_dir, "--plan-only")
    err = _one_line(capsys, [*argv[:2], str(other), *argv[2:]])
    assert "other manifests" in err and "--overwrite" in err


def _one_line(capsys, argv) -> str:
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err
