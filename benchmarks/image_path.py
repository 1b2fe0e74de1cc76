"""Candidate image paths for ingest: speed per core, aliasing and sharpness, in one run.

Each variant turns encoded bytes into the stored JPEG (shorter side to 256 px, JPEG q90): decode,
antialiased downscale, encode. For each one this prints

- img/s per core (images per CPU second, one thread) over the same real photos (`weakly.synth`
  crops of the photos bundled with scikit-image/scikit-learn) at ~500 px and ~1,500 px shorter
  side, best of `--repeats` passes, variants interleaved, with its ratio to Pillow bilinear
  (full decode) from the same run;
- aliasing on the 400, 600, 800 and 2048 px zone plates stored as JPEG q95
  (benchmarks/aliasing.py: the grey-level std left where the rings are finer than the new
  resolution, of 127.5; issue 17's bound is 10 on 600 and 2048);
- sharpness: the amplitude a sine grating keeps at 0.5x and 0.8x of the output's Nyquist
  frequency (sources of the plates' sizes stored as JPEG q95, both axes), relative to what
  Pillow's bilinear keeps, the worst over the sizes. A filter that blurs more always aliases
  less, so aliasing alone would let an over-blurred filter win; a variant should keep ~1.0.

Why OpenCV's own filters are not enough: INTER_AREA is a box filter (aliases at non-integer
ratios, img2dataset's 13.3 on the 600 px plate) and INTER_LINEAR samples without any
prefilter. The antialiased OpenCV candidates add the low-pass themselves: a Gaussian whose
sigma follows the ratio, then INTER_LINEAR or INTER_CUBIC, or whole 2x `pyrDown` steps first.

    PYTHONPATH=. python benchmarks/image_path.py [--n 150] [--n-large 30] [--repeats 3]
        [--work DIR] [--only SUBSTRING]

Run it pinned to one core on a quiet machine (`taskset -c 0 ...`) for figures that mean
anything; the corpora are cached in `--work`.
"""

from __future__ import annotations

import argparse
import io
import math
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
sys.path.insert(0, str(REPO))

import aliasing as zone  # noqa: E402  (benchmarks/aliasing.py: the plate and the measure)
import ingest_vs_img2dataset as e2e  # noqa: E402  (the floor's Pillow rows, size rule, constants)

# 600 and 2048 carry issue 17's bound; 400 (ratio 1.56) is where a filter's stopband near the
# source's Nyquist frequency shows, 800 (ratio 3.1, no DCT scaling) where a pyramid step applies.
PLATES = (400, 600, 800, 2048)
SHARPNESS_AT = (0.5, 0.8)  # of the output's Nyquist frequency


def pillow_variants() -> dict:
    """Pillow's rows: the same functions the end-to-end floor times (ingest_vs_img2dataset)."""
    rows = e2e.pillow_variants()
    names = ("pillow bilinear", "pillow draft to 2x + bilinear", "pillow bicubic")
    return {name: rows[name][1] for name in names}


def opencv_variants() -> dict:
    import cv2

    from pipeline import fast_images

    cv2.setNumThreads(1)
    params = [int(cv2.IMWRITE_JPEG_QUALITY), e2e.QUALITY]

    def cv_encode(img: np.ndarray) -> bytes:
        ok, buf = cv2.imencode(".jpg", img, params)
        if not ok:
            raise RuntimeError("cv2.imencode failed")
        return buf.tobytes()

    def pil_encode(img: np.ndarray) -> bytes:
        out = io.BytesIO()
        Image.fromarray(cv2.cvtColor(img, cv2.COLOR_BGR2RGB)).save(out, "JPEG", quality=e2e.QUALITY)
        return out.getvalue()

    def decode(data: bytes, margin: float | None) -> np.ndarray:
        w, h = Image.open(io.BytesIO(data)).size  # header only
        k = fast_images.reduced_factor(w, h, e2e.TARGET, margin) if margin else 1
        flag = fast_images.REDUCED_FLAGS[k] | cv2.IMREAD_IGNORE_ORIENTATION
        return cv2.imdecode(np.frombuffer(data, np.uint8), flag)

    def make(resize, margin: float | None = 2.0, encode=cv_encode):
        def run(data: bytes) -> bytes:
            img = decode(data, margin)
            size = e2e.target_size(img.shape[1], img.shape[0])
            if size != (img.shape[1], img.shape[0]):
                img = resize(img, size)
            return encode(img)

        return run

    def area(img, size):
        return cv2.resize(img, size, interpolation=cv2.INTER_AREA)

    def linear(img, size):
        return cv2.resize(img, size, interpolation=cv2.INTER_LINEAR)

    def gauss(k: float, interpolation: int):
        def resize(img, size):
            return fast_images.gaussian_resize(img, size, k, interpolation)

        return resize

    def pyr_gauss(k: float, start: float):
        def resize(img, size):
            return fast_images.downscale(img, size, k=k, pyramid_from=start)

        return resize

    variants = {
        "opencv INTER_AREA (img2dataset's)": make(area, None),
        "opencv INTER_LINEAR (no prefilter)": make(linear, None),
        "opencv reduced to 2x + INTER_AREA": make(area),
    }
    for k in (0.45, 0.5, 0.55):
        variants[f"opencv reduced to 2x + gaussian {k}r + INTER_LINEAR"] = make(
            gauss(k, cv2.INTER_LINEAR)
        )
    for k in (0.42, 0.45, 0.48):
        variants[f"opencv reduced to 2x + gaussian {k}r + INTER_CUBIC"] = make(
            gauss(k, cv2.INTER_CUBIC)
        )
    k = fast_images.SIGMA_PER_RATIO
    for start in (2.0, 3.0):
        name = f"opencv reduced to 2x + pyrDown from {start}x + gaussian {k}r + linear"
        variants[name] = make(pyr_gauss(k, start))
    variants["opencv adopted (fast_images.downscale)"] = make(fast_images.downscale)
    variants["opencv adopted (fast_images.downscale), Pillow encode"] = make(
        fast_images.downscale, encode=pil_encode
    )
    return variants


def weakly_variants() -> dict:
    from pipeline.images import ImageConfig, prepare_image

    config = ImageConfig(image_size=e2e.TARGET, quality=e2e.QUALITY, keep_small_jpeg=False)
    return {
        "weakly prepare_image, Pillow path (+ phash)": lambda d: (
            prepare_image(d, config, fast=False).jpeg
        ),
        "weakly prepare_image (+ phash)": lambda d: prepare_image(d, config).jpeg,
    }


# --------------------------------------------------------------------------- measures


def grating(side: int, freq_out: float, axis: int) -> Image.Image:
    """`side`^2 cosine grating whose frequency is `freq_out` cycles per output pixel once the
    image is TARGET px: amplitude 100 around 127.5, so nothing clips."""
    freq_src = freq_out * e2e.TARGET / side
    t = np.arange(side, dtype=np.float64)
    line = 127.5 + 100.0 * np.cos(2 * np.pi * freq_src * t)
    grey = np.broadcast_to(line[None, :] if axis == 1 else line[:, None], (side, side))
    return Image.fromarray(np.round(grey).astype(np.uint8)).convert("RGB")


def amplitude(out: Image.Image, freq_out: float, axis: int) -> float:
    """Amplitude of the output's component at `freq_out` along `axis`, central half only."""
    a = np.asarray(out.convert("L"), dtype=np.float64)
    n = a.shape[axis]
    lo, hi = n // 4, 3 * n // 4
    profile = (a.mean(axis=0) if axis == 1 else a.mean(axis=1))[lo:hi]
    t = np.arange(lo, hi, dtype=np.float64)
    # Output pixel i is centred at source (i + 0.5) / scale - 0.5: phase kept free by the fit.
    c, s = np.cos(2 * np.pi * freq_out * t), np.sin(2 * np.pi * freq_out * t)
    basis = np.stack([c, s, np.ones_like(t)], axis=1)
    coef, *_ = np.linalg.lstsq(basis, profile, rcond=None)
    return float(math.hypot(coef[0], coef[1]))


def quality_of(fn) -> dict:
    """Aliasing on each plate, and sharpness (amplitude kept, of 100) at each frequency from a
    source of each plate's size."""
    row = {}
    for side in PLATES:
        data = zone.encoded(zone.zone_plate(side), "JPEG")
        row[f"alias {side}"] = zone.aliasing(Image.open(io.BytesIO(fn(data))), side)
    for f in SHARPNESS_AT:
        for side in PLATES:
            kept = []
            for axis in (0, 1):
                data = zone.encoded(grating(side, 0.5 * f, axis), "JPEG")
                kept.append(amplitude(Image.open(io.BytesIO(fn(data))), 0.5 * f, axis))
            row[f"sharp {f} {side}"] = float(np.mean(kept))
    return row


def make_corpus(work: Path, size: int, n: int) -> list[bytes]:
    folder = work / f"photos-{size}px-n{n}"
    if not (folder / "ready").exists():
        from weakly.synth import synth

        lo, hi = (round(size * f) for f in e2e.LONGER_SIDE)
        synth(n, folder / "syn", None, min_px=lo, max_px=hi, planted_fraction=0.0)
        (folder / "ready").write_text("ok\n")
    paths = sorted(p for p in (folder / "syn").rglob("*.jpg"))
    return [p.read_bytes() for p in paths]


def hash_agreement(corpus: list[bytes]) -> str:
    """Bits by which ingest's hash (from the reduced image) differs from `phash(bytes)` (what
    an eval index stores), on the OpenCV path and on the Pillow path, and between the two."""
    from pipeline.images import ImageConfig, prepare_image
    from pipeline.phash import phash

    config = ImageConfig(image_size=e2e.TARGET, quality=e2e.QUALITY, keep_small_jpeg=False)
    rows = []
    for data in corpus:
        ref = phash(data)
        new = prepare_image(data, config).phash
        old = prepare_image(data, config, fast=False).phash
        rows.append(
            [bin(ref ^ new).count("1"), bin(ref ^ old).count("1"), bin(new ^ old).count("1")]
        )
    a = np.array(rows)
    names = ("OpenCV path vs phash(bytes)", "Pillow path vs phash(bytes)", "OpenCV vs Pillow path")
    return "; ".join(
        f"{n}: mean {a[:, i].mean():.2f}, max {a[:, i].max()} bits" for i, n in enumerate(names)
    )


def speed(variants: dict, corpus: list[bytes], repeats: int) -> dict[str, float]:
    """Images per CPU second of this (single-threaded) process, best of `repeats` passes,
    variants interleaved in chunks of 10 images so that load from other processes falls on
    all of them alike. CPU time, not wall time: on a shared machine it is what one core does."""
    spent = {name: [0.0] * repeats for name in variants}
    for r in range(repeats):
        for at in range(0, len(corpus), 10):
            chunk = corpus[at : at + 10]
            for name, fn in variants.items():
                start = time.process_time()
                for data in chunk:
                    fn(data)
                spent[name][r] += time.process_time() - start
    return {name: len(corpus) / min(times) for name, times in spent.items()}


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=150, help="photos at ~500 px")
    ap.add_argument("--n-large", type=int, default=30, help="photos at ~1,500 px")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--work", default=str(REPO / ".cache" / "image-path"))
    ap.add_argument("--only", default="", help="run only variants whose name has this")
    args = ap.parse_args(argv)
    variants = {**pillow_variants(), **opencv_variants(), **weakly_variants()}
    base = "pillow bilinear"
    variants = {k: v for k, v in variants.items() if k == base or args.only in k}
    work = Path(args.work)
    small = make_corpus(work, 500, args.n)
    large = make_corpus(work, 1500, args.n_large)
    for fn in variants.values():  # warm up
        fn(small[0])
    fast500 = speed(variants, small, args.repeats)
    fast1500 = speed(variants, large, args.repeats)
    quality = {name: quality_of(fn) for name, fn in variants.items()}

    def relative(q: dict, f: float, side: int) -> float:
        return q[f"sharp {f} {side}"] / quality[base][f"sharp {f} {side}"]

    rows = []
    for name in variants:
        q = quality[name]
        rows.append(
            {
                "variant": name,
                "alias " + " / ".join(map(str, PLATES)): " / ".join(
                    f"{q[f'alias {side}']:.1f}" for side in PLATES
                ),
                "sharpness 0.5 / 0.8 Nyq (worst plate size)": " / ".join(
                    f"{min(relative(q, f, side) for side in PLATES):.2f}" for f in SHARPNESS_AT
                ),
                "~500 px img/s": f"{fast500[name]:.1f}",
                "x": f"{fast500[name] / fast500[base]:.2f}",
                "~1500 px img/s": f"{fast1500[name]:.1f}",
                "x ": f"{fast1500[name] / fast1500[base]:.2f}",
            }
        )
    print(f"{len(small)} photos at ~500 px, {len(large)} at ~1500 px; best of {args.repeats}")
    print(
        "pillow bilinear keeps "
        + ", ".join(
            f"{min(quality[base][f'sharp {f} {side}'] for side in PLATES):.1f}-"
            f"{max(quality[base][f'sharp {f} {side}'] for side in PLATES):.1f} at {f} Nyquist"
            for f in SHARPNESS_AT
        )
        + " (of 100); sharpness columns: a variant's / that, the worst over the plate sizes"
    )
    print("hash bits apart (all photos): " + hash_agreement(small + large))
    print("| " + " | ".join(rows[0]) + " |")
    print("|" + " --- |" * len(rows[0]))
    for row in rows:
        print("| " + " | ".join(row.values()) + " |")
    return rows


if __name__ == "__main__":
    main()
