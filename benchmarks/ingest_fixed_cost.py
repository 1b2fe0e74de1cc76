"""The fixed cost of one `weakly ingest` command, phase by phase, and what it does to a small
job's images/s.

A corpus of `weakly.synth` images (shorter side ~500 px, read from local paths, `--vocab
in1k`) is made once under `--work`. For each size in `--n` (small first) the whole CLI command
`python -m weakly ingest MANIFEST --out OUT --num-cpus C --no-progress --profile` runs as a
subprocess (best of `--repeats`); its `--profile` table gives the wall and driver-CPU seconds of
every phase (start-up before the job, Ray start, lexicon load, each pass-1 round, report.png,
pass 2, shards, index), and the command's own wall time minus the job's gives what follows
the job: Ray shutdown and interpreter exit.

Printed: the breakdown per size, the fixed part (everything but pass 2 and shards), and the
small job's images/s as a ratio of the largest job's (the baseline, same process, same
corpus). Wall figures depend on the machine's load; driver CPU seconds much less so.

    python benchmarks/ingest_fixed_cost.py [--n 1000 8000] [--cores 2] [--repeats 2]
        [--work DIR] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LONGER_SIDE = (1.04, 1.28)  # synth bounds the longer side; these give a median shorter ~S
VARIABLE = ("pass 2", "shards")  # phases that grow with the image count


def make_corpus(work: Path, n: int, size: int) -> Path:
    """`work/fixed-{size}px-n{n}/syn/manifest.parquet` (local paths), built once."""
    folder = work / f"fixed-{size}px-n{n}"
    if not (folder / "ready").exists():
        from weakly.synth import synth

        shutil.rmtree(folder, ignore_errors=True)
        lo, hi = (round(size * f) for f in LONGER_SIDE)
        print(f"making corpus: {n} images ~{size} px -> {folder}", flush=True)
        synth(n, folder / "syn", None, min_px=lo, max_px=hi, planted_fraction=0.0)
        (folder / "ready").write_text("ok\n")
    return folder / "syn" / "manifest.parquet"


ROW = re.compile(r"^\s*(?P<name>[a-z0-9 .:\-]+?)\s{2,}(?P<wall>\d+\.\d+)(?:\s+(?P<cpu>\d+\.\d+))?")


def parse_profile(text: str) -> dict:
    """{phase: (wall, cpu)} from the `--profile` lines of the command's output."""
    lines = text.splitlines()
    try:
        at = next(i for i, line in enumerate(lines) if line.startswith("start-up before"))
    except StopIteration:
        at = next(i for i, line in enumerate(lines) if line.startswith("phase "))
    found = {}
    for line in lines[at:]:
        m = ROW.match(line)
        if m and not line.startswith("phase "):
            cpu = float(m["cpu"]) if m["cpu"] else 0.0
            found[m["name"].strip()] = (float(m["wall"]), cpu)
    return found


def run_once(manifest: Path, out: Path, cores: int) -> dict:
    cmd = [
        sys.executable, "-m", "weakly", "ingest", str(manifest), "--out", str(out),
        "--num-cpus", str(cores), "--no-progress", "--profile", "--overwrite",
    ]  # fmt: skip
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    began = time.perf_counter()
    done = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - began
    if done.returncode:
        raise SystemExit(f"ingest failed ({done.returncode}):\n{done.stderr[-3000:]}")
    phases = parse_profile(done.stdout)
    rows = int(re.search(r"rows in\s+([\d,]+)", done.stdout)[1].replace(",", ""))
    startup = phases.pop("start-up before the job", (0.0, 0.0))[0]
    job = phases.pop("job total")[0]
    return {
        "rows": rows,
        "command_wall": round(wall, 3),
        "startup": round(startup, 3),
        "job": round(job, 3),
        "after_job": round(max(0.0, wall - startup - job), 3),
        "phases": phases,
    }


def summarise(run: dict) -> dict:
    variable = sum(run["phases"].get(p, (0.0, 0.0))[0] for p in VARIABLE)
    fixed = run["command_wall"] - variable
    return {
        "fixed_s": round(fixed, 2),
        "variable_s": round(variable, 2),
        "img_s_command": round(run["rows"] / run["command_wall"], 1),
        "img_s_variable": round(run["rows"] / variable, 1) if variable else 0.0,
    }


def show(n: int, run: dict) -> None:
    s = summarise(run)
    print(f"\n== {n} images: command {run['command_wall']:.2f} s, {s['img_s_command']} img/s")
    print(f"{'phase':<26}{'wall s':>9}{'driver cpu s':>14}")
    print(f"{'start-up before the job':<26}{run['startup']:>9.2f}")
    for name, (wall, cpu) in run["phases"].items():
        print(f"{name:<26}{wall:>9.2f}{cpu:>14.2f}")
    print(f"{'after the job (shutdown)':<26}{run['after_job']:>9.2f}")
    print(
        f"fixed (all but pass 2 + shards) {s['fixed_s']:.2f} s; pass 2 + shards "
        f"{s['variable_s']:.2f} s = {s['img_s_variable']} img/s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, nargs="+", default=[1000, 8000])
    parser.add_argument("--size", type=int, default=500)
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "weakly-bench")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    sizes = sorted(args.n)
    results = {}
    for n in sizes:
        manifest = make_corpus(args.work, n, args.size)
        runs = [run_once(manifest, args.work / f"out-{n}", args.cores) for _ in range(args.repeats)]
        best = min(runs, key=lambda r: r["command_wall"])
        results[n] = {**best, **summarise(best)}
        show(n, best)
    base = results[sizes[-1]]
    print(f"\nbaseline: the {sizes[-1]}-image job, {base['img_s_command']} img/s whole command")
    for n in sizes[:-1]:
        ratio = results[n]["img_s_command"] / base["img_s_command"]
        print(f"{n} images: {results[n]['img_s_command']} img/s = {ratio:.2f} of the baseline")
    if args.json:
        args.json.write_text(json.dumps({str(k): v for k, v in results.items()}, indent=1))


if __name__ == "__main__":
    main()
