"""`weakly ingest` / `weakly synth` through the real entry point, including a real SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from ingest_fixtures import output_digest

from pipeline.ingest_cli import config_from_args
from weakly.cli import main, parse


@pytest.mark.parametrize(
    "args, message",
    [
        (["--shard-size", "0"], "--shard-size 0: use 1..10000"),
        (["--vocab", "top:x"], "in1k, in21k, nouns, or top:K"),
        (["--weighting", "log"], "invalid choice"),
        (["--label-noise", "1.5"], "--label-noise 1.5"),
        (["--quality", "0"], "--quality 0"),
    ],
)
def test_bad_flags_are_clear(tmp_path, capsys, args, message):
    code = None
    try:
        code = main(["ingest", str(tmp_path / "m.jsonl"), "--out", str(tmp_path / "o"), *args])
    except SystemExit as exit_:  # argparse's own errors
        code = exit_.code
    assert code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "o").exists()  # nothing started


def test_config_file_errors(tmp_path, capsys):
    """Every config-file error is one line naming the file and the key, exit code 2."""
    bad = tmp_path / "c.yaml"
    bad.write_text("shard_size: 10\nnot_an_option: 1\n")
    assert main(["ingest", "--config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err == f"weakly ingest: error: --config {bad}: unknown options not_an_option\n"
    wrong_type = tmp_path / "t.yaml"
    wrong_type.write_text("shard_size: many\n")
    assert main(["ingest", "--config", str(wrong_type)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"weakly ingest: error: --config {wrong_type}: shard_size: 'many'")
    assert err.count("\n") == 1
    assert main(["ingest", "--config", str(tmp_path / "absent.yaml")]) == 2
    err = capsys.readouterr().err
    assert "no such file" in err and err.count("\n") == 1
    empty = tmp_path / "e.yaml"
    empty.write_text("out: somewhere\n")
    assert main(["ingest", "--config", str(empty)]) == 2
    assert "needs MANIFEST" in capsys.readouterr().err


def test_command_line_beats_config_file_even_at_its_default(tmp_path):
    """`--shard-size 1000` (the default) given on the command line beats `shard_size: 3` in the
    file; without the flag the file's value applies. Parsing only, no ingest run."""
    config = tmp_path / "job.yaml"
    config.write_text("shard_size: 3\nchunk_rows: 5\n")
    base = ["ingest", "m.jsonl", "--out", str(tmp_path / "o"), "--config", str(config)]
    given = config_from_args(parse([*base, "--shard-size", "1000"]))
    assert (given.shard_size, given.chunk_rows) == (1000, 5)
    absent = config_from_args(parse(base))
    assert (absent.shard_size, absent.chunk_rows) == (3, 5)
    assert config_from_args(parse(base[:4])).shard_size == 1000  # no file: the default


def test_killed_run_resumes_to_identical_output(tmp_path, lexicon_dir, ray_local, capsys):
    """SIGKILL the whole ingest process tree mid pass 2, rerun the same command, compare."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    weakly = [sys.executable, "-m", "weakly.cli"]
    # The input is made in-process (same CLI code); the ingest runs are real processes.
    assert main(["synth", "--n", "60", "--out", str(tmp_path / "syn"), "--max-px", "900"]) == 0
    config = tmp_path / "job.yaml"
    config.write_text(
        f"lexicon_dir: {lexicon_dir}\nshard_size: 15\nchunk_rows: 3\nnum_cpus: 1\nno_progress: true\n"
    )
    manifest = str(tmp_path / "syn" / "manifest.parquet")
    killed = tmp_path / "killed"
    proc = subprocess.Popen(
        [*weakly, "ingest", manifest, "--out", str(killed), "--config", str(config)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    parts = killed / "_work" / "done" / "f000000"  # pass 2's per-chunk commit markers
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and len(list(parts.glob("c??????.json"))) < 3:
        assert proc.poll() is None, "ingest finished before it could be killed"
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before = len(list(parts.glob("c??????.json")))
    assert 3 <= done_before < 20 and not (killed / "dataset.json").exists()

    # The same command again, in-process on the session's Ray: it finds only what the killed
    # process left on disk.
    capsys.readouterr()
    assert main(["ingest", manifest, "--out", str(killed), "--config", str(config)]) == 0
    rerun = capsys.readouterr().out
    assert "rows in" in rerun and "written" in rerun
    clean = tmp_path / "clean"
    assert main(["ingest", manifest, "--out", str(clean), "--config", str(config)]) == 0
    assert output_digest(killed) == output_digest(clean)
    dataset = json.loads((clean / "dataset.json").read_text())
    assert (
        dataset["totals"]["input_rows"]
        == 60
        == dataset["totals"]["written"] + dataset["totals"]["rejected"]
    )
