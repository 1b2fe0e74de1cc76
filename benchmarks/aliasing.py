"""Aliasing of the ingest downscale, measured on zone plates.

A zone plate is concentric rings whose spatial frequency rises linearly from the centre to the
source's Nyquist limit at the edge of the inscribed circle. After downscaling to the target
size, rings finer than the new limit cannot be represented and must fade to flat grey (127.5);
whatever grey-level variation is left there is aliasing. The figure is the standard deviation of
the output's grey levels over the pixels where the source rings are at least 1.5x the output's
Nyquist frequency (inside the plate's circle), on a scale where the rings' amplitude is 127.5.
The 1.5x leaves room for the transition band every real filter has. Calibration, Pillow alone on
a lossless plate to 256 px (600 / 2048 px): nearest ~90 / ~90, box ~25 / ~6, bilinear ~4 / ~1,
bicubic ~3.5 / ~1.

    python benchmarks/aliasing.py [--sizes 400,600,1024,2048] [--target 256]

prints, per plate size, the figure for Pillow's filters alone and for `weakly`'s own path
(`pipeline.images.prepare_image`, which also encodes the result as JPEG q90) on the plate stored
as JPEG q95 (the DCT-scaled decode applies) and as PNG.
"""

from __future__ import annotations

import argparse
import io

import numpy as np
from PIL import Image

from pipeline.images import ImageConfig, prepare_image

# Where the figure is taken: source rings at >= this multiple of the output Nyquist frequency.
MEASURED_FROM = 1.5


def zone_plate(side: int) -> Image.Image:
    """`side` x `side` RGB rings: phase pi r^2 / side, so the local frequency r / side reaches
    0.5 cycles per pixel (Nyquist) at r = side / 2."""
    y, x = np.mgrid[0:side, 0:side].astype(np.float64)
    c = (side - 1) / 2
    grey = 127.5 + 127.5 * np.cos(np.pi * ((x - c) ** 2 + (y - c) ** 2) / side)
    return Image.fromarray(np.round(grey).astype(np.uint8)).convert("RGB")


def aliasing(out: Image.Image, source_side: int) -> float:
    """Std of grey levels where the plate's rings are beyond the output's resolution."""
    a = np.asarray(out.convert("L"), dtype=np.float64)
    n = min(a.shape)
    a = a[:n, :n]
    scale = n / source_side
    y, x = np.mgrid[0:n, 0:n]
    c = (n - 1) / 2
    rho = np.hypot(x - c, y - c)  # output pixels from the centre
    # Source frequency at source radius rho/scale is (rho/scale)/side cycles per source pixel,
    # i.e. rho / (scale^2 side) cycles per output pixel; the output's Nyquist is 0.5.
    freq = rho / (scale * scale * source_side)
    region = (freq >= 0.5 * MEASURED_FROM) & (rho <= n / 2)
    return float(a[region].std())


def encoded(img: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    return buf.getvalue()


def weakly_path(data: bytes, target: int) -> Image.Image:
    """What ingest stores for these bytes: prepare_image's JPEG, decoded back."""
    prepared = prepare_image(data, ImageConfig(image_size=target))
    return Image.open(io.BytesIO(prepared.jpeg)).convert("RGB")


FILTERS = {
    "nearest": Image.Resampling.NEAREST,
    "box": Image.Resampling.BOX,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
}


def measure(sizes: list[int], target: int) -> list[dict]:
    rows = []
    for side in sizes:
        plate = zone_plate(side)
        row = {"plate": side}
        for name, resample in FILTERS.items():
            row[f"pillow {name}"] = aliasing(plate.resize((target, target), resample), side)
        for fmt in ("JPEG", "PNG"):
            row[f"weakly from {fmt.lower()}"] = aliasing(
                weakly_path(encoded(plate, fmt), target), side
            )
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="400,600,800,1024,1500,2048,3000")
    ap.add_argument("--target", type=int, default=256)
    args = ap.parse_args(argv)
    rows = measure([int(s) for s in args.sizes.split(",")], args.target)
    columns = list(rows[0])
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    for row in rows:
        print(
            "| "
            + " | ".join(f"{v:.2f}" if isinstance(v, float) else str(v) for v in row.values())
            + " |"
        )
    return rows


if __name__ == "__main__":
    main()
