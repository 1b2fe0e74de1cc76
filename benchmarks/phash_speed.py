"""Hash throughput (img/s, one core) of weakly's phash vs imagehash.phash and the decode floor.

Same JPEG bytes for all three, made by resizing the offline real photos to ~500 and ~1080 px.
Also prints how stable the hash is across input resolutions (500 vs 1080 px copies).

    .venv/bin/python benchmarks/phash_speed.py [--repeat N]
"""

from __future__ import annotations

import argparse
import io
import sys
import time
from pathlib import Path

from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import imagehash  # noqa: E402
from real_photos import real_photos  # noqa: E402

from pipeline.phash import DRAFT_SIDE, hamming, phash_many  # noqa: E402


def jpeg_at(img: Image.Image, side: int) -> bytes:
    s = side / max(img.size)
    small = img.convert("RGB").resize((round(img.width * s), round(img.height * s)), Image.LANCZOS)
    buf = io.BytesIO()
    small.save(buf, "JPEG", quality=90)
    return buf.getvalue()


def draft_floor(data: bytes) -> None:
    img = Image.open(io.BytesIO(data))
    w, h = img.size
    scale = min(w, h) / DRAFT_SIDE
    img.draft("L", (int(w / scale), int(h / scale)))
    img.load()


def best_rate(fn, items, repeat):
    best = 0.0
    for _ in range(repeat):
        t = time.perf_counter()
        fn(items)
        best = max(best, len(items) / (time.perf_counter() - t))
    return best


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3, help="best of N runs of each")
    ap.add_argument("--copies", type=int, default=10, help="copies of the 20-photo set")
    args = ap.parse_args()
    photos = [img for _, img in real_photos()]
    print(f"{len(photos)} real photos x {args.copies} copies; best of {args.repeat}; one core")
    hashes = {}
    for side, goal in ((500, 3.0), (1080, 3.5)):
        items = [jpeg_at(p, side) for p in photos] * args.copies
        ih = best_rate(
            lambda xs: [imagehash.phash(Image.open(io.BytesIO(x))) for x in xs], items, args.repeat
        )
        ours = best_rate(phash_many, items, args.repeat)
        floor = best_rate(lambda xs: [draft_floor(x) for x in xs], items, args.repeat)
        print(
            f"{side:5d} px: imagehash {ih:7.0f} img/s  weakly {ours:7.0f} img/s  "
            f"draft-decode floor {floor:7.0f} img/s  |  weakly/imagehash {ours / ih:.2f}x "
            f"(goal >= {goal}x)  weakly/floor {ours / floor:.2f} (goal >= 0.85)"
        )
        hashes[side] = phash_many(items[: len(photos)]).hashes
    d = hamming(hashes[500], hashes[1080])
    print(
        f"resolution stability (500 vs 1080 px copy of each photo): mean {d.mean():.1f} bits, "
        f"max {d.max()}, within 4: {(d <= 4).mean():.2f}, within 10: {(d <= 10).mean():.2f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
