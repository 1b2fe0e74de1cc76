"""Decode once, validate, resize, encode: the per-image work of pass 2.

The downscale is chosen by measurement (benchmarks/image_path.py, benchmarks/aliasing.py,
BENCHMARKS.md): speed per core on real photos, aliasing on zone plates (rings finer than the
new resolution must fade to flat grey) and the contrast sine gratings keep below the new
Nyquist frequency. Two paths make the same image:

- Plain RGB JPEGs (most of a web crawl) take OpenCV (`fast_images`): libjpeg's DCT-scaled
  decode down to no less than twice the target, a Gaussian prefilter whose sigma follows the
  ratio, then a bicubic resize (from a 3x ratio: pyrDown steps and a linear warp on Pillow's
  sampling grid), OpenCV's JPEG encode: ~1.5x the Pillow path per core at ~500 px, with its
  aliasing (3.5 / 2.6 on the 600 / 2048 px plates against 4.4 / 2.5) and its contrast (0.97 /
  0.89 of Pillow bilinear's at 0.5 / 0.8 of the new Nyquist frequency, against 0.96 / 0.88).
- Everything else (PNG, WEBP, ..., greyscale or CMYK JPEGs, any JPEG whose marker structure
  is not whole, anything OpenCV fails on) takes Pillow: `draft` to the smallest DCT scale
  that keeps at least twice the target size, then Pillow's antialiased bilinear filter.
  Decoding straight to the target size is faster but the DCT scaling is a block average,
  which aliases (a 600 px zone plate keeps grey-level std 14 of 127.5 where it should be
  flat; 2x leaves 4).

Either way the decoded image is oriented by EXIF, validated, hashed from the reduced pixels
(the two paths' hashes differ by 0.2 bits on average), and encoded once.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

from PIL import Image, ImageOps

from weakly_base.jpeg_segments import COM, SOS, STANDALONE, header_segments

from . import fast_images
from .phash import phash_array
from .rejects import RowReject

RESIZE_MODES = ("shorter", "keep")
# JPEG DCT scaling stops at this multiple of the target; the antialiased filter does the rest.
DRAFT_MARGIN = 2.0
RESAMPLE = Image.Resampling.BILINEAR

# Formats a web image dump actually holds. Pillow can open ~40 more, some of which hand the file
# to an external program (EPS runs Ghostscript) or parse rarely-audited containers; a hostile
# row must not reach those decoders, so anything else is `not_an_image`.
FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")
# A small JPEG is stored as its original bytes only when it is plain: it ends at its EOI marker
# (nothing appended: no polyglot payload rides into the shards), it has no COM segment (free text,
# the usual place to hide one) and its APPn segments (EXIF, ICC) total at most this. Anything
# else is re-encoded, which drops all three.
MAX_KEPT_METADATA = 64 << 10


class ImageReject(RowReject):
    """A row rejected while decoding or validating its image."""


@dataclass(frozen=True)
class ImageConfig:
    image_size: int = 256  # shorter side after resizing
    resize_mode: str = "shorter"  # "shorter": shrink so the shorter side is image_size; "keep"
    quality: int = 90
    min_side: int = 32
    max_pixels: int = 100_000_000
    max_aspect: float = 6.0
    keep_small_jpeg: bool = True  # a JPEG already within size is stored as its original bytes

    def __post_init__(self) -> None:
        if self.resize_mode not in RESIZE_MODES:
            raise ValueError(f"--resize-mode {self.resize_mode!r}: use shorter or keep")
        if not 1 <= self.quality <= 100:
            raise ValueError(f"--quality {self.quality}: use 1..100")
        if self.image_size < 8:
            raise ValueError(f"--image-size {self.image_size}: use >= 8")


@dataclass
class PreparedImage:
    jpeg: bytes
    width: int
    height: int
    phash: int
    kept_original: bool


def _open(data: bytes, config: ImageConfig) -> Image.Image:
    if not data:
        raise ImageReject("empty_file", "0 bytes")
    try:
        img = Image.open(io.BytesIO(data), formats=FORMATS)
    except Image.DecompressionBombError as exc:
        raise ImageReject("too_many_pixels", str(exc)[:120]) from None
    except Exception as exc:
        raise ImageReject("not_an_image", f"{type(exc).__name__}: {exc}"[:120]) from None
    w, h = img.size
    if w * h > config.max_pixels:
        raise ImageReject("too_many_pixels", f"{w}x{h} > {config.max_pixels} pixels")
    if min(w, h) < config.min_side:
        raise ImageReject("too_small", f"{w}x{h}, need >= {config.min_side} px")
    if max(w, h) / min(w, h) > config.max_aspect:
        raise ImageReject("bad_aspect", f"{w}x{h}, aspect over {config.max_aspect:g}")
    return img


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode == "RGB":
        return img
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        canvas = Image.new("RGB", rgba.size, (255, 255, 255))
        canvas.paste(rgba, mask=rgba.getchannel("A"))
        return canvas
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        return img.point(lambda v: v / 256).convert("L").convert("RGB")
    return img.convert("RGB")


def plain_jpeg(data: bytes, max_metadata: int = MAX_KEPT_METADATA) -> bool:
    """True when `data` is SOI, segments, scans and EOI with nothing after it, has no comment,
    and its APPn segments total at most `max_metadata` bytes. Anything unusual counts as not plain: the
    caller then re-encodes, which is always safe."""
    metadata = 0
    for seg in header_segments(data):
        if seg.marker == COM or seg.marker in STANDALONE:
            return False
        if 0xE0 <= seg.marker <= 0xEF:
            metadata += seg.length
        if seg.marker == SOS:  # first scan: the image ends at the first EOI after it
            end = data.find(b"\xff\xd9", seg.end)
            return end != -1 and end + 2 == len(data) and metadata <= max_metadata
    return False


def prepare_image(data: bytes, config: ImageConfig, *, fast: bool = True) -> PreparedImage:
    """Decoded once: validated, hashed, resized and encoded. Raises ImageReject with a reason,
    never anything else: whatever a malformed file makes Pillow or OpenCV raise costs that row
    only. Plain RGB JPEGs take the OpenCV path (`fast_images`) when OpenCV is installed and
    `fast`; everything else, and anything that path declines, takes the Pillow path."""
    img = _open(data, config)
    try:
        if fast and img.format == "JPEG" and img.mode == "RGB" and fast_images.available():
            prepared = _prepare_fast(img, data, config)
            if prepared is not None:
                return prepared
        return _prepare(img, data, config)
    except ImageReject:
        raise
    except Exception as exc:
        raise ImageReject("corrupt_image", f"{type(exc).__name__}: {exc}"[:120]) from None


def _small_enough(w: int, h: int, config: ImageConfig) -> bool:
    """No downscale: `--resize-mode keep`, or the shorter side already at most the target."""
    return config.resize_mode == "keep" or min(w, h) <= config.image_size


def _resized(w: int, h: int, target: int) -> tuple[int, int]:
    """(w, h) scaled so the shorter side is `target`, the longer rounded, neither below 1."""
    scale = target / min(w, h)
    return max(1, round(w * scale)), max(1, round(h * scale))


def _orientation(img: Image.Image) -> int:
    try:
        return img.getexif().get(0x0112, 1)
    except Exception:
        return 1


def _prepare_fast(img: Image.Image, data: bytes, config: ImageConfig) -> PreparedImage | None:
    """The OpenCV path for a plain RGB JPEG; None when it declines (the caller falls back)."""
    if not fast_images.jpeg_well_formed(data):
        return None  # cut short, or odd structure: Pillow decides (and rejects a truncated file)
    w, h = img.size
    orientation = _orientation(img)
    target = config.image_size
    small_enough = _small_enough(w, h, config)
    k = 1 if small_enough else fast_images.reduced_factor(w, h, target, DRAFT_MARGIN)
    bgr = fast_images.decode_reduced(data, w, h, k)
    if bgr is None:
        return None  # OpenCV could not decode it as expected: Pillow decides
    if not small_enough:
        # The size the Pillow path computes from its decoded image (which it transposes first:
        # resizing before the transpose, per-axis sigma, gives the same pixels transposed).
        rh, rw = bgr.shape[:2]
        bgr = fast_images.downscale(bgr, _resized(rw, rh, target))
    bgr = fast_images.orient(bgr, orientation)
    image_hash = phash_array(fast_images.to_gray(bgr))
    height, width = bgr.shape[:2]
    keep = config.keep_small_jpeg and small_enough and orientation == 1 and plain_jpeg(data)
    if keep:
        return PreparedImage(data, width, height, image_hash, True)
    return PreparedImage(
        fast_images.encode_jpeg(bgr, config.quality), width, height, image_hash, False
    )


def _prepare(img: Image.Image, data: bytes, config: ImageConfig) -> PreparedImage:
    original_format = img.format
    w, h = img.size
    orientation = _orientation(img)
    target = config.image_size
    small_enough = _small_enough(w, h, config)
    try:
        if original_format == "JPEG" and not small_enough:
            scale = min(w, h) / (DRAFT_MARGIN * target)  # draft never goes below this size
            img.draft("RGB", (max(1, int(w / scale)), max(1, int(h / scale))))
        img.seek(0)  # animated: first frame
        img.load()
    except Exception as exc:
        raise ImageReject("corrupt_image", f"{type(exc).__name__}: {exc}"[:120]) from None
    img = ImageOps.exif_transpose(img) if orientation != 1 else img
    rgb = _to_rgb(img)
    keep = (
        config.keep_small_jpeg
        and small_enough
        and original_format == "JPEG"
        and orientation == 1
        and img.mode == "RGB"
        and plain_jpeg(data)
    )
    if not small_enough:
        rgb = rgb.resize(_resized(rgb.width, rgb.height, target), RESAMPLE, reducing_gap=None)
    # Hashed after resizing: the hash is resolution-stable (BENCHMARKS.md) and a 256 px image
    # costs a fraction of the full decode to reduce to 32x32.
    image_hash = phash_array(rgb)
    if keep:
        return PreparedImage(data, rgb.width, rgb.height, image_hash, True)
    out = io.BytesIO()
    # Pillow copies a source COM segment (`info["comment"]`) into the re-encoded file; clearing
    # `info` keeps any comment payload out of the shards.
    rgb.info = {}
    rgb.save(out, "JPEG", quality=config.quality)
    return PreparedImage(out.getvalue(), rgb.width, rgb.height, image_hash, False)
