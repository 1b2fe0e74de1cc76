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


ROW = re.compile(
    r"^\s*(?P<name>[a-z0-9 .:\-]+?)\s{2,}(?P<wall>\d+\.\d+)(?:\s+(?P<cpu>\d+\.\d+))?"
    r"(?:\s+[\d.]+%)?(?P<over>\s+\(overlapped\))?"
)


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
            name = m["name"].strip() + (" (overlapped)" if m["over"] else "")
            found[name] = (float(m["wall"]), cpu)
    return found


def stat_cpu(stat: str, tick: float) -> float:
    """User + system CPU seconds (all threads) from the text of a /proc/PID/stat."""
    fields = stat.rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) * tick


def process_cpu(pid: int) -> float:
    """User + system CPU seconds of one live process."""
    return stat_cpu(Path(f"/proc/{pid}/stat").read_text(), 1.0 / os.sysconf("SC_CLK_TCK"))


def _cpu_and_kind(pid: int, tick: float) -> tuple[float, str] | None:
    """(user + system CPU seconds, kind) of a live process, or None when it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return None
    cpu = stat_cpu(stat, tick)
    comm = stat[stat.index("(") + 1 : stat.rindex(")")]
    if "default_worker.py" in cmd or comm.startswith("ray::"):
        kind = "ray workers"
    elif " -m weakly ingest" in cmd:
        kind = "driver"
    else:
        kind = "ray system (gcs, raylet, agents)"
    return cpu, kind


class CpuSampler:
    """CPU seconds of a process and all its descendants by kind, read from /proc every
    `period` s (each process's last reading counts; one living under `period` is missed).
    On a shared machine CPU seconds move much less with the load than wall seconds do."""

    def __init__(self, root: int, period: float = 0.1) -> None:
        import threading

        self.root, self.period = root, period
        self.seen: dict[int, tuple[float, str]] = {}
        self.stop = threading.Event()
        self.tick = 1.0 / os.sysconf("SC_CLK_TCK")
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _tree(self) -> list[int]:
        parents = {}
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    stat = (entry / "stat").read_text()
                except OSError:
                    continue
                parents[int(entry.name)] = int(stat.rpartition(")")[2].split()[1])
        found, frontier = [self.root], [self.root]
        while frontier:
            frontier = [p for p, pp in parents.items() if pp in frontier]
            found += frontier
        return found

    def _run(self) -> None:
        while not self.stop.wait(self.period):
            for pid in self._tree():
                got = _cpu_and_kind(pid, self.tick)
                if got is not None:
                    self.seen[pid] = (got[0], "driver") if pid == self.root else got

    def totals(self) -> dict[str, float]:
        self.stop.set()
        self.thread.join()
        out: dict[str, float] = {}
        for cpu, kind in self.seen.values():
            out[kind] = round(out.get(kind, 0.0) + cpu, 2)
        return out


def run_once(manifest: Path, out: Path, cores: int) -> dict:
    cmd = [
        sys.executable, "-m", "weakly", "ingest", str(manifest), "--out", str(out),
        "--num-cpus", str(cores), "--no-progress", "--profile", "--overwrite",
    ]  # fmt: skip
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    began = time.perf_counter()
    proc = subprocess.Popen(
        cmd, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    sampler = CpuSampler(proc.pid)
    stdout, stderr = proc.communicate()
    wall = time.perf_counter() - began
    cpu = sampler.totals()
    if proc.returncode:
        raise SystemExit(f"ingest failed ({proc.returncode}):\n{stderr[-3000:]}")
    phases = parse_profile(stdout)
    rows = int(re.search(r"rows in\s+([\d,]+)", stdout)[1].replace(",", ""))
    startup = phases.pop("start-up before the job", (0.0, 0.0))[0]
    job = phases.pop("job total")[0]
    return {
        "rows": rows,
        "command_wall": round(wall, 3),
        "startup": round(startup, 3),
        "job": round(job, 3),
        "after_job": round(max(0.0, wall - startup - job), 3),
        "phases": phases,
        "cpu_by_kind": cpu,
        "cpu_total": round(sum(cpu.values()), 2),
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
    cpu = ", ".join(f"{k} {v:.2f}" for k, v in sorted(run["cpu_by_kind"].items()))
    print(f"CPU s of the whole command: {run['cpu_total']:.2f} ({cpu})")
    print(
        f"fixed (all but pass 2 + shards) {s['fixed_s']:.2f} s; pass 2 + shards "
        f"{s['variable_s']:.2f} s = {s['img_s_variable']} img/s"
    )


GROUPS = {  # cProfile functions -> the component they belong to (first match wins)
    "prepare_image (decode, resize, hash, encode)": ("prepare_image",),
    "fetch (file read, threads)": ("fetch_completed", "_fetch_one", "fetch_one"),
    "sample json": ("sample_json",),
    "parquet write (bucket, index parts)": ("put_parquet", "parquet_bytes"),
    "parquet read": ("read_row_group", "read_parquet"),
    "weights and buckets": ("chunk_records",),
    "eval dedup": ("_eval_matches",),
    "tar write": ("write_shard",),
    "object commit (store.put)": ("put",),
}


def profile_components(fn, *args) -> tuple[float, dict]:
    """(CPU s of `fn(*args)` in this thread, {component: cumulative CPU s}) by cProfile,
    with `time.thread_time` as its clock so waits do not count."""
    import cProfile
    import pstats

    prof = cProfile.Profile(time.thread_time)
    began = time.thread_time()
    prof.runcall(fn, *args)
    total = time.thread_time() - began
    stats = pstats.Stats(prof).stats
    parts = {}
    for group, names in GROUPS.items():
        cum = [c for (_, _, func), (_, _, _, c, _) in stats.items() if func in names]
        parts[group] = max(cum, default=0.0)
    return total, parts


def profile_pass2(out: Path) -> dict:
    """Pass-2 chunks and a shard task of a finished job, run again in this fresh process
    under cProfile: the first chunk (cold: imports and first calls, what every new worker
    pays once), then a second one (warm), then one shard task twice (cold, warm): where their
    CPU goes beyond the per-image function. The job's output is copied first; the copy is
    what is rewritten."""
    sys.path.insert(0, str(REPO))
    import numpy as np

    from pipeline import work_layout as lay
    from pipeline.buckets import write_bucket
    from pipeline.ingest_cli import _add_ingest_arguments, config_from_args
    from pipeline.pass2 import process_chunk
    from pipeline.plan import Plan
    from weakly_base.shard_format import SHARD_DIR
    from weakly_base.storage import Store

    scratch = out.with_name(out.name + "-profiled")
    shutil.rmtree(scratch, ignore_errors=True)
    shutil.copytree(out, scratch)
    parser = argparse.ArgumentParser()
    _add_ingest_arguments(parser)
    config = config_from_args(parser.parse_args(["x", "--out", str(scratch)]))
    store = Store.at(str(scratch))
    plan = Plan.load(store)
    counts, law = np.asarray(plan.counts), plan.solved_law()
    got: dict = {"chunk_rows": min(config.chunk_rows, plan.live[0])}
    for tag, c in (("cold", 0), ("warm", 1)):
        cpu, parts = profile_components(process_chunk, store, 0, c, config, counts, law, None)
        got[f"chunk_{tag}_cpu_s"] = round(cpu, 3)
        got[f"chunk_{tag}_components"] = {k: round(v, 3) for k, v in parts.items() if v}
    bucket = max(plan.buckets, key=lambda b: len(store.list(lay.bucket_dir(b))))
    got["bucket_rows"] = sum(
        int(json.loads(store.get(lay.chunk_done(f, c)))["written"].get(str(bucket), 0))
        for f, live in enumerate(plan.live)
        for c in range(-(-live // config.chunk_rows))
    )
    for tag in ("cold", "warm"):
        store.remove_tree(SHARD_DIR)  # committed shards would be skipped, not rewritten
        cpu, parts = profile_components(write_bucket, store, bucket, config.shard_size, 0.0)
        got[f"bucket_{tag}_cpu_s"] = round(cpu, 3)
        got[f"bucket_{tag}_components"] = {k: round(v, 3) for k, v in parts.items() if v}
    shutil.rmtree(scratch, ignore_errors=True)
    return got


def show_profile(got: dict) -> None:
    for what, rows in (("chunk", got["chunk_rows"]), ("bucket", got["bucket_rows"])):
        for tag in ("cold", "warm"):
            cpu = got[f"{what}_{tag}_cpu_s"]
            name = "pass-2 chunk" if what == "chunk" else "shard task"
            print(f"\n== one {name} ({tag}), {rows} rows: {cpu:.2f} CPU s "
                  f"({cpu / max(rows, 1) * 1000:.2f} ms/row)")  # fmt: skip
            for part, t in got[f"{what}_{tag}_components"].items():
                print(f"  {part:<44}{t:>7.3f} s {t / cpu:>6.1%}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, nargs="+", default=[1000, 8000])
    parser.add_argument("--size", type=int, default=500)
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "weakly-bench")
    parser.add_argument("--json", type=Path)
    parser.add_argument(
        "--profile-tasks",
        action="store_true",
        help="also rerun one pass-2 chunk and one shard task of the largest job in this "
        "process under cProfile (CPU per component)",
    )
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
    if args.profile_tasks:
        results["tasks"] = profile_pass2(args.work / f"out-{sizes[-1]}")
        show_profile(results["tasks"])
    if args.json:
        args.json.write_text(json.dumps({str(k): v for k, v in results.items()}, indent=1))


if __name__ == "__main__":
    main()
