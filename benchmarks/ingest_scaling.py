"""Does ingest scale linearly? Time per image and peak memory per Ray worker at two sizes.

A pool of synthetic ~500 px JPEGs (real bundled photos, `weakly synth`) is referenced by N
manifest rows, each with its own key and tags, so N can reach 1e5 without writing 1e5 source
files; every row is still fetched, decoded, hashed, checked against the eval index, resized,
encoded and written to a shard. The same job runs at each size in this process on a local Ray;
a sampler thread reads VmRSS of every process under this one (the Ray workers) twice a second.

    python benchmarks/ingest_scaling.py [--sizes 10000 100000] [--num-cpus 2]
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import threading
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from ingest_speed import floor_rate

from pipeline.dedup import EvalIndex
from pipeline.ingest import IngestConfig, RunOptions, ingest
from weakly.synth import synth


def _children(root: int) -> dict[int, str]:
    """pid -> command line of every live descendant of `root`, from /proc."""
    parent_of, cmd = {}, {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                parent_of[int(entry)] = int(fh.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{entry}/cmdline", "rb") as fh:
                cmd[int(entry)] = fh.read().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, IndexError, ValueError):
            continue
    found, frontier = {}, [root]
    while frontier:
        parent = frontier.pop()
        for pid, ppid in parent_of.items():
            if ppid == parent and pid not in found:
                found[pid] = cmd.get(pid, "")
                frontier.append(pid)
    return found


def _rss_mib(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


class WorkerMemory:
    """Peak RSS seen per Ray worker process (command line starting `ray::`) while running."""

    def __init__(self) -> None:
        self.peak: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            for pid, cmd in _children(os.getpid()).items():
                if cmd.startswith("ray::"):
                    self.peak[pid] = max(self.peak.get(pid, 0.0), _rss_mib(pid))

    def __enter__(self) -> WorkerMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def repeated_manifest(source: Path, n: int, out: Path) -> Path:
    """n rows cycling through the source manifest's rows, each with a unique key."""
    base = pq.read_table(source).to_pylist()
    rows = [dict(base[i % len(base)], key=f"r{i:07d}") for i in range(n)]
    path = out / f"manifest-{n}.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--pool", type=int, default=2000, help="distinct source JPEGs")
    parser.add_argument("--num-cpus", type=int, default=2)
    args = parser.parse_args()
    import ray

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        made = synth(args.pool, tmp / "pool", tmp / "eval", min_px=400, max_px=600)
        pool = sorted((tmp / "pool" / "images").glob("*.jpg"))
        floor = floor_rate(pool)
        print(f"floor (decode + resize + encode loop, one core): {floor:.1f} img/s", flush=True)
        index = EvalIndex.build({"eval": str(tmp / "eval")})
        index.save(tmp / "eval.idx")
        ray.init(num_cpus=args.num_cpus, include_dashboard=False, log_to_driver=False)
        config = IngestConfig(vocab="in1k", eval_index=str(tmp / "eval.idx"), shard_size=2000)
        results = []
        for n in args.sizes:
            manifest = repeated_manifest(made.manifest, n, tmp)
            with WorkerMemory() as memory:
                summary = ingest(
                    [str(manifest)], tmp / f"out-{n}", config, RunOptions(progress=False)
                )
            per_image_ms = 1000 * summary.seconds / n
            worker_peak = max(memory.peak.values(), default=0.0)
            results.append((n, per_image_ms, worker_peak, len(memory.peak)))
            print(
                f"{n:>8,} rows: {summary.seconds:7.1f} s, {per_image_ms:.2f} ms/image "
                f"({n / summary.seconds:.0f} images/s on {args.num_cpus} cores, "
                f"{n / summary.seconds / args.num_cpus / floor:.2f} of the floor per core), "
                f"written {summary.written:,}, peak worker RSS {worker_peak:,.0f} MiB "
                f"over {len(memory.peak)} workers",
                flush=True,
            )
            manifest.unlink()
        driver = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        (n0, t0, m0, _), (n1, t1, m1, _) = results[0], results[-1]
        print(f"time per image {n1:,} vs {n0:,}: ratio {t1 / t0:.3f} (goal within 10%)")
        print(f"peak worker RSS {n1:,} vs {n0:,}: {m1:,.0f} vs {m0:,.0f} MiB (ratio {m1 / m0:.2f})")
        print(f"driver peak RSS {driver:,.0f} MiB")
        ray.shutdown()


if __name__ == "__main__":
    main()
