"""Docs cannot rot: the CLI reference equals what the parser generates, and every README block
marked "executed by tests/test_docs.py" runs as written, in order, in one temporary folder.

Shell blocks run under `bash -euo pipefail` with `weakly` and `python` on the PATH meaning this
checkout. In a Python block, a line `expression  # value` whose comment is a Python literal is
checked: the expression must equal that value, so the README's printed results stay true.
"""

from __future__ import annotations

import ast
import json
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MARK = "<!-- executed by tests/test_docs.py -->"


def executed_blocks(markdown: str) -> list[tuple[str, str]]:
    """(language, code) of each fenced block right after the marker comment."""
    pattern = re.escape(MARK) + r"\s*\n```(\w+)\n(.*?)\n```"
    return re.findall(pattern, markdown, re.S)


def test_cli_reference_is_current():
    from weakly.cli_reference import DOC, render

    assert DOC.read_text() == render(), "run: python -m weakly.cli_reference"


def _shims(folder: Path) -> dict[str, str]:
    """`weakly` and `python` as a user of this checkout has them (installed console script)."""
    folder.mkdir()
    for name, target in (("weakly", f'"{sys.executable}" -m weakly.cli'), ("python", "")):
        path = folder / name
        path.write_text(f'#!/bin/sh\nexec {target or sys.executable} "$@"\n')
        path.chmod(path.stat().st_mode | stat.S_IEXEC)
    path = os.pathsep.join([str(folder), str(Path(sys.executable).parent), os.environ["PATH"]])
    env = {**os.environ, "PATH": path, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "RAY_ADDRESS"):
        env.pop(name, None)
    return env


def _check_python(code: str) -> int:
    """Run a Python block statement by statement; returns how many results were checked."""
    scope: dict = {}
    checked = 0
    for node in ast.parse(code).body:
        source = ast.get_source_segment(code, node)
        rest = code.splitlines()[node.end_lineno - 1][node.end_col_offset :].strip()
        comment = rest[1:].strip() if rest.startswith("#") else ""
        try:
            want = ast.literal_eval(comment)
        except (ValueError, SyntaxError):
            exec(compile(ast.Module([node], []), "README.md", "exec"), scope)
            continue
        got = eval(compile(ast.Expression(node.value), "README.md", "eval"), scope)
        assert got == want, f"README.md: {source} gives {got!r}, the README says {want!r}"
        checked += 1
    return checked


def test_readme_blocks_run_as_written(tmp_path):
    blocks = executed_blocks((ROOT / "README.md").read_text())
    assert len(blocks) >= 4 and {lang for lang, _ in blocks} == {"sh", "python"}
    env = _shims(tmp_path / "bin")
    work = tmp_path / "work"
    work.mkdir()
    checked = 0
    for lang, code in blocks:
        if lang == "python":
            checked += _check_python(code)
            continue
        proc = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", code], cwd=work, env=env,
            capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        assert proc.returncode == 0, f"README block failed:\n{code}\n{proc.stderr[-4000:]}"
        assert proc.stdout.strip(), f"README block printed nothing:\n{code}"
    assert checked >= 3
    # What the quickstart promises exists: a dataset without the planted copies, a model.
    dataset = json.loads((work / "data" / "ds" / "dataset.json").read_text())
    assert dataset["eval_dedup"]["removed"] >= 1
    assert (work / "runs" / "tiny" / "checkpoints" / "last.pt").exists()


def test_marker_finds_only_marked_blocks():
    text = f"```sh\nnot me\n```\n{MARK}\n```sh\necho yes\n```\n\n```python\nno = 1\n```\n"
    assert executed_blocks(text) == [("sh", "echo yes")]
    assert _check_python("x = ['#a', 2]\nlen(x)  # 2\nx  # not a literal\nx[0]  # '#a'\n") == 2


def test_scaling_figures_are_the_benchmarked_ones():
    """docs/SCALING.md derives its totals from measured rates; each rate it quotes must be a
    figure BENCHMARKS.md records, so re-measuring without updating the plan fails here."""
    scaling = (ROOT / "docs" / "SCALING.md").read_text()
    benchmarks = (ROOT / "BENCHMARKS.md").read_text()
    table = scaling.split("## The figures this page uses")[1].split("\n\n")[1]
    rows = [line.split("|")[1:-1] for line in table.splitlines()[2:]]
    assert len(rows) >= 6
    for _, rate, _ in rows:
        for number in re.findall(r"(?<![~\d.,])\d{1,3}(?:,\d{3})+|(?<![~\d.,])\d{3,}", rate):
            assert number in benchmarks, f"SCALING.md quotes {number}, BENCHMARKS.md does not"
