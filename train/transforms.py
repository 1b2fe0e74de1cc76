"""Training augmentation: RandomResizedCrop + horizontal flip, decoded on CPU or GPU.

Crop parameters are drawn in the loader from the JPEG header alone (no pixel decode) with a
generator keyed by the sample's place in the stream (train/sample_rng.py), so both decode paths
see the same crops and a resumed run sees the same augmentations as an uninterrupted one.
Images stay uint8 until they reach the training device; normalisation happens there.
"""

from __future__ import annotations

import functools
import io
import math
import warnings

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from weakly_base.jpeg_segments import header_segments

from .sample_rng import SampleRng

Image.MAX_IMAGE_PIXELS = 64_000_000  # a hostile header should not cost gigabytes

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
# Drafted JPEG decodes leave the crop at least this multiple of the output size, so that an
# antialiased resize, not libjpeg's block-wise DCT scaling, does the final downscale (aliasing).
DRAFT_MARGIN = 2.0
DECODE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError)


def crop_params(
    width: int,
    height: int,
    rng: np.random.Generator | SampleRng,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
) -> tuple[int, int, int, int, int]:
    """(x, y, w, h, flip) of a random resized crop, the Inception-style recipe."""
    area = width * height
    log_r = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(*log_r))
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            x = int(rng.integers(0, width - w + 1))
            y = int(rng.integers(0, height - h + 1))
            return x, y, w, h, int(rng.random() < 0.5)
    in_ratio = width / height
    if in_ratio < ratio[0]:
        w, h = width, int(round(width / ratio[0]))
    elif in_ratio > ratio[1]:
        h, w = height, int(round(height * ratio[1]))
    else:
        w, h = width, height
    return (width - w) // 2, (height - h) // 2, w, h, int(rng.random() < 0.5)


def header_size(jpg: bytes) -> tuple[int, int]:
    """Image size from the header; raises one of DECODE_ERRORS on a non-image."""
    fast = jpeg_size(jpg)
    if fast is not None:
        return fast
    with Image.open(io.BytesIO(jpg)) as img:
        if img.format != "JPEG":
            raise ValueError(f"not a JPEG: {img.format}")
        return img.size


# Start-of-frame markers (baseline, extended, progressive, lossless; Huffman or arithmetic):
# every marker 0xC0-0xCF but DHT (C4), JPG (C8) and DAC (CC).
_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


def jpeg_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a JPEG's first frame header, walking its marker segments by their
    lengths (a few microseconds where `Image.open` costs tens); None for anything else or any
    oddity (the caller then asks Pillow, which says what is wrong)."""
    for seg in header_segments(data):
        if seg.marker in _SOF:
            i = seg.start
            if i + 9 > len(data):
                return None
            height = (data[i + 5] << 8) | data[i + 6]
            width = (data[i + 7] << 8) | data[i + 8]
            return (width, height) if width and height else None
    return None  # a scan, an oddity or the end of the data before any frame header


def _checked_size(width: int, height: int) -> tuple[int, int]:
    if width * height > Image.MAX_IMAGE_PIXELS:
        raise Image.DecompressionBombError(f"{width}x{height} pixels is over the decode limit")
    return width, height


def draft_scale(box_w: int, box_h: int, size: int, margin: float = DRAFT_MARGIN) -> int:
    """The largest JPEG DCT scale 1/s (s in 8, 4, 2, 1) that leaves the crop at least
    `margin * size` pixels on its shorter side, so an antialiased resize still does the rest
    of the downscale (libjpeg's scaled IDCT alone is block-wise and aliases)."""
    for s in (8, 4, 2):
        if min(box_w, box_h) >= s * margin * size:
            return s
    return 1


@functools.cache
def _jpeg_decoder():
    """torchvision's CPU JPEG decoder as a function of a uint8 byte tensor, imported on first
    use (torchvision costs seconds to import), or None where it has none: its image I/O is
    deprecated since 0.29 in favour of TorchCodec, and Pillow then decodes.

    The registered operator `decode_jpeg` calls is used directly where it exists: the public
    wrapper logs API usage and issues its deprecation warning on every call, which at ingest's
    image size costs a few percent of the decode."""
    try:
        from torchvision.io import ImageReadMode, decode_jpeg
    except ImportError:  # pragma: no cover - a torchvision without image I/O
        return None
    rgb = ImageReadMode.RGB
    try:
        op = torch.ops.image.decode_jpeg
    except (AttributeError, RuntimeError):  # pragma: no cover - the operator moved
        op = None
    if op is not None:
        return lambda data: op(data, rgb.value, False)

    def public(data: torch.Tensor) -> torch.Tensor:  # pragma: no cover - see above
        with warnings.catch_warnings():  # the deprecation notice, on every call
            warnings.simplefilter("ignore", DeprecationWarning)
            return decode_jpeg(data, mode=rgb)

    return public


def _jpeg_pixels(data: bytes) -> torch.Tensor | None:
    """Full-scale libjpeg-turbo decode through torchvision: uint8 CHW (a view of HWC memory),
    or None without the decoder. Same libjpeg-turbo as Pillow, same pixels, but it skips
    Pillow's 4-byte pixel buffer and the copy into numpy: ~1.2x at ingest's image size."""
    decode = _jpeg_decoder()
    if decode is None:
        return None
    try:
        return decode(torch.frombuffer(bytearray(data), dtype=torch.uint8))
    except RuntimeError as exc:  # truncated or corrupt data; one line, like Pillow's errors
        reason = str(exc).splitlines()[-1].rsplit(", ", 1)[-1][:200]  # drop the C++ location
        raise ValueError(f"undecodable JPEG: {reason}") from None


def _pil_pixels(img: Image.Image) -> torch.Tensor:
    """Pillow's decode (drafted or not, any format) as uint8 CHW (a view of HWC memory)."""
    rgb = img if img.mode == "RGB" else img.convert("RGB")
    with warnings.catch_warnings():  # a fresh read-only buffer that is only ever read
        warnings.simplefilter("ignore", UserWarning)
        return torch.from_numpy(np.asarray(rgb)).permute(2, 0, 1)


def _open_size(img: Image.Image) -> tuple[int, int]:
    return _checked_size(*img.size)


def _crop_resize(
    img: Image.Image | None,
    data: bytes,
    box: tuple[int, int, int, int],
    size: int,
    flip: bool,
    draft: bool,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Decode `data` at the smallest safe scale, cut `box` (source pixels x, y, w, h),
    antialiased bilinear resize to size x size, optional mirror: HWC uint8, written into
    `out` when given (a batch's slot: no separate stacking copy).

    `img` is the image opened by Pillow from `data`, or None for a JPEG whose size came from
    `jpeg_size`: Pillow is then opened only when the crop can be drafted. The crop is cut
    before any resize, so only its pixels are resampled. Under a JPEG draft of 1/s the box
    maps to source / s exactly (libjpeg scales each 8x8 block to 8/s pixels) and is rounded to
    whole drafted pixels: its edges move by at most s/2 source pixels, at most
    1/(2 DRAFT_MARGIN size) of the crop's side. Other formats decode at full scale.
    """
    x, y, w, h = box
    scale = 1
    s = draft_scale(w, h, size, DRAFT_MARGIN) if draft else 1
    if img is None and s > 1:
        with Image.open(io.BytesIO(data)) as opened:
            return _crop_resize(opened, data, box, size, flip, draft, out)
    if img is None or img.format in ("JPEG", "MPO"):  # MPO: a camera JPEG with extra frames
        if img is not None and s > 1 and img.draft("RGB", (img.size[0] // s, img.size[1] // s)):
            scale = img.decoderconfig[0]
        pixels = _jpeg_pixels(data) if scale == 1 else None
        if pixels is None:
            if img is None:  # no torchvision decoder: Pillow after all
                with Image.open(io.BytesIO(data)) as opened:
                    return _crop_resize(opened, data, box, size, flip, False, out)
            pixels = _pil_pixels(img)
    else:
        pixels = _pil_pixels(img)
    if scale > 1:
        x0, y0 = round(x / scale), round(y / scale)
        x1 = min(pixels.shape[2], max(x0 + 1, round((x + w) / scale)))
        y1 = min(pixels.shape[1], max(y0 + 1, round((y + h) / scale)))
    else:
        if x + w > pixels.shape[2] or y + h > pixels.shape[1]:
            raise ValueError(
                f"JPEG header says {x + w}x{y + h} or more, the data {pixels.shape[2]}x"
                f"{pixels.shape[1]}"
            )
        x0, y0, x1, y1 = x, y, x + w, y + h
    # NCHW in channels-last memory: torch's vectorised uint8 antialiased resize path.
    crop = pixels[None, :, y0:y1, x0:x1].contiguous(memory_format=torch.channels_last)
    if crop.shape[2:] != (size, size):
        crop = F.interpolate(crop, size=(size, size), mode="bilinear", antialias=True)
    res = crop[0].permute(1, 2, 0)  # HWC view, contiguous
    if flip:
        res = res.flip(1)
    if out is None:
        return res.numpy()
    torch.from_numpy(out).copy_(res)
    return out


def _open_jpeg(data: bytes) -> tuple[int, int] | None:
    """The size of a JPEG that torchvision can decode without Pillow, from its header alone
    (None: open it with Pillow)."""
    size = jpeg_size(data)
    if size is None or _jpeg_decoder() is None:
        return None
    return _checked_size(*size)


def decode_crop_cpu(
    jpg: bytes,
    rng: np.random.Generator | SampleRng,
    size: int,
    draft: bool = True,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Decode, random-resized-crop to size x size, flip: HWC uint8 (into `out` when given).

    The crop is drawn from the header's size alone, exactly as `crop_params` draws it (so the
    GPU path sees the same crops), then only the crop is decoded-and-resized: with `draft`, a
    JPEG is decoded at the smallest DCT scale that still leaves `DRAFT_MARGIN` x `size` pixels
    across the crop (`draft_scale`), which for web images much larger than the crop skips most
    of the IDCT work and memory traffic. A JPEG's size is read from its frame header without
    Pillow, which is opened only to draft; PNG and other formats decode at full scale.
    """
    known = _open_jpeg(jpg)
    if known is not None:
        x, y, w, h, flip = crop_params(*known, rng)
        return _crop_resize(None, jpg, (x, y, w, h), size, bool(flip), draft, out)
    with Image.open(io.BytesIO(jpg)) as img:
        x, y, w, h, flip = crop_params(*_open_size(img), rng)
        return _crop_resize(img, jpg, (x, y, w, h), size, bool(flip), draft, out)


def decode_box(
    data: bytes, box: tuple[int, int, int, int], size: int, flip: bool = False, draft: bool = True
) -> np.ndarray:
    """`box` (x, y, w, h in source pixels) of an encoded image, resized to size x size, as the
    training path does it: HWC uint8. For checks that need a fixed box."""
    with Image.open(io.BytesIO(data)) as img:
        _open_size(img)
        return _crop_resize(img, data, box, size, flip, draft)


def center_box(width: int, height: int) -> tuple[int, int, int, int]:
    """The centred square of side min(width, height): what a shorter-side resize followed by
    a centre crop keeps, in source pixels."""
    side = min(width, height)
    return (width - side) // 2, (height - side) // 2, side, side


def decode_center(data: bytes, size: int, draft: bool = True) -> np.ndarray:
    """Evaluation view: shorter side resized to `size`, centre size x size crop, HWC uint8.
    Deterministic; cut before resizing, with the same decode and resize as training."""
    known = _open_jpeg(data)
    if known is not None:
        return _crop_resize(None, data, center_box(*known), size, False, draft)
    with Image.open(io.BytesIO(data)) as img:
        box = center_box(*_open_size(img))
        return _crop_resize(img, data, box, size, False, draft)


def decode_crop_gpu(
    jpgs: list[torch.Tensor], params: torch.Tensor, size: int, device: torch.device
) -> tuple[torch.Tensor, list[int]]:
    """Batched nvjpeg decode then crop/resize/flip on the GPU.

    Returns (uint8 NCHW images, indices kept). A batch that fails to decode as a whole is
    retried one image at a time so that one bad JPEG costs one sample, not the batch.
    """
    from torchvision.io import ImageReadMode, decode_jpeg
    from torchvision.transforms.v2 import functional as TF

    try:
        decoded = decode_jpeg(jpgs, mode=ImageReadMode.RGB, device=device)
        kept = list(range(len(jpgs)))
    except RuntimeError:
        decoded, kept = [], []
        for i, data in enumerate(jpgs):
            try:
                decoded.append(decode_jpeg(data, mode=ImageReadMode.RGB, device=device))
                kept.append(i)
            except RuntimeError:
                pass
    out = []
    for img, i in zip(decoded, kept, strict=True):
        x, y, w, h, flip = (int(v) for v in params[i])
        crop = TF.resized_crop(img, y, x, h, w, [size, size], antialias=True)
        out.append(crop.flip(-1) if flip else crop)
    if not out:
        return torch.empty(0, 3, size, size, dtype=torch.uint8, device=device), kept
    return torch.stack(out), kept


def normalize(images: torch.Tensor, channels_last: bool = False) -> torch.Tensor:
    """uint8 NCHW (any memory layout) -> normalised float32 on the same device."""
    mean = torch.tensor(MEAN, device=images.device).view(1, 3, 1, 1) * 255
    std = torch.tensor(STD, device=images.device).view(1, 3, 1, 1) * 255
    x = (images.float() - mean) / std
    if channels_last:
        return x.contiguous(memory_format=torch.channels_last)
    return x.contiguous()
