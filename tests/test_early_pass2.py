"""Pass-2 chunks run in the driver while Ray starts (pipeline/early_pass2.py): the chunks it
finishes are never redone, one that fails there is handed to Ray, and the output is the same
bytes as a run where Ray did every chunk."""

from __future__ import annotations

from pathlib import Path

import pytest
from ingest_fixtures import output_digest

from pipeline import work_layout as lay
from pipeline.early_pass2 import EarlyPass2, pending_chunks
from pipeline.ingest import IngestConfig, RunOptions, _run_pass2, ingest, plan
from pipeline.plan import Plan
from weakly.synth import synth
from weakly_base.storage import Store

ALL_ON_RAY = RunOptions(progress=False, driver_chunks=False)


@pytest.fixture(scope="module")
def manifest(tmp_path_factory, lexicon_dir) -> list[str]:
    root = tmp_path_factory.mktemp("early")
    synth(36, root / "syn", root / "eval", max_px=400, lexicon_dir=str(lexicon_dir))
    return [str(root / "syn" / "manifest.parquet")]


def _config(lexicon_dir) -> IngestConfig:
    return IngestConfig(lexicon_dir=str(lexicon_dir), shard_size=7, chunk_rows=5)


def _planned(manifest, out: Path, config) -> tuple[Store, Plan]:
    plan(manifest, out, config, ALL_ON_RAY)
    store = Store.at(out)
    return store, Plan.load(store)


def test_chunks_run_in_the_driver_are_kept_and_the_output_is_unchanged(
    ray_local, manifest, lexicon_dir, tmp_path
):
    config = _config(lexicon_dir)
    store, job_plan = _planned(manifest, tmp_path / "early", config)
    chunks = list(pending_chunks(job_plan, store, config.chunk_rows))
    assert len(chunks) >= 5

    early = EarlyPass2(store, config, None, limit=2)
    early.start(job_plan)
    early.join()  # ends at the limit
    done, failed = early.finish()
    assert sorted(done) == chunks[:2] and failed == []
    markers = {c: tmp_path / "early" / lay.chunk_done(*c) for c in chunks[:2]}
    stamps = {c: m.stat().st_mtime_ns for c, m in markers.items()}
    assert list(pending_chunks(job_plan, store, config.chunk_rows)) == chunks[2:]

    summary = ingest(manifest, tmp_path / "early", config, ALL_ON_RAY)
    assert {c: m.stat().st_mtime_ns for c, m in markers.items()} == stamps  # not redone
    clean = tmp_path / "clean"
    clean_summary = ingest(manifest, clean, config, ALL_ON_RAY)
    assert output_digest(tmp_path / "early") == output_digest(clean)
    assert summary.input_rows == summary.written + summary.rejected == 36
    assert clean_summary.driver_chunks == 0


def test_a_chunk_failing_in_the_driver_is_run_by_ray(ray_local, manifest, lexicon_dir, tmp_path):
    config = _config(lexicon_dir)
    store, job_plan = _planned(manifest, tmp_path / "out", config)
    # An eval index the driver cannot search: its first chunk raises there and is handed back.
    early = EarlyPass2(store, config, eval_index=object())
    early.start(job_plan)
    early.join()
    assert early.failed == [(0, 0)] and early.done == {}

    totals = _run_pass2(ray_local, store, job_plan, config, None, ALL_ON_RAY, early)
    assert totals.rows == job_plan.to_fetch  # every chunk counted once, the failed one by Ray
    assert store.exists(lay.chunk_done(0, 0))
    assert list(pending_chunks(job_plan, store, config.chunk_rows)) == []


def test_stopped_before_the_plan_claims_nothing(ray_local, manifest, lexicon_dir, tmp_path):
    config = _config(lexicon_dir)
    store, job_plan = _planned(manifest, tmp_path / "out", config)
    early = EarlyPass2(store, config, None)
    assert early.stop() == frozenset()  # Ray was up before the plan was ready
    early.start(job_plan)
    assert early.finish() == ({}, [])
    assert not store.exists(lay.chunk_done(0, 0))


def test_a_local_job_reports_its_driver_chunks(ray_local, manifest, lexicon_dir, tmp_path):
    """With Ray already up (as here) the driver runs chunks only while the report is drawn;
    whatever it ran, the counts add up and the output equals an all-Ray run's."""
    config = _config(lexicon_dir)
    summary = ingest(manifest, tmp_path / "a", config, RunOptions(progress=False))
    ingest(manifest, tmp_path / "b", config, ALL_ON_RAY)
    assert output_digest(tmp_path / "a") == output_digest(tmp_path / "b")
    assert 0 <= summary.driver_chunks <= 8
    assert "pass-2 chunks in the driver" in summary.profile()
