"""Pass 1 at corpus scale: `weakly ingest --plan-only` timed as a whole command, with the
driver's and the Ray workers' peak memory, against a bare pyarrow read of the same files.

For each `--rows` N: a parquet manifest of N rows in files of `--rows-per-file` (url + 1-5
hashtag-style tags drawn Zipf over WordNet lemma forms, ~30% junk rows, ~1% rows that repeat an
earlier row's url and tags so their derived keys are duplicates, within and across files),
built with numpy/Arrow and cached under `--work`. Then, in this order:
  baseline  `pyarrow.parquet.read_table(file, columns=["url", "tags"], use_threads=False)` over
            every file, one process, one thread: rows/s per core;
  pass 1    `weakly ingest MANIFEST_DIR --out OUT --plan-only --num-cpus C --no-progress
            --lexicon-dir LEX` as a subprocess. The subprocess is `weakly.cli.main` under a small
            wrapper (this file with `--driver`) that only records: when `init_ray` returned
            (Ray start-up), when each round of tasks finished, and at exit its own VmHWM and
            CPU time. This process polls /proc meanwhile: the driver's VmHWM every 0.2 s, and
            every 0.5 s each `ray::` process descended from the driver (VmHWM, VmRSS, CPU).
Printed per size: wall time (Ray start-up included and excluded), rows/s, rows/s/core, the
ratio to the baseline per core, driver peak RSS (and as a ratio of the smallest size), worker
peak RSS, output bytes under `_work/` and the rest, objects written, and per-round times.

    python benchmarks/plan_scale.py --rows 1e6 1e7 [--rows-per-file 1e6] [--work DIR]
        [--num-cpus 2] [--vocab top:8500] [--drop-manifest] [--keep-out]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

MANIFEST_VERSION = 1
JUNK_SHARE = 0.3
DUPLICATE_SHARE = 0.01
N_WORDS = 50_000
N_JUNK = 20_000
ZIPF_EXPONENT = 1.1
MAX_TAGS = 5
_MARK = "PLAN_SCALE "  # the driver wrapper's lines on stderr

# ---------------------------------------------------------------------------------------------
# The driver wrapper: `plan_scale.py --driver ARGS...` is `weakly ARGS...`, plus timestamps.


def _status_kib(pid: int | str, field: str) -> int:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _driver(argv: list[str]) -> int:
    import atexit
    import resource

    start = time.perf_counter()

    def say(what: str, **fields) -> None:
        fields["t"] = round(time.perf_counter() - start, 3)
        sys.stderr.write(_MARK + json.dumps({"event": what, **fields}) + "\n")
        sys.stderr.flush()

    def at_exit() -> None:  # registered before Ray's own handler, so it runs after it
        use = resource.getrusage(resource.RUSAGE_SELF)
        say(
            "exit",
            vmhwm_kib=_status_kib("self", "VmHWM"),
            maxrss_kib=use.ru_maxrss,
            cpu_s=round(use.ru_utime + use.ru_stime, 2),
        )

    atexit.register(at_exit)
    import pipeline.ingest as ingest_module
    import pipeline.plan as plan_module
    from weakly.cli import main

    init_ray, fold_results = ingest_module.init_ray, plan_module.fold_results

    def timed_init(*args, **kwargs):
        began = time.perf_counter()
        ray = init_ray(*args, **kwargs)
        say("ray_up", seconds=round(time.perf_counter() - began, 3))
        return ray

    def timed_fold(ray, refs, desc, *args, **kwargs):
        began = time.perf_counter()
        tasks = len(refs)
        fold_results(ray, refs, desc, *args, **kwargs)
        say("round", name=desc, tasks=tasks, seconds=round(time.perf_counter() - began, 3))

    ingest_module.init_ray = timed_init
    plan_module.fold_results = timed_fold
    say("imported")
    return main(argv)


# ---------------------------------------------------------------------------------------------
# Manifests: every row a pure function of (seed, global row id), so files build independently.


def _mix(h):
    """splitmix64's finaliser over a uint64 array (wrapping arithmetic)."""
    import numpy as np

    with np.errstate(over="ignore"):
        h = (h ^ (h >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        h = (h ^ (h >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return h ^ (h >> np.uint64(31))


def _uniform(ids, stream, seed: int):
    """A uniform [0, 1) draw per id, independent across `stream` values."""
    import numpy as np

    with np.errstate(over="ignore"):
        x = (
            ids.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)
            + np.asarray(stream, np.uint64) * np.uint64(0xD1B54A32D192ED03)
            + np.uint64(seed) * np.uint64(0xA0761D6478BD642F)
        )
    return (_mix(x) >> np.uint64(11)).astype(np.float64) * 2.0**-53


def tag_words(lexicon, seed: int) -> list[str]:
    """The hashtag pool: `N_WORDS` WordNet lemma forms as hashtags (in Zipf rank order), then
    `N_JUNK` junk tags (as benchmarks/ingest_pass1.py's make_manifest)."""
    rng = random.Random(seed)
    forms = sorted(set(lexicon._forms.column("lemma").to_pylist()))
    rng.shuffle(forms)
    words = ["#" + f.replace("_", "") for f in forms[:N_WORDS]]
    return words + [f"#junk{i}" for i in range(N_JUNK)]


def manifest_file(first: int, n: int, pool, seed: int):
    """Rows `first`..`first+n-1` of the corpus as an Arrow table (url, tags)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    n_words = len(pool) - N_JUNK
    p = 1.0 / np.arange(1, n_words + 1) ** ZIPF_EXPONENT
    cdf = np.cumsum(p / p.sum())
    ids = np.arange(first, first + n, dtype=np.uint64)
    # ~1% of rows repeat an earlier row (anywhere before them in the corpus): same url and tags,
    # hence the same derived key. Content is drawn from `src`, the row being repeated.
    dup = (_uniform(ids, 8, seed) < DUPLICATE_SHARE) & (ids > 0)
    src = np.where(dup, np.floor(_uniform(ids, 9, seed) * ids).astype(np.uint64), ids)
    junk = _uniform(src, 0, seed) < JUNK_SHARE
    n_tags = np.where(junk, 1, 1 + np.floor(_uniform(src, 1, seed) * MAX_TAGS)).astype(np.int64)
    offsets = np.zeros(n + 1, np.int64)
    np.cumsum(n_tags, out=offsets[1:])
    row_of = np.repeat(np.arange(n), n_tags)
    position = np.arange(offsets[-1]) - offsets[row_of]
    item_src = src[row_of]
    word = np.minimum(np.searchsorted(cdf, _uniform(item_src, 2 + position, seed)), n_words - 1)
    junk_word = n_words + np.floor(_uniform(item_src, 7, seed) * N_JUNK).astype(np.int64)
    values = pool.take(pa.array(np.where(junk[row_of], junk_word, word)))
    tags = pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), values)
    url = pc.binary_join_element_wise(
        "https://example.invalid/img/", pa.array(src).cast(pa.string()), ".jpg", ""
    )
    return pa.table({"url": url, "tags": tags})


def build_manifest(folder: Path, rows: int, per_file: int, lexicon_dir: Path, seed: int) -> list:
    """The manifest files (cached: reused when `folder/manifest.json` matches)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    spec = {"version": MANIFEST_VERSION, "rows": rows, "per_file": per_file, "seed": seed}
    marker = folder / "spec.txt"  # not a manifest suffix: the folder is the manifest
    names = [f"part-{i:05d}.parquet" for i in range((rows + per_file - 1) // per_file)]
    if marker.exists() and json.loads(marker.read_text()) == spec:
        print(f"manifest {folder}: cached")
        return [folder / name for name in names]
    from wordnet_tools import load_lexicon

    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    pool = pa.array(tag_words(load_lexicon("nouns", lexicon_dir=lexicon_dir), seed), pa.string())
    began = time.perf_counter()
    for i, name in enumerate(names):
        first = i * per_file
        table = manifest_file(first, min(per_file, rows - first), pool, seed)
        pq.write_table(table, folder / f".{name}.tmp")
        os.replace(folder / f".{name}.tmp", folder / name)
    marker.write_text(json.dumps(spec))
    print(f"manifest {folder}: {len(names)} files built in {time.perf_counter() - began:.1f} s")
    return [folder / name for name in names]


# ---------------------------------------------------------------------------------------------
# Measuring the command.


def bare_read(files: list) -> dict:
    """pyarrow's read of the same columns, one thread: the least pass 1 can cost."""
    import pyarrow.parquet as pq

    best: dict = {}
    began = time.perf_counter()
    for repeat in range(3):  # best of up to 3 (the machine is shared), within ~60 s
        rows = 0
        wall, cpu = time.perf_counter(), time.process_time()
        for path in files:
            rows += pq.read_table(path, columns=["url", "tags"], use_threads=False).num_rows
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        if not best or wall < best["wall_s"]:
            best = {"rows": rows, "wall_s": wall, "cpu_s": cpu}
        best["repeats"] = repeat + 1
        if time.perf_counter() - began > 60:
            break
    best["rows_per_s"] = best["rows"] / best["wall_s"]
    best["rows_per_cpu_s"] = best["rows"] / max(best["cpu_s"], 1e-9)
    return best


def _proc_table() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, first word of the command line) of every process."""
    out = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{entry}/cmdline", "rb") as fh:
                cmd = fh.read().split(b"\0", 1)[0].decode(errors="replace")
        except (OSError, IndexError, ValueError):
            continue
        out[int(entry)] = (ppid, cmd)
    return out


def _cpu_s(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


class Watch:
    """Polls the driver's VmHWM (0.2 s) and its `ray::` descendants (0.5 s) until stopped."""

    AGENTS = ("ray::DashboardAgent", "ray::RuntimeEnvAgent")

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.driver_hwm_kib = 0
        self.workers: dict[int, dict] = {}  # pid -> name, hwm_kib, rss_kib, cpu_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _descendants(self) -> dict[int, str]:
        table = _proc_table()
        found, frontier = {}, [self.pid]
        children: dict[int, list[int]] = {}
        for pid, (ppid, _) in table.items():
            children.setdefault(ppid, []).append(pid)
        while frontier:
            for pid in children.get(frontier.pop(), []):
                if pid not in found:
                    found[pid] = table[pid][1]
                    frontier.append(pid)
        return found

    def _run(self) -> None:
        tick = 0
        while not self._stop.wait(0.2):
            self.driver_hwm_kib = max(self.driver_hwm_kib, _status_kib(self.pid, "VmHWM"))
            tick += 1
            if tick % 3 == 0:  # ~0.5 s
                for pid, cmd in self._descendants().items():
                    if not cmd.startswith("ray::") or cmd.startswith(self.AGENTS):
                        continue
                    seen = self.workers.setdefault(pid, {"hwm_kib": 0, "rss_kib": 0})
                    seen["name"] = cmd
                    seen["hwm_kib"] = max(seen["hwm_kib"], _status_kib(pid, "VmHWM"))
                    seen["rss_kib"] = max(seen["rss_kib"], _status_kib(pid, "VmRSS"))
                    seen["cpu_s"] = max(seen.get("cpu_s", 0.0), _cpu_s(pid))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def tree_bytes(root: Path) -> dict:
    out = {"work_bytes": 0, "work_objects": 0, "rest_bytes": 0, "rest_objects": 0}
    for folder, _, names in os.walk(root):
        where = "work" if Path(folder).relative_to(root).parts[:1] == ("_work",) else "rest"
        for name in names:
            out[f"{where}_bytes"] += os.path.getsize(os.path.join(folder, name))
            out[f"{where}_objects"] += 1
    return out


def run_plan_only(manifest: Path, out: Path, lexicon_dir: Path, args, log: Path) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    command = [
        sys.executable,
        os.path.abspath(__file__),
        "--driver",
        "ingest",
        str(manifest),
        "--out",
        str(out),
        "--plan-only",
        "--num-cpus",
        str(args.num_cpus),
        "--no-progress",
        "--lexicon-dir",
        str(lexicon_dir),
    ]
    if args.vocab:
        command += ["--vocab", args.vocab]
    print("$", " ".join(command[3:]).replace("ingest", "weakly ingest", 1), flush=True)
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    with open(log, "w") as sink:
        began = time.perf_counter()
        proc = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, env=env)
        watch = Watch(proc.pid)
        code = proc.wait()
        wall = time.perf_counter() - began
        watch.stop()
    events, text = [], log.read_text()
    for line in text.splitlines():
        if line.startswith(_MARK):
            events.append(json.loads(line[len(_MARK) :]))
    if code != 0:
        raise SystemExit(f"weakly ingest failed ({code}); see {log}:\n{text[-3000:]}")
    ray_up = next((e["seconds"] for e in events if e["event"] == "ray_up"), 0.0)
    ray_up_at = next((e["t"] for e in events if e["event"] == "ray_up"), 0.0)
    end = next(e for e in events if e["event"] == "exit")
    plan = json.loads((out / "plan.json").read_text())
    workers = list(watch.workers.values())
    return {
        "wall_s": wall,
        "ray_init_s": ray_up,
        "ray_up_at_s": ray_up_at,
        "rounds": [e for e in events if e["event"] == "round"],
        "driver_hwm_mib": max(end["vmhwm_kib"], watch.driver_hwm_kib) / 1024,
        "driver_hwm_polled_mib": watch.driver_hwm_kib / 1024,
        "driver_cpu_s": end["cpu_s"],
        "worker_hwm_mib": max((w["hwm_kib"] for w in workers), default=0) / 1024,
        "worker_rss_mib": max((w["rss_kib"] for w in workers), default=0) / 1024,
        "worker_cpu_s": sum(w.get("cpu_s", 0.0) for w in workers),
        "workers": len(workers),
        "plan": {
            "totals": plan["totals"],
            "partitions": plan["partitions"],
            "files": len(plan["files"]),
            "buckets": len(plan["buckets"]),
            "rejects": plan["rejects_by_reason"],
            "vocab": plan["vocab"],
        },
        **tree_bytes(out),
    }


def _count(text: str) -> int:
    return int(float(text))


def _mib(n: float) -> str:
    return f"{n / 2**20:,.0f} MiB"


def report(rows: int, files: int, base: dict, got: dict, smallest: dict | None, cores: int):
    net = got["wall_s"] - got["ray_up_at_s"]
    per_core = rows / got["wall_s"] / cores
    per_core_net = rows / net / cores
    driver_ratio = got["driver_hwm_mib"] / smallest["driver_hwm_mib"] if smallest else 1.0
    cpu = got["worker_cpu_s"] + got["driver_cpu_s"]
    lines = [
        f"| rows | {rows:,} |",
        f"| manifest files / key partitions | {files} / {got['plan']['partitions']} |",
        f"| wall, whole command | {got['wall_s']:,.1f} s |",
        f"| wall after Ray is up (ray.init {got['ray_init_s']:.1f} s, "
        f"up at {got['ray_up_at_s']:.1f} s) | {net:,.1f} s |",
        f"| rows/s (whole command) | {rows / got['wall_s']:,.0f} |",
        f"| rows/s/core ({cores} cores; after Ray is up) | {per_core:,.0f} ({per_core_net:,.0f}) |",
        f"| rows per CPU-second (workers {got['worker_cpu_s']:,.0f} s + driver "
        f"{got['driver_cpu_s']:,.0f} s) | {rows / cpu:,.0f} |",
        f"| bare pyarrow read_table(url, tags), one thread, best of {base.get('repeats', 1)} | "
        f"{base['rows_per_s']:,.0f} rows/s ({base['rows_per_cpu_s']:,.0f} per CPU-second) |",
        f"| pass 1 vs bare read, per core (after Ray is up) | {per_core / base['rows_per_s']:.3f} "
        f"({per_core_net / base['rows_per_s']:.3f}) |",
        f"| pass 1 vs bare read, per CPU-second | {rows / cpu / base['rows_per_cpu_s']:.3f} |",
        f"| driver peak RSS (VmHWM) | {got['driver_hwm_mib']:,.0f} MiB "
        f"({driver_ratio:.2f}x the smallest size) |",
        f"| worker peak RSS (max VmHWM over {got['workers']} `ray::` processes) | "
        f"{got['worker_hwm_mib']:,.0f} MiB |",
        f"| output `_work/` | {_mib(got['work_bytes'])}, {got['work_objects']:,} objects |",
        f"| output, the rest (plan.json, index/) | {_mib(got['rest_bytes'])}, "
        f"{got['rest_objects']:,} objects |",
    ]
    for r in got["rounds"]:
        lines.append(f"| round `{r['name']}` ({r['tasks']:,} tasks) | {r['seconds']:,.1f} s |")
    totals = got["plan"]["totals"]
    lines.append(
        f"| to fetch / rejected | {totals['to_fetch']:,} / {totals['rejected']:,} "
        f"({', '.join(f'{k} {v:,}' for k, v in got['plan']['rejects'].items())}) |"
    )
    print("| measure | figure |\n| --- | ---: |")
    print("\n".join(lines), flush=True)


def _smallest_result(work: Path, vocab: str, rows: int) -> dict | None:
    """An earlier run's result at a smaller size (driver RSS ratios then span both runs)."""
    found = []
    for path in work.glob(f"result-*-{vocab.replace(':', '')}.json"):
        result = json.loads(path.read_text())
        if result["baseline"]["rows"] < rows:
            found.append(result)
    return min(found, key=lambda r: r["baseline"]["rows"], default=None)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--driver":
        sys.exit(_driver(sys.argv[2:]))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=_count, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--rows-per-file", type=_count, default=1_000_000)
    parser.add_argument("--work", type=Path, default=Path("/tmp/weakly-plan-scale"))
    parser.add_argument("--num-cpus", type=int, default=2)
    parser.add_argument("--vocab", help="passed to weakly ingest (default: its own, in1k)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--drop-manifest", action="store_true", help="delete it after the run")
    parser.add_argument("--keep-out", action="store_true", help="keep --out after measuring")
    args = parser.parse_args()
    from wordnet_tools import build_lexicon

    lexicon_dir = build_lexicon()
    args.work.mkdir(parents=True, exist_ok=True)
    vocab = args.vocab or "in1k"
    smallest = _smallest_result(args.work, vocab, min(args.rows))
    results = {}
    for rows in sorted(args.rows):
        tag = (
            f"{rows:.0e}".replace("+0", "").replace("+", "")
            if rows == float(f"{rows:.0e}")
            else str(rows)
        )
        folder = args.work / f"manifest-{tag}-{args.rows_per_file}-s{args.seed}"
        files = build_manifest(folder, rows, args.rows_per_file, lexicon_dir, args.seed)
        base = bare_read(files)
        out = args.work / f"out-{tag}"
        got = run_plan_only(folder, out, lexicon_dir, args, args.work / f"ingest-{tag}.log")
        print(f"\n### {rows:,} rows, vocab {vocab}\n")
        report(rows, len(files), base, got, smallest, args.num_cpus)
        smallest = smallest or got
        results[rows] = {"baseline": base, **got}
        (args.work / f"result-{tag}-{vocab.replace(':', '')}.json").write_text(
            json.dumps(results[rows], indent=1)
        )
        if not args.keep_out:
            shutil.rmtree(out, ignore_errors=True)
        if args.drop_manifest:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
