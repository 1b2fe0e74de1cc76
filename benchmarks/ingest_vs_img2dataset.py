"""`weakly ingest` against img2dataset on the same URLs and cores, and both against the floor.

Why this shape: a comparison is only believable when both tools do the same job as users run
them, on the same machine, and are timed the same way. So:

- img2dataset runs from its own virtualenv (created on first use at
  `<repo>/.cache/img2dataset-venv`, version pinned below, or `--img2dataset PATH`), so its
  pins never touch weakly's environment and weakly's never help or hurt it.
- Both read the same URL list (a parquet with `url` and `tags`) from one loopback HTTP server
  (HTTP/1.1, keep-alive capable, TCP_NODELAY as CDNs set it, `request_queue_size` 256) that
  runs in its own process pinned to the same C cores as the tools: it shares those cores,
  and its CPU cost lands the same on both tools.
- Each tool is timed as a whole subprocess (`taskset -c 0-(C-1)`, interpreter start and Ray
  start-up included: what a user waits for), best of `--repeats` runs, weakly and img2dataset
  alternating, each into a fresh output folder. Both must write ~all images (weakly drops the
  planted eval near-copies by design; those count as handled), else the script fails.
- weakly runs with canonicalisation (`--vocab in1k`), eval dedup against an index built by
  `weakly eval-index build` from the synth eval set, and perceptual hashing: the full job.
  img2dataset runs keep_ratio (shorter side to 256, INTER_AREA), only-if-bigger, JPEG q90,
  webdataset, with its EXIF extraction and sha256 turned off (weakly does neither), so
  img2dataset does strictly less work per image than weakly.
- The floor: the fastest single-thread decode + antialiased downscale to 256 px shorter side +
  JPEG q90 encode found per core on the same files read from disk (Pillow variants and weakly's
  own antialiased OpenCV path in this interpreter, the plain OpenCV variants in the img2dataset
  venv, which ships its own opencv-python-headless).
  Non-antialiased shortcuts are timed and listed but never count as the floor, and neither
  does a variant whose output of 600 and 2048 px zone plates keeps aliasing above 10 (of
  127.5; benchmarks/aliasing.py): a box or area filter after a DCT-scaled decode is fast
  precisely because it skips the antialiasing.

Corpora are `weakly.synth` crops of the photos bundled with scikit-image/scikit-learn at two
sizes (shorter side ~500 px and ~1,500 px; synth's min/max px bound the longer side), cached
in `--work` between runs. About half the ~500 px images have a shorter side >= 512, the ones
where a 1/2-scale JPEG decode (Pillow `draft`, OpenCV `IMREAD_REDUCED_COLOR_2`) still covers
256 px; the floor and weakly both gain from those, img2dataset (full decode) does not.

    PYTHONPATH=. python benchmarks/ingest_vs_img2dataset.py [--n 20000] [--n-large 2000]
        [--cores 2] [--repeats 3] [--sizes 500,1500] [--work DIR] [--json OUT]
        [--img2dataset PATH/TO/img2dataset]

Run it with weakly's interpreter; on a quiet machine for figures that mean anything.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import platform
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
from ingest_fixed_cost import CpuSampler, process_cpu  # noqa: E402 (after the path)

# Installed and run here (2026-12, Python 3.11) with no extra pins; pip resolved, among others,
# opencv-python-headless 4.14.0.94, albumentations 1.4.24, numpy 2.4.6, pyarrow 26.0.1 and the
# `dataclasses` 0.6 backport (harmless: the standard library's module shadows it). The results
# JSON records the venv's full `pip freeze`.
IMG2DATASET_VERSION = "1.47.0"
I2D_VENV = REPO / ".cache" / "img2dataset-venv"
TARGET = 256
QUALITY = 90
THREADS = 16  # img2dataset --thread_count and weakly --fetch-threads (its default)
PLANTED_FRACTION = 0.05  # synth's default: eval near-copies weakly is expected to drop
LONGER_SIDE = (1.04, 1.28)  # synth px bounds the longer side; these give the median shorter ~S
MISSING_TOLERANCE = 0.01  # fail when a tool loses more than this fraction of the input


# --------------------------------------------------------------------------- server (own process)


def serve_main(folder: str) -> None:
    """Serve `folder`'s files by name until killed; print the port on the first line."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    root = Path(folder)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # with Content-Length: clients may keep connections open
        # TCP_NODELAY, as CDNs and nginx set it: without it every keep-alive response's body
        # waits ~40 ms for the client's delayed ACK of the headers (Nagle), which caps each
        # client at (threads / 40 ms) fetches/s whatever its CPU.
        disable_nagle_algorithm = True

        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            name = self.path.split("?", 1)[0].rsplit("/", 1)[-1]
            try:
                body = (root / name).read_bytes() if name and name[0] != "." else None
            except OSError:
                body = None
            if body is None:
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("Content-Type", "image/jpeg")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:
            pass

    class Server(ThreadingHTTPServer):
        request_queue_size = 256  # the default 5 drops SYNs under many clients (1 s stalls)
        daemon_threads = True

        def handle_error(self, request, client_address) -> None:
            pass  # a client hanging up mid-body is not the server's problem

    server = Server(("127.0.0.1", 0), Handler)
    print(server.server_address[1], flush=True)
    server.serve_forever()


def start_server(folder: Path, cores: str) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(
        ["taskset", "-c", cores, sys.executable, __file__, "_serve", str(folder)],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    port = proc.stdout.readline().strip()
    if not port.isdigit():
        proc.kill()
        raise RuntimeError(f"loopback server did not start (said {port!r})")
    return proc, f"http://127.0.0.1:{port}"


def stop(proc: subprocess.Popen) -> None:
    """End a process group this script started: TERM, then KILL after 10 s."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(10)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    except ProcessLookupError:
        pass


# --------------------------------------------------------------------------- floor (own process)


def jpeg_size(data: bytes) -> tuple[int, int]:
    """(width, height) from a JPEG's SOF marker, without decoding."""
    i = 2
    while i + 9 < len(data):
        if data[i] != 0xFF:
            raise ValueError("not a JPEG segment")
        marker = data[i + 1]
        if marker == 0xFF:
            i += 1
            continue
        length = int.from_bytes(data[i + 2 : i + 4], "big")
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            height = int.from_bytes(data[i + 5 : i + 7], "big")
            return int.from_bytes(data[i + 7 : i + 9], "big"), height
        i += 2 + length
    raise ValueError("no SOF marker")


def target_size(w: int, h: int) -> tuple[int, int]:
    """Shorter side to TARGET (only when bigger), aspect kept: what both tools write."""
    if min(w, h) <= TARGET:
        return w, h
    scale = TARGET / min(w, h)
    return max(1, round(w * scale)), max(1, round(h * scale))


AA, NOT_AA, REFERENCE = "antialiased", "not antialiased", "weakly reference"


def pillow_variants() -> dict[str, tuple[str, object]]:
    """name -> (kind, bytes -> JPEG bytes), single-threaded, in weakly's interpreter: Pillow's
    variants and weakly's own OpenCV downscale (pipeline/fast_images.py; OpenCV is in the
    `ingest` extra). The reference rows are weakly's own per-image function (decode, downscale,
    perceptual hash, encode), on its OpenCV path and on the Pillow path alone: not floor
    candidates, they show what weakly's per-image work costs before any pipeline overhead."""
    from PIL import Image

    R = Image.Resampling
    filters = {"bilinear": R.BILINEAR, "bicubic": R.BICUBIC, "lanczos": R.LANCZOS}

    def encode(img) -> bytes:
        out = io.BytesIO()
        img.save(out, "JPEG", quality=QUALITY)
        return out.getvalue()

    def plain(resample, gap=None, draft=False, margin=1.0):
        def run(data: bytes) -> bytes:
            img = Image.open(io.BytesIO(data))
            size = target_size(*img.size)
            if draft and size != img.size:  # DCT scaling: never below the requested size
                img.draft("RGB", (round(size[0] * margin), round(size[1] * margin)))
            img = img.convert("RGB")
            if size != img.size:
                img = img.resize(size, resample, reducing_gap=gap)
            return encode(img)

        return run

    def reduce_then(resample):
        def run(data: bytes) -> bytes:
            img = Image.open(io.BytesIO(data)).convert("RGB")
            size = target_size(*img.size)
            factor = min(img.size) // TARGET
            if factor >= 2:
                img = img.reduce(factor)  # box filter, integer factor
            if size != img.size:
                img = img.resize(size, resample)
            return encode(img)

        return run

    variants: dict[str, tuple[str, object]] = {}
    for name, f in filters.items():
        variants[f"pillow {name}"] = (AA, plain(f))
        variants[f"pillow {name} reducing_gap=2"] = (AA, plain(f, 2.0))
        variants[f"pillow {name} reducing_gap=3"] = (AA, plain(f, 3.0))
        variants[f"pillow draft + {name}"] = (AA, plain(f, draft=True))
        variants[f"pillow draft to 2x + {name}"] = (AA, plain(f, draft=True, margin=2.0))
        variants[f"pillow reduce + {name}"] = (AA, reduce_then(f))
    variants["pillow nearest"] = (NOT_AA, plain(R.NEAREST))
    variants["pillow draft + nearest"] = (NOT_AA, plain(R.NEAREST, draft=True))
    try:
        from pipeline.images import ImageConfig, prepare_image
    except ImportError:
        return variants
    config = ImageConfig(image_size=TARGET, quality=QUALITY, keep_small_jpeg=False)
    variants["weakly prepare_image (+ phash)"] = (
        REFERENCE,
        lambda data: prepare_image(data, config).jpeg,
    )
    variants["weakly prepare_image, Pillow path only (+ phash)"] = (
        REFERENCE,
        lambda data: prepare_image(data, config, fast=False).jpeg,
    )
    from pipeline import fast_images

    if (
        fast_images.available()
    ):  # weakly's own OpenCV path without the hash (benchmarks/image_path.py)
        import cv2

        cv2.setNumThreads(1)

        def opencv_antialiased(data: bytes) -> bytes:
            w, h = jpeg_size(data)
            size = target_size(w, h)
            k = fast_images.reduced_factor(w, h, TARGET, 2.0) if size != (w, h) else 1
            img = fast_images.decode_reduced(data, w, h, k)
            if (img.shape[1], img.shape[0]) != size:
                img = fast_images.downscale(img, size)
            return fast_images.encode_jpeg(img, QUALITY)

        variants["opencv reduced to 2x + Gaussian/pyramid + bicubic (weakly's)"] = (
            AA,
            opencv_antialiased,
        )
    return variants


def opencv_variants() -> dict[str, tuple[str, object]]:
    """name -> (kind, bytes -> JPEG bytes), OpenCV single-threaded."""
    import cv2
    import numpy as np

    cv2.setNumThreads(1)
    params = [int(cv2.IMWRITE_JPEG_QUALITY), QUALITY]
    reduced = {
        2: cv2.IMREAD_REDUCED_COLOR_2,
        4: cv2.IMREAD_REDUCED_COLOR_4,
        8: cv2.IMREAD_REDUCED_COLOR_8,
    }

    def make(interpolation, use_reduced: bool):
        def run(data: bytes) -> bytes:
            w, h = jpeg_size(data)
            size = target_size(w, h)
            flag = cv2.IMREAD_COLOR
            if use_reduced:  # the largest libjpeg scale that stays >= the target
                for k in (8, 4, 2):
                    if min(w, h) // k >= TARGET:
                        flag = reduced[k]
                        break
            img = cv2.imdecode(np.frombuffer(data, np.uint8), flag)
            if (img.shape[1], img.shape[0]) != size:
                img = cv2.resize(img, size, interpolation=interpolation)
            ok, buf = cv2.imencode(".jpg", img, params)
            if not ok:
                raise RuntimeError("cv2.imencode failed")
            return buf.tobytes()

        return run

    return {
        "opencv INTER_AREA (img2dataset's)": (AA, make(cv2.INTER_AREA, False)),
        "opencv IMREAD_REDUCED + INTER_AREA": (AA, make(cv2.INTER_AREA, True)),
        "opencv INTER_LINEAR": (NOT_AA, make(cv2.INTER_LINEAR, False)),
        "opencv IMREAD_REDUCED + INTER_LINEAR": (NOT_AA, make(cv2.INTER_LINEAR, True)),
        "opencv INTER_NEAREST": (NOT_AA, make(cv2.INTER_NEAREST, False)),
    }


def floor_main(list_file: str, library: str, repeats: int, plates_dir: str = "") -> None:
    """Time each variant of `library` over the listed files (read from disk in the loop), best
    of `repeats` passes, variants interleaved; print one JSON object. Each variant's output for
    every zone plate in `plates_dir` (`plate-{side}.jpg`) is written beside it as
    `out-{library}-{variant number}-{side}.jpg`, for the parent to measure aliasing."""
    files = [Path(p) for p in Path(list_file).read_text().split("\n") if p]
    try:
        variants = pillow_variants() if library == "pillow" else opencv_variants()
    except ImportError as exc:
        print(json.dumps({"unavailable": f"{library}: {exc}"}))
        return
    versions = {}
    if library == "pillow":
        import PIL
        from PIL import features

        versions = {"Pillow": PIL.__version__, "libjpeg": features.version("jpg")}
    else:
        import cv2

        versions = {"opencv": cv2.__version__}
    for name, (_, fn) in variants.items():  # warm up and check the output size once
        data = files[0].read_bytes()
        got = jpeg_size(fn(data))
        want = target_size(*jpeg_size(data))
        if got != want:
            raise SystemExit(f"floor variant {name!r} wrote {got}, expected {want}")
    if plates_dir:
        for number, (_, fn) in enumerate(variants.values()):
            for plate in sorted(Path(plates_dir).glob("plate-*.jpg")):
                side = plate.stem.split("-")[1]
                out = Path(plates_dir) / f"out-{library}-{number}-{side}.jpg"
                out.write_bytes(fn(plate.read_bytes()))
    best: dict[str, float] = {name: 0.0 for name in variants}
    for _ in range(repeats):
        for name, (_, fn) in variants.items():
            start = time.perf_counter()
            for path in files:
                fn(path.read_bytes())
            best[name] = max(best[name], len(files) / (time.perf_counter() - start))
    print(
        json.dumps(
            {
                "versions": versions,
                "variants": [
                    {"name": n, "kind": variants[n][0], "img_s": round(best[n], 2), "number": i}
                    for i, n in enumerate(variants)
                ],
            }
        )
    )


ALIASING_LIMIT = 10.0  # issue 17: zone plates to 256 px must leave at most this (of 127.5)
PLATES = (600, 2048)


def _aliasing_tools():
    import aliasing  # benchmarks/aliasing.py: the zone plate and the measure

    return aliasing


def run_floor(files: list[Path], pythons: dict[str, str], repeats: int, scratch: Path) -> dict:
    """The floor variants of each library in its own interpreter, pinned to core 0. A variant
    counts for the floor only when it is antialiased and its output of 600 and 2048 px zone
    plates (stored as JPEG q95, like a photo) leaves aliasing <= ALIASING_LIMIT: a box or area
    filter after a DCT-scaled decode is fast because it skips exactly that."""
    list_file = scratch / "floor-files.txt"
    list_file.write_text("\n".join(str(p) for p in files) + "\n")
    from PIL import Image

    aliasing = _aliasing_tools()
    plates_dir = scratch / "plates"
    plates_dir.mkdir(exist_ok=True)
    for side in PLATES:
        (plates_dir / f"plate-{side}.jpg").write_bytes(
            aliasing.encoded(aliasing.zone_plate(side), "JPEG")
        )
    env = {**tool_env(), "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    variants, versions, notes = [], {}, []
    for library, python in pythons.items():
        cmd = ["taskset", "-c", "0", python, __file__, "_floor", str(list_file), library,
               str(repeats), str(plates_dir)]  # fmt: skip
        done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=3600)
        if done.returncode != 0:
            raise RuntimeError(f"floor ({library}) failed:\n{done.stderr[-3000:]}")
        result = json.loads(done.stdout.strip().splitlines()[-1])
        if "unavailable" in result:
            notes.append(result["unavailable"])
            continue
        for v in result["variants"]:
            v["aliasing"] = {
                side: round(
                    aliasing.aliasing(
                        Image.open(plates_dir / f"out-{library}-{v['number']}-{side}.jpg"), side
                    ),
                    2,
                )
                for side in PLATES
            }
        variants += result["variants"]
        versions.update(result["versions"])
    antialiased = [
        v for v in variants if v["kind"] == AA and max(v["aliasing"].values()) <= ALIASING_LIMIT
    ]
    best = max(antialiased, key=lambda v: v["img_s"])
    return {"files": len(files), "variants": variants, "best": best, "versions": versions,
            "notes": notes}  # fmt: skip


# --------------------------------------------------------------------------- tools


def ensure_img2dataset(binary: str | None) -> tuple[str, str]:
    """(img2dataset CLI, that venv's python): the given one, or the pinned one in our cache venv
    (created on first use)."""
    if binary:
        path = Path(binary).resolve()
        if not path.exists():
            raise SystemExit(f"--img2dataset {binary}: no such file")
        return str(path), str(path.parent / "python")
    cli, python = I2D_VENV / "bin" / "img2dataset", I2D_VENV / "bin" / "python"
    version = ""
    if cli.exists():
        probe = subprocess.run(
            [str(python), "-c", "import importlib.metadata as m; print(m.version('img2dataset'))"],
            capture_output=True, text=True,
        )  # fmt: skip
        version = probe.stdout.strip()
    if version != IMG2DATASET_VERSION:
        print(f"installing img2dataset=={IMG2DATASET_VERSION} into {I2D_VENV} ...", flush=True)
        if not python.exists():
            subprocess.run([sys.executable, "-m", "venv", str(I2D_VENV)], check=True)
        subprocess.run(
            [str(python), "-m", "pip", "install", "-q", f"img2dataset=={IMG2DATASET_VERSION}"],
            check=True,
        )
    return str(cli), str(python)


def run_timed(
    cmd: list[str], log: Path, timeout: float, env: dict, sample_cpu: bool = False
) -> tuple[float, dict | None]:
    """(wall seconds of `cmd` as a whole, its process tree's CPU seconds by kind when
    `sample_cpu`, else None); its output goes to `log`. Raises on failure/timeout."""
    sampler = None
    with open(log, "wb") as handle:
        start = time.perf_counter()
        proc = subprocess.Popen(
            cmd, stdout=handle, stderr=subprocess.STDOUT, env=env, cwd=REPO, start_new_session=True
        )
        if sample_cpu:
            sampler = CpuSampler(proc.pid)  # every 0.1 s from /proc, by kind
        try:
            rc = proc.wait(timeout)
        except BaseException as exc:  # a timeout, or ^C: the tool is in its own session
            stop(proc)
            if not isinstance(exc, subprocess.TimeoutExpired):
                raise
            raise RuntimeError(
                f"timed out after {timeout:.0f} s: {shlex.join(cmd)} (log {log})"
            ) from None
        seconds = time.perf_counter() - start
    cpu = sampler.totals() if sampler is not None else None
    # Ray or img2dataset helpers left in the group would eat the next run's cores.
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    if rc != 0:
        tail = log.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"exit {rc}: {shlex.join(cmd)}\n{tail}")
    return seconds, cpu


def tool_env() -> dict:
    env = {**os.environ, "no_proxy": "127.0.0.1,localhost", "NO_PROXY": "127.0.0.1,localhost"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    env["NO_ALBUMENTATIONS_UPDATE"] = "1"  # img2dataset's albumentations asks PyPI at import
    env["WANDB_MODE"] = "disabled"
    return env


def weakly_cmd(urls: Path, out: Path, index: Path, cores: int, shard_size: int) -> list[str]:
    return [
        "taskset", "-c", f"0-{cores - 1}", sys.executable, "-m", "weakly", "ingest", str(urls),
        "--out", str(out), "--eval-index", str(index), "--vocab", "in1k",
        "--num-cpus", str(cores), "--shard-size", str(shard_size),
        "--fetch-threads", str(THREADS), "--no-progress",
    ]  # fmt: skip


def img2dataset_cmd(cli: str, urls: Path, out: Path, cores: int, shard_size: int) -> list[str]:
    return [
        "taskset", "-c", f"0-{cores - 1}", cli, "--url_list", str(urls),
        "--input_format", "parquet", "--url_col", "url", "--output_folder", str(out),
        "--output_format", "webdataset", "--processes_count", str(cores),
        "--thread_count", str(THREADS), "--number_sample_per_shard", str(shard_size),
        "--image_size", str(TARGET), "--resize_mode", "keep_ratio",
        "--resize_only_if_bigger", "True", "--downscale_interpolation", "area",
        "--encode_format", "jpg", "--encode_quality", str(QUALITY),
        "--extract_exif", "False", "--compute_hash", "None", "--enable_wandb", "False",
        "--retries", "0", "--timeout", "10",
    ]  # fmt: skip


def output_sizes(out: Path, limit: int = 40) -> dict:
    """Shorter sides of the first `limit` JPEGs in the first tar under `out`: checks that a tool
    really wrote 256 px images."""
    from weakly_base.tar_reader import iter_members

    tars = sorted(out.rglob("*.tar"))
    sides: list[int] = []
    if tars:
        with open(tars[0], "rb") as handle:
            for member in iter_members(handle, lambda name: name.endswith((".jpg", ".jpeg"))):
                if member.data is not None and len(sides) < limit:
                    sides.append(min(jpeg_size(member.data)))
    at_target = sum(s == TARGET for s in sides)
    return {"checked": len(sides), "shorter_side_at_target": at_target}


def weakly_counts(out: Path) -> dict:
    dataset = json.loads((out / "dataset.json").read_text())
    totals, rejects = dataset["totals"], dataset.get("rejects_by_reason", {})
    eval_drops = rejects.get("eval_near_copy", 0)
    return {
        "input": totals["input_rows"],
        "written": totals["written"],
        "eval_dropped": eval_drops,
        "failed": totals["rejected"] - eval_drops,
        "failed_by_reason": {k: v for k, v in rejects.items() if k != "eval_near_copy"},
    }


def img2dataset_counts(out: Path) -> dict:
    stats = [json.loads(p.read_text()) for p in sorted(out.glob("*_stats.json"))]
    count = sum(s["count"] for s in stats)
    ok = sum(s["successes"] for s in stats)
    reasons: dict[str, int] = {}
    for s in stats:
        for reason, k in s.get("status_dict", {}).items():
            if reason != "success":
                reasons[reason] = reasons.get(reason, 0) + k
    return {"input": count, "written": ok, "eval_dropped": 0, "failed": count - ok,
            "failed_by_reason": reasons}  # fmt: skip


# --------------------------------------------------------------------------- corpora


def make_corpus(work: Path, size: int, n: int) -> Path:
    """`work/corpus-{size}px-n{n}`: synth images (shorter side ~size), their manifest, the eval
    set and its index; built once and reused."""
    folder = work / f"corpus-{size}px-n{n}"
    if (folder / "ready").exists():
        return folder
    from weakly.synth import synth

    shutil.rmtree(folder, ignore_errors=True)
    lo, hi = (round(size * f) for f in LONGER_SIDE)
    print(f"making corpus: {n} images, longer side {lo}-{hi} px -> {folder} ...", flush=True)
    start = time.perf_counter()
    synth(n, folder / "syn", folder / "eval", min_px=lo, max_px=hi,
          planted_fraction=PLANTED_FRACTION)  # fmt: skip
    subprocess.run(
        [sys.executable, "-m", "weakly", "eval-index", "build", "--eval",
         f"synth={folder / 'eval'}", "--out", str(folder / "eval.idx")],
        check=True, env=tool_env(), cwd=REPO, capture_output=True,
    )  # fmt: skip
    (folder / "ready").write_text(f"{time.perf_counter() - start:.0f} s\n")
    return folder


def corpus_stats(paths: list[Path]) -> dict:
    shorter = sorted(min(jpeg_size(p.read_bytes())) for p in paths)
    nbytes = sum(p.stat().st_size for p in paths)
    return {
        "images": len(paths),
        "shorter_side_p5_p50_p95": [
            shorter[int(q * (len(shorter) - 1))] for q in (0.05, 0.5, 0.95)
        ],
        "mean_kb": round(nbytes / len(paths) / 1000, 1),
    }


def url_manifest(folder: Path, base: str, dest: Path) -> Path:
    """The URL list both tools read: `url` and `tags` (weakly), `url` (img2dataset)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pq.read_table(folder / "syn" / "manifest.parquet", columns=["path", "tags"])
    urls = [f"{base}/images/{Path(p).name}" for p in table["path"].to_pylist()]
    pq.write_table(pa.table({"url": urls, "tags": table["tags"]}), dest)
    return dest


# --------------------------------------------------------------------------- benchmark


def bench_size(args, size: int, n: int, i2d_cli: str, pythons: dict, work: Path) -> dict:
    corpus = make_corpus(work, size, n)
    import pyarrow.parquet as pq

    paths = [
        Path(p) for p in pq.read_table(corpus / "syn" / "manifest.parquet")["path"].to_pylist()
    ]
    stats = corpus_stats(paths)
    cores = f"0-{args.cores - 1}"
    # Same shard size for both; small enough that img2dataset (one process per shard) can use
    # every core on small corpora, 1,000 (both tools' usual) on big ones.
    shard_size = max(1, min(1000, math.ceil(n / (4 * args.cores))))
    runs_dir = work / f"runs-{size}px-n{n}"
    shutil.rmtree(runs_dir, ignore_errors=True)
    runs_dir.mkdir(parents=True)
    timeout = args.run_timeout or 300 + n * 0.25

    server, base = start_server(corpus / "syn" / "images", cores)
    results: dict[str, list] = {"weakly": [], "img2dataset": []}
    try:
        urls = url_manifest(corpus, base, runs_dir / "urls.parquet")
        env = tool_env()
        for r in range(args.repeats):
            for tool in ("weakly", "img2dataset"):
                out = runs_dir / f"{tool}-{r}"
                if tool == "weakly":
                    cmd = weakly_cmd(urls, out, corpus / "eval.idx", args.cores, shard_size)
                else:
                    cmd = img2dataset_cmd(i2d_cli, urls, out, args.cores, shard_size)
                print(f"  {size} px run {r + 1}/{args.repeats}: {tool} ...", end=" ", flush=True)
                served = process_cpu(server.pid)
                log = runs_dir / f"{tool}-{r}.log"
                seconds, cpu = run_timed(cmd, log, timeout, env, args.cpu)
                served = process_cpu(server.pid) - served
                counts = weakly_counts(out) if tool == "weakly" else img2dataset_counts(out)
                counts["sizes"] = output_sizes(out)
                rate = n / seconds
                line = f"{seconds:.1f} s, {rate:.1f} img/s, wrote {counts['written']}/{n}"
                if cpu is not None:
                    if tool != "weakly":  # the sampler's kinds name weakly's processes
                        cpu = {"img2dataset processes": round(sum(cpu.values()), 2)}
                    counts["cpu_s"] = cpu
                    line += f", CPU {sum(cpu.values()):.1f} s {cpu}"
                counts["server_cpu_s"] = round(served, 2)
                print(f"{line}, server CPU {served:.1f} s", flush=True)
                results[tool].append(
                    {"seconds": round(seconds, 3), "img_s": round(rate, 2), **counts}
                )
                if not args.keep_outputs:
                    shutil.rmtree(out, ignore_errors=True)
                if r == 0:
                    cmd_text = shlex.join(cmd)
                    results.setdefault("commands", {})[tool] = cmd_text
    finally:
        stop(server)

    problems = []
    for tool in ("weakly", "img2dataset"):
        for run in results[tool]:
            handled = run["written"] + run["eval_dropped"]
            if run["input"] != n or handled < (1 - MISSING_TOLERANCE) * n:
                problems.append(
                    f"{tool} at {size} px handled {handled} of {n} (input {run['input']}, "
                    f"failures {run['failed_by_reason']})"
                )
            sizes = run["sizes"]  # planted eval near-copies may be under 256 px already
            if sizes["checked"] == 0 or sizes["shorter_side_at_target"] < 0.8 * sizes["checked"]:
                problems.append(f"{tool} at {size} px: shorter sides not {TARGET} px: {sizes}")

    floor_files = paths[: args.floor_n]
    print(f"  {size} px floor over {len(floor_files)} files ...", flush=True)
    floor = run_floor(floor_files, pythons, max(3, args.repeats), runs_dir)
    best = {t: max(results[t], key=lambda x: x["img_s"]) for t in ("weakly", "img2dataset")}
    weakly_rate, i2d_rate = best["weakly"]["img_s"], best["img2dataset"]["img_s"]
    return {
        "size": size,
        "n": n,
        "corpus": stats,
        "shard_size": shard_size,
        "runs": results,
        "weakly_img_s": weakly_rate,
        "img2dataset_img_s": i2d_rate,
        "weakly_over_img2dataset": round(weakly_rate / i2d_rate, 3),
        "weakly_per_core": round(weakly_rate / args.cores, 2),
        "img2dataset_per_core": round(i2d_rate / args.cores, 2),
        "floor": floor,
        "weakly_per_core_over_floor": round(weakly_rate / args.cores / floor["best"]["img_s"], 3),
        "problems": problems,
    }


def environment(cores: int, i2d_python: str) -> dict:
    def out(cmd: list[str]) -> str:
        try:
            return subprocess.run(cmd, capture_output=True, text=True, timeout=60).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            return ""

    import ray

    where = subprocess.run(
        [sys.executable, "-c", "import weakly; print(weakly.__file__)"],
        capture_output=True, text=True, env=tool_env(), cwd=REPO,
    ).stdout.strip()  # fmt: skip
    if not where.startswith(str(REPO)):
        raise SystemExit(f"the tool runs would import weakly from {where!r}, not from {REPO}")
    model = next((line.split(":", 1)[1].strip() for line in out(["lscpu"]).splitlines()
                  if line.startswith("Model name")), platform.processor())  # fmt: skip
    return {
        "cpu": model,
        "machine_cpus": os.cpu_count(),
        "cores_used": cores,
        "python": platform.python_version(),
        "weakly_commit": out(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"]),
        "ray": ray.__version__,
        "img2dataset": out([i2d_python, "-c", "import importlib.metadata as m; print(m.version('img2dataset'))"]),
        "load_average_start": os.getloadavg(),
        "img2dataset_venv": out([i2d_python, "-m", "pip", "freeze"]).splitlines(),
    }  # fmt: skip


def markdown(results: list[dict], env: dict, command: str, repeats: int) -> str:
    cores = env["cores_used"]
    lines = [
        f"`{command}`",
        "",
        f"{env['cpu']}, {cores} of {env['machine_cpus']} cores (`taskset`), Python {env['python']}, "
        f"weakly {env['weakly_commit']}, Ray {env['ray']}, img2dataset {env['img2dataset']}; "
        f"best of {repeats} alternating runs, whole command timed; loopback HTTP server on the "
        f"same cores.",
        "",
        "| corpus | images | weakly img/s | img2dataset img/s | weakly / img2dataset "
        "| weakly per core | floor per core | weakly per core / floor |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        s = r["corpus"]["shorter_side_p5_p50_p95"]
        lines.append(
            f"| ~{r['size']} px (shorter side p50 {s[1]}, {r['corpus']['mean_kb']} kB) "
            f"| {r['n']:,} | {r['weakly_img_s']:.1f} | {r['img2dataset_img_s']:.1f} "
            f"| {r['weakly_over_img2dataset']:.2f} | {r['weakly_per_core']:.1f} "
            f"| {r['floor']['best']['img_s']:.1f} ({r['floor']['best']['name']}) "
            f"| {r['weakly_per_core_over_floor']:.2f} |"
        )
    lines += [
        "",
        "Floor variants, img/s on one core (decode + downscale to 256 + JPEG q90 encode), and",
        "zone-plate aliasing of their output (600 / 2048 px plates stored as JPEG q95; the floor",
        f"counts only antialiased variants at <= {ALIASING_LIMIT:g} on both, benchmarks/aliasing.py):",
        "",
    ]
    names = [v["name"] for v in results[0]["floor"]["variants"]]
    lines.append(
        "| variant | kind | aliasing 600 / 2048 | "
        + " | ".join(f"~{r['size']} px" for r in results)
        + " |"
    )
    lines.append("| --- | --- | --- | " + " | ".join("---:" for _ in results) + " |")
    for name in names:
        cells = []
        for r in results:
            v = next((v for v in r["floor"]["variants"] if v["name"] == name), None)
            cells.append(f"{v['img_s']:.1f}" if v else "")
        first = next(v for v in results[0]["floor"]["variants"] if v["name"] == name)
        alias = " / ".join(f"{first['aliasing'][side]:.1f}" for side in PLATES)
        lines.append(f"| {name} | {first['kind']} | {alias} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_serve":
        return serve_main(sys.argv[2])
    if len(sys.argv) > 1 and sys.argv[1] == "_floor":
        return floor_main(sys.argv[2], sys.argv[3], int(sys.argv[4]), *sys.argv[5:6])

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20000, help="images per corpus under 1,000 px")
    parser.add_argument("--n-large", type=int, default=2000, help="images per corpus >= 1,000 px")
    parser.add_argument("--cores", type=int, default=2, help="cores both tools are pinned to")
    parser.add_argument("--repeats", type=int, default=3, help="best of this many runs each")
    parser.add_argument("--sizes", default="500,1500", help="shorter sides of the corpora, px")
    parser.add_argument("--work", help="work folder; corpora are cached here (default: temp)")
    parser.add_argument("--json", help="write all results here")
    parser.add_argument("--img2dataset", help="an img2dataset CLI to use instead of our venv's")
    parser.add_argument("--floor-n", type=int, default=500, help="files the floor is timed on")
    parser.add_argument("--run-timeout", type=float, help="seconds per tool run (default by n)")
    parser.add_argument("--keep-outputs", action="store_true", help="keep every run's output")
    parser.add_argument(
        "--cpu",
        action="store_true",
        help="also sample each run's CPU by process (the tool's tree, every 0.1 s from /proc; "
        "the sampling itself costs a little CPU on the same box)",
    )
    args = parser.parse_args()
    if args.cores < 1 or args.cores > (os.cpu_count() or 1):
        raise SystemExit(f"--cores {args.cores}: this machine has {os.cpu_count()}")
    if shutil.which("taskset") is None:
        raise SystemExit("needs taskset (util-linux)")

    i2d_cli, i2d_python = ensure_img2dataset(args.img2dataset)
    pythons = {"pillow": sys.executable, "opencv": i2d_python}
    env = environment(args.cores, i2d_python)
    command = shlex.join(["python", "benchmarks/ingest_vs_img2dataset.py", *sys.argv[1:]])
    sizes = [int(s) for s in args.sizes.split(",") if s]
    results = []
    with tempfile.TemporaryDirectory(prefix="weakly-vs-i2d-") as tmp:
        work = Path(args.work) if args.work else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        for size in sizes:
            n = args.n if size < 1000 else args.n_large
            results.append(bench_size(args, size, n, i2d_cli, pythons, work))
    env["load_average_end"] = os.getloadavg()
    table = markdown(results, env, command, args.repeats)
    print()
    print(table)
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {"environment": env, "command": command, "results": results, "markdown": table},
                indent=1,
            )  # fmt: skip
        )
    problems = [p for r in results for p in r["problems"]]
    if problems:
        print("\nFAILED: a tool wrote far fewer images than it was given:", file=sys.stderr)
        for p in problems:
            print(f"  {p}", file=sys.stderr)
        raise SystemExit(1)


if __name__ == "__main__":
    main()
