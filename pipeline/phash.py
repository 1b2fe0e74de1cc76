"""Perceptual hash (`weakly-phash-v1`): the fingerprint that decides eval-set near-copies.

Definition of `weakly-phash-v1` (pinned by golden tests; change anything here and the version
must change, because hashes stored in eval indexes and shards stop being comparable):

1. Decode the first frame. JPEGs are decoded at a reduced scale (libjpeg scaled IDCT through
   Pillow's ``draft``) to the smallest scale whose sides are both >= ``DRAFT_SIDE`` pixels:
   the scaled IDCT already averages 8x8 blocks, so decoding more pixels only to throw them
   away in step 3 is wasted work. EXIF orientation is applied, so the hash is of the image as
   displayed.
2. Convert to 8-bit luma (ITU-R 601, Pillow's ``L``). Alpha is composited over white (what a
   viewer shows); 16-bit samples are scaled to 8 bits.
3. Area-average (``BOX``) to 32x32, ignoring the aspect ratio.
4. Orthonormal 2-D DCT-II of the 32x32 block, keep the 8x8 lowest frequencies (DC included).
5. Bit ``i`` (row-major over the 8x8 block) is set when coefficient ``i`` is greater than the
   median of the 64 coefficients; bit 0 is the most significant bit of the uint64.

Why this shape: the median threshold makes the hash invariant to brightness and contrast, and
with DC included it matches the well-understood pHash behaviour. Because the DCT-II of a
mirrored signal is the same DCT with odd frequencies negated, all 8 flips/rotations by 90
degrees of an image can be derived from its 8x8 block (see `pipeline.dedup`).

Errors: `phash` raises `ImageDecodeError` (a `ValueError`) with a one-line reason for every
input it cannot hash; `phash_many` never raises for a bad item and reports it instead.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

HASH_VERSION = "weakly-phash-v1"
HASH_SIDE = 32  # side of the greyscale square the DCT runs on
BLOCK = 8  # side of the low-frequency block kept
DRAFT_SIDE = 32  # JPEG draft decode keeps both sides >= this
MIN_SIDE = 8  # smaller images carry no usable structure: rejected
DEFAULT_MAX_PIXELS = 100_000_000  # decompression-bomb cap, checked on the header size

# We apply our own, configurable pixel cap before decoding, so Pillow's warning (fired inside
# Image.open for anything over its global limit) is noise. A module-level filter is used instead
# of catch_warnings() per call because the latter mutates global state and is not thread-safe.
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)


class ImageDecodeError(ValueError):
    """An input could not be hashed; ``str(exc)`` is a one-line reason."""


def _dct_matrix(n: int) -> np.ndarray:
    k = np.arange(n)[:, None]
    x = np.arange(n)[None, :]
    mat = np.cos(np.pi * (2 * x + 1) * k / (2 * n)) * np.sqrt(2.0 / n)
    mat[0] /= np.sqrt(2.0)
    return mat


# Only the first BLOCK rows of the orthonormal DCT-II matrix are needed: block = D @ X @ D.T.
_DCT = np.ascontiguousarray(_dct_matrix(HASH_SIDE)[:BLOCK])
_DCT_T = np.ascontiguousarray(_DCT.T)
_MSB_FIRST = (np.uint64(1) << np.arange(63, -1, -1, dtype=np.uint64)).astype(np.uint64)

# EXIF orientation tag value -> Pillow transpose op (same table as the EXIF spec).
_EXIF_OPS = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def _open_checked(data: bytes, max_pixels: int) -> Image.Image:
    if not data:
        raise ImageDecodeError("empty input (0 bytes)")
    try:
        img = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as exc:
        raise ImageDecodeError(f"decompression bomb: {exc}") from None
    except Image.UnidentifiedImageError:
        raise ImageDecodeError("not an image, or an image format Pillow cannot read") from None
    except Exception as exc:  # Pillow raises many types for corrupt headers
        raise ImageDecodeError(f"corrupt image header: {type(exc).__name__}: {exc}") from None
    w, h = img.size
    if w * h > max_pixels:
        raise ImageDecodeError(
            f"decompression bomb: {w}x{h} = {w * h} pixels exceeds the cap of {max_pixels}"
        )
    if min(w, h) < MIN_SIDE:
        raise ImageDecodeError(f"image too small: {w}x{h}, need both sides >= {MIN_SIDE} px")
    return img


def decode_for_hash(
    data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS, min_side: int = DRAFT_SIDE
) -> Image.Image:
    """Decode ``data`` the way `phash` does: reduced-scale where possible, oriented, first frame.

    The result is an image in any Pillow mode; `phash_array` of it equals `phash(data)`.
    ``min_side`` larger than the default keeps more resolution (used for eval-side crops).
    """
    img = _open_checked(data, max_pixels)
    try:
        orientation = img.getexif().get(0x0112, 1) if img.format in ("JPEG", "WEBP", "PNG") else 1
    except Exception:
        orientation = 1  # a broken EXIF block must not make an otherwise fine image unhashable
    try:
        if img.format == "JPEG":
            w, h = img.size
            scale = min(w, h) / min_side
            img.draft("L", (max(1, int(w / scale)), max(1, int(h / scale))))
        img.load()
    except Image.DecompressionBombError as exc:
        raise ImageDecodeError(f"decompression bomb: {exc}") from None
    except Exception as exc:
        raise ImageDecodeError(f"truncated or corrupt image: {type(exc).__name__}: {exc}") from None
    op = _EXIF_OPS.get(orientation)
    if op is not None:
        img = img.transpose(op)
    return img


def to_luma(img: Image.Image) -> Image.Image:
    """8-bit luma as displayed: alpha over white, 16-bit scaled down, palette expanded."""
    mode = img.mode
    if mode == "L":
        return img
    if mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
        mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(img, dtype=np.float32)
        if mode != "F" or arr.max(initial=0) > 255.0:
            arr = arr / 257.0
        return Image.fromarray(np.clip(arr + 0.5, 0, 255).astype(np.uint8), "L")
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        la = np.asarray(img.convert("LA"), dtype=np.float32)
        alpha = la[..., 1] / 255.0
        grey = la[..., 0] * alpha + 255.0 * (1.0 - alpha)
        return Image.fromarray(np.clip(grey + 0.5, 0, 255).astype(np.uint8), "L")
    return img.convert("L")  # RGB, CMYK, YCbCr, 1, ...


def _as_pil(img: Image.Image | np.ndarray) -> Image.Image:
    if isinstance(img, Image.Image):
        return img
    arr = np.asarray(img)
    if arr.dtype != np.uint8:
        raise ImageDecodeError(f"array images must be uint8, got {arr.dtype}")
    if arr.ndim == 2:
        return Image.fromarray(arr, "L")
    if arr.ndim == 3 and arr.shape[2] == 3:
        return Image.fromarray(arr, "RGB")
    if arr.ndim == 3 and arr.shape[2] == 4:
        return Image.fromarray(arr, "RGBA")
    raise ImageDecodeError(f"array images must be HxW, HxWx3 or HxWx4, got shape {arr.shape}")


def luma32(img: Image.Image | np.ndarray) -> np.ndarray:
    """The 32x32 float32 greyscale square the DCT runs on (steps 2-3 of the definition)."""
    pil = _as_pil(img)
    if min(pil.size) < MIN_SIDE:
        raise ImageDecodeError(f"image too small: {pil.size[0]}x{pil.size[1]}")
    small = to_luma(pil).resize((HASH_SIDE, HASH_SIDE), Image.Resampling.BOX)
    return np.asarray(small, dtype=np.float32)


def dct_blocks(squares: np.ndarray) -> np.ndarray:
    """Low-frequency 8x8 DCT blocks of a stack of 32x32 squares, as one batched matmul.

    Shape (n, 32, 32) -> (n, 8, 8) float64; [u, v] is vertical frequency u, horizontal v.
    """
    x = np.asarray(squares, dtype=np.float64).reshape(-1, HASH_SIDE, HASH_SIDE)
    return _DCT @ x @ _DCT_T


def hashes_from_blocks(blocks: np.ndarray) -> np.ndarray:
    """Threshold blocks at their median and pack row-major bits, MSB first, into uint64."""
    flat = np.asarray(blocks, dtype=np.float64).reshape(-1, BLOCK * BLOCK)
    med = np.median(flat, axis=1, keepdims=True)
    bits = flat > med
    return (bits.astype(np.uint64) * _MSB_FIRST).sum(axis=1, dtype=np.uint64)


def phash_array(img: Image.Image | np.ndarray) -> int:
    """Hash of a decoded image (PIL Image, or uint8 HxW / HxWx3 / HxWx4 array).

    Lets a caller that already decoded the image (e.g. to resize it) hash without decoding
    twice. Equals `phash(data)` exactly when ``img`` is `decode_for_hash(data)`; a full-size
    decode of the same file hashes within a few bits (see BENCHMARKS.md).
    """
    return int(hashes_from_blocks(dct_blocks(luma32(img)[None]))[0])


def phash(data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> int:
    """`weakly-phash-v1` of encoded image bytes, as an unsigned 64-bit int.

    Raises `ImageDecodeError` for empty, truncated, corrupt or non-image input, unsupported
    formats, images over ``max_pixels`` (checked on the header before decoding) and images with
    a side under `MIN_SIDE`. Animated images hash their first frame.
    """
    return phash_array(decode_for_hash(data, max_pixels=max_pixels))


@dataclass
class HashBatch:
    """Result of `phash_many`: ``hashes[i]`` is valid only where ``ok[i]``; failed rows are 0.

    ``errors`` lists ``(index, reason)`` for every failed item, in input order.
    """

    hashes: np.ndarray
    ok: np.ndarray
    errors: list[tuple[int, str]] = field(default_factory=list)


def phash_many(items: list[bytes], *, max_pixels: int = DEFAULT_MAX_PIXELS) -> HashBatch:
    """Hash many encoded images; bad items are recorded, never raised.

    Decoding is per item; the DCT and thresholding run once for the whole batch.
    """
    n = len(items)
    squares = np.zeros((n, HASH_SIDE, HASH_SIDE), dtype=np.float32)
    ok = np.zeros(n, dtype=bool)
    errors: list[tuple[int, str]] = []
    for i, data in enumerate(items):
        try:
            squares[i] = luma32(decode_for_hash(data, max_pixels=max_pixels))
            ok[i] = True
        except ImageDecodeError as exc:
            errors.append((i, str(exc)))
        except Exception as exc:  # a decoder bug must not take the batch down
            errors.append((i, f"unexpected decode failure: {type(exc).__name__}: {exc}"))
    hashes = np.zeros(n, dtype=np.uint64)
    if ok.any():
        hashes[ok] = hashes_from_blocks(dct_blocks(squares[ok]))
    return HashBatch(hashes=hashes, ok=ok, errors=errors)


def hamming(a: np.ndarray | int, b: np.ndarray | int) -> np.ndarray:
    """Element-wise Hamming distance between uint64 hashes (broadcasting)."""
    return np.bitwise_count(
        np.bitwise_xor(np.asarray(a, dtype=np.uint64), np.asarray(b, dtype=np.uint64))
    )


def to_hex(h: int) -> str:
    """16-digit lower-case hex, the form stored in shard json."""
    return f"{int(h):016x}"
