"""Ingest under load: peak resident memory per Ray worker stays flat as the row count grows.

Rows are metadata-light: each names one of 64 small real JPEGs (96 px, from the bundled photos)
by path, with 1-3 hashtags, so the run measures the job's own bookkeeping, not image decoding.
The manifest is a folder of parquet files of `--rows-per-file` rows (20k by default).
A baseline run of `--base` rows and the full run of `--n` rows go through `ingest()` in this
process on one local Ray with `num_cpus=2`; a sampler thread reads VmHWM (peak RSS) of every
Ray worker below this process. Prints, per run: rows/s, the largest worker peak RSS, the driver's
peak RSS, and the ratios full/baseline. Bounded memory per worker means a ratio near 1.

    python benchmarks/load_ingest.py [--n 200000] [--base 20000] [--rows-per-file 20000]
"""

from __future__ import annotations

import argparse
import io
import os
import resource
import sys
import tempfile
import threading
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from proc_tools import cmdline, descendants, rss_kib  # noqa: E402

from pipeline.ingest import IngestConfig, RunOptions, ingest  # noqa: E402
from weakly.photos import bundled_photos  # noqa: E402

TAGS = ["#tabby", "#goldenretriever", "#espresso", "#goose", "#samoyed", "#brownbear",
        "#pizza", "#volcano", "#sunflower", "#lighthouse", "#instagood", "#love"]  # fmt: skip


def write_inputs(folder: Path, n: int, per_file: int) -> Path:
    """A folder of parquet manifests of `per_file` rows each (manifests come in parts; one
    pass-1 task reads one file, so the file size, not the row count, sets its memory)."""
    photos = [img for _, img in bundled_photos()]
    paths = []
    for i in range(64):
        img = photos[i % len(photos)].resize((96 + i % 7, 96))
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=85)
        path = folder / f"img{i:02d}.jpg"
        path.write_bytes(buf.getvalue())
        paths.append(str(path))
    manifests = folder / f"rows-{n}"
    manifests.mkdir()
    for start in range(0, n, per_file):
        rows = range(start, min(n, start + per_file))
        pq.write_table(
            pa.table(
                {
                    "key": [f"r{i:07d}" for i in rows],
                    "path": [paths[i % 64] for i in rows],
                    "tags": [
                        [TAGS[(i * 7 + j) % len(TAGS)] for j in range(1 + i % 3)] for i in rows
                    ],
                }
            ),
            manifests / f"part-{start // per_file:05d}.parquet",
        )
    return manifests


class WorkerPeaks:
    """Samples the resident memory of every Ray worker below this process, keyed by the task it
    is running (Ray sets the process title to `ray::<task>`), while a run is under way."""

    def __init__(self) -> None:
        self.peaks: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        while not self._stop.is_set():
            for pid in descendants(os.getpid()):
                title = cmdline(pid)
                if title.startswith("ray::") and "Agent" not in title:
                    task = title.split()[0][5:]
                    self.peaks[task] = max(self.peaks.get(task, 0), rss_kib(pid))
            self._stop.wait(0.1)

    def __enter__(self) -> WorkerPeaks:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def run(manifest: Path, out: Path, lexicon_dir: str | None) -> tuple[float, dict[str, int], int]:
    config = IngestConfig(shard_size=5000, chunk_rows=2048, lexicon_dir=lexicon_dir)
    with WorkerPeaks() as peaks:
        start = time.perf_counter()
        summary = ingest([str(manifest)], out, config, RunOptions(progress=False))
        seconds = time.perf_counter() - start
    assert summary.written + summary.rejected == summary.input_rows
    driver = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return summary.input_rows / seconds, peaks.peaks, driver


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=200_000)
    ap.add_argument("--base", type=int, default=20_000)
    ap.add_argument("--rows-per-file", type=int, default=20_000)
    ap.add_argument("--lexicon-dir", help="compiled lexicon (default: the cached one)")
    args = ap.parse_args()
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        results = {}
        for label, n in (("baseline", args.base), ("full", args.n)):
            manifest = write_inputs(folder, n, args.rows_per_file)
            results[label] = run(manifest, folder / f"out-{n}", args.lexicon_dir)
            rate, tasks, driver = results[label]
            print(f"{label:<9}{n:>9,} rows  {rate:>8,.0f} rows/s  driver peak RSS "
                  f"{driver / 1024:>6.0f} MiB")  # fmt: skip
            for task, kib in sorted(tasks.items()):
                print(f"    worker peak RSS running {task:<16}{kib / 1024:>7.0f} MiB")
    (_, t0, d0), (_, t1, d1) = results["baseline"], results["full"]
    w0, w1 = max(t0.values()), max(t1.values())
    print(
        f"rows x{args.n / args.base:.0f}: largest worker peak RSS {w0 / 1024:.0f} -> "
        f"{w1 / 1024:.0f} MiB (x{w1 / w0:.2f}), driver x{d1 / d0:.2f}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
