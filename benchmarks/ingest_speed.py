"""End-to-end ingest speed per core against the bare floor.

Floor: a plain loop over the same files doing one Pillow decode + resize (shorter side 256) +
JPEG encode per image, in this process, on one core. weakly: `ingest()` on a local Ray with
`num_cpus=1` (Ray started before the clock), doing on top of that canonicalisation, pass-1
counting, weights, perceptual hashing, eval dedup against a 20-image index and shard writing.
Sources: local files, and the same files from a loopback HTTP server.
The comparison with img2dataset that used to live here (in-process Ray started before the
clock, img2dataset on 1 process) is replaced by benchmarks/ingest_vs_img2dataset.py, which
times both tools as whole commands on the same pinned cores, and a wider floor.

    python benchmarks/ingest_speed.py [--n 300]
"""

from __future__ import annotations

import argparse
import io
import tempfile
import threading
import time
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from pipeline.dedup import EvalIndex
from pipeline.ingest import IngestConfig, RunOptions, ingest
from weakly.synth import synth


def floor_rate(paths: list[Path], size: int = 256) -> float:
    start = time.perf_counter()
    for path in paths:
        img = Image.open(io.BytesIO(path.read_bytes())).convert("RGB")
        scale = size / min(img.size)
        if scale < 1:
            img = img.resize((round(img.width * scale), round(img.height * scale)), Image.BICUBIC)
        out = io.BytesIO()
        img.save(out, "JPEG", quality=90)
    return len(paths) / (time.perf_counter() - start)


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


class _Server(ThreadingHTTPServer):
    request_queue_size = 256  # the default 5 drops SYNs under 16 concurrent clients (1 s stalls)


def serve(folder: Path) -> tuple[ThreadingHTTPServer, str]:
    server = _Server(("127.0.0.1", 0), partial(_Quiet, directory=str(folder)))
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


def weakly_rate(manifest: Path, out: Path, index: Path, lexicon_dir: str | None) -> float:
    config = IngestConfig(
        eval_index=str(index), chunk_rows=64, shard_size=1000, lexicon_dir=lexicon_dir
    )
    start = time.perf_counter()
    summary = ingest([str(manifest)], out, config, RunOptions(progress=False, overwrite=True))
    return summary.input_rows / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=300)
    parser.add_argument("--lexicon-dir")
    args = parser.parse_args()

    import ray

    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for label, (lo, hi) in {"~500 px": (450, 550), "~1500 px": (1400, 1600)}.items():
            data = work / label.strip("~ px")
            synth(args.n, data / "syn", data / "eval", min_px=lo, max_px=hi, planted_fraction=0.05)
            index = data / "eval.idx"
            EvalIndex.build({"eval": str(data / "eval")}).save(index)
            manifest = pq.read_table(data / "syn" / "manifest.parquet")
            paths = [Path(p) for p in manifest["path"].to_pylist()]

            floor = floor_rate(paths)
            local = weakly_rate(
                data / "syn" / "manifest.parquet", data / "out-local", index, args.lexicon_dir
            )
            server, base = serve(data / "syn" / "images")
            urls = [f"{base}/{p.name}" for p in paths]
            url_manifest = data / "urls.parquet"
            pq.write_table(
                pa.table({"key": manifest["key"], "url": urls, "tags": manifest["tags"]}),
                url_manifest,
            )
            http = weakly_rate(url_manifest, data / "out-http", index, args.lexicon_dir)
            server.shutdown()

            print(f"{label}: {args.n} JPEGs, one core")
            print(f"  floor (decode + resize + encode loop):  {floor:7.1f} img/s")
            print(
                f"  weakly ingest, local files:             {local:7.1f} img/s  ratio {local / floor:.2f}"
            )
            print(
                f"  weakly ingest, loopback HTTP:           {http:7.1f} img/s  ratio {http / floor:.2f}"
            )


if __name__ == "__main__":
    main()
