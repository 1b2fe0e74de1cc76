"""The hashes stored per eval image: the variants that make one training-side hash enough.

The training side hashes each image once; every transformation a near-copy may have undergone is
undone on the eval side instead, by storing the hash of each variant (pipeline/dedup.py says
which and why). Pure functions of the image bytes.
"""

from __future__ import annotations

import numpy as np
from PIL import ImageOps

from .phash import (
    BLOCK,
    DEFAULT_MAX_PIXELS,
    dct_blocks,
    decode_for_hash,
    hashes_from_blocks,
    luma32,
    to_luma,
)

# (transpose, flip rows, flip columns) applied in that order; names say what the training
# image looks like relative to the eval image (PIL Image.Transpose semantics).
DIHEDRAL = {
    "orig": (False, False, False),
    "hflip": (False, False, True),
    "vflip": (False, True, False),
    "rot180": (False, True, True),
    "transpose": (True, False, False),
    "rot90": (True, True, False),
    "rot270": (True, False, True),
    "transverse": (True, True, True),
}
CENTRE_CROPS = (0.05, 0.10, 0.15, 0.20)  # fraction of each side removed, half on each end
CORNER_CROP = 0.10  # fraction of each side removed at one end
BORDERS = ((0, 0.05), (255, 0.05), (0, 0.10), (255, 0.10))  # (grey level, fraction of mean side)
CROP_DECODE_SIDE = 256  # eval-side decode resolution for crops/borders

VARIANTS: tuple[str, ...] = (
    *DIHEDRAL,
    *(f"crop_c{round(f * 100):02d}" for f in CENTRE_CROPS),
    *(f"crop_{c}{round(CORNER_CROP * 100):02d}" for c in ("tl", "tr", "bl", "br")),
    *(f"border_{'k' if g == 0 else 'w'}{round(f * 100):02d}" for g, f in BORDERS),
    "trimmed",
)
VARIANT_CODE = {name: i for i, name in enumerate(VARIANTS)}

_ODD = (-1.0) ** np.arange(BLOCK)


def dihedral_blocks(block: np.ndarray) -> np.ndarray:
    """The 8 DCT blocks of an image's flips/rot90s, in `DIHEDRAL` order.

    DCT-II of a mirrored sequence is the same transform with odd frequencies negated, and the
    2-D DCT of a transposed image is the transposed block.
    """
    out = np.empty((len(DIHEDRAL), BLOCK, BLOCK))
    for i, (transpose, flip_rows, flip_cols) in enumerate(DIHEDRAL.values()):
        b = block.T if transpose else block
        if flip_rows:
            b = b * _ODD[:, None]
        if flip_cols:
            b = b * _ODD[None, :]
        out[i] = b
    return out


def find_uniform_border(
    grey: np.ndarray, *, tol: float = 8.0, frac: float = 0.98
) -> tuple[int, int, int, int] | None:
    """Box (left, top, right, bottom) inside a uniform frame, or None when there is none.

    A side's outer line counts as frame when ``frac`` of its pixels are within ``tol`` grey
    levels of that line's median; the frame continues inwards while lines stay that colour.
    Only frames on two opposite sides count. Trims that remove < 1% of the area or > half a
    side are ignored.
    """
    g = np.asarray(grey, dtype=np.float32)
    h, w = g.shape

    def depth(lines: np.ndarray) -> int:  # lines: (n, length), outermost first
        ref = np.median(lines[0])
        good = (np.abs(lines - ref) <= tol).mean(axis=1) >= frac
        return int(np.argmin(good)) if not good.all() else len(good)

    top, bottom = depth(g), depth(g[::-1])
    left, right = depth(g.T), depth(g.T[::-1])
    # Frames come in opposite pairs (letterbox, pillarbox, passe-partout); a one-sided "frame"
    # is usually sky or a wall, and trimming it would add a useless variant.
    if not (top and bottom):
        top = bottom = 0
    if not (left and right):
        left = right = 0
    if top + bottom >= h // 2 or left + right >= w // 2:
        return None
    kept = (h - top - bottom) * (w - left - right)
    if kept > 0.99 * h * w:
        return None
    return left, top, w - right, h - bottom


def _crop_boxes(w: int, h: int) -> list[tuple[str, tuple[int, int, int, int]]]:
    boxes = []
    for f in CENTRE_CROPS:
        dx, dy = round(w * f / 2), round(h * f / 2)
        boxes.append((f"crop_c{round(f * 100):02d}", (dx, dy, w - dx, h - dy)))
    cw, ch = round(w * (1 - CORNER_CROP)), round(h * (1 - CORNER_CROP))
    pct = f"{round(CORNER_CROP * 100):02d}"
    boxes.append((f"crop_tl{pct}", (0, 0, cw, ch)))
    boxes.append((f"crop_tr{pct}", (w - cw, 0, w, ch)))
    boxes.append((f"crop_bl{pct}", (0, h - ch, cw, h)))
    boxes.append((f"crop_br{pct}", (w - cw, h - ch, w, h)))
    return boxes


def eval_variants(
    data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS
) -> tuple[np.ndarray, np.ndarray]:
    """Variant hashes of one eval image and their `VARIANT_CODE` codes (duplicates removed).

    Raises `ImageDecodeError` like `phash`.
    """
    base = luma32(decode_for_hash(data, max_pixels=max_pixels))
    blocks = [dihedral_blocks(dct_blocks(base[None])[0])]
    names = list(DIHEDRAL)

    grey = to_luma(decode_for_hash(data, max_pixels=max_pixels, min_side=CROP_DECODE_SIDE))
    w, h = grey.size
    squares = []
    for name, box in _crop_boxes(w, h):
        squares.append(luma32(grey.crop(box)))
        names.append(name)
    mean_side = (w + h) / 2
    for level, f in BORDERS:
        framed = ImageOps.expand(grey, border=max(1, round(f * mean_side)), fill=level)
        squares.append(luma32(framed))
        names.append(f"border_{'k' if level == 0 else 'w'}{round(f * 100):02d}")
    box = find_uniform_border(np.asarray(grey))
    if box is not None:
        squares.append(luma32(grey.crop(box)))
        names.append("trimmed")
    blocks.append(dct_blocks(np.stack(squares)))
    hashes = hashes_from_blocks(np.concatenate(blocks))
    codes = np.array([VARIANT_CODE[n] for n in names], dtype=np.uint8)
    _, first = np.unique(hashes, return_index=True)
    first.sort()
    return hashes[first], codes[first]


def eval_variant_hashes(data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """The distinct hashes stored for one eval image (see the module docstring for which)."""
    return eval_variants(data, max_pixels=max_pixels)[0]
