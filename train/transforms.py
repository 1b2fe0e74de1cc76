"""Training augmentation: RandomResizedCrop + horizontal flip, decoded on CPU or GPU.

Crop parameters are drawn in the loader from the JPEG header alone (no pixel decode) with a
generator seeded by the sample's place in the stream, so both decode paths see the same crops
and a resumed run sees the same augmentations as an uninterrupted one. Images stay uint8 until
they reach the training device; normalisation happens there.
"""

from __future__ import annotations

import io
import math

import numpy as np
import torch
from PIL import Image

Image.MAX_IMAGE_PIXELS = 64_000_000  # a hostile header should not cost gigabytes

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
DECODE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError)


def crop_params(
    width: int,
    height: int,
    rng: np.random.Generator,
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
    with Image.open(io.BytesIO(jpg)) as img:
        if img.format != "JPEG":
            raise ValueError(f"not a JPEG: {img.format}")
        return img.size


def decode_crop_cpu(
    jpg: bytes, rng: np.random.Generator, size: int, draft: bool = True
) -> np.ndarray:
    """Decode, random-resized-crop to size x size, flip: HWC uint8. Opens the JPEG once.

    With `draft`, libjpeg decodes at the smallest 1/1..1/8 scale that still leaves at least
    `size` pixels across the crop: for web images much larger than the crop this skips most of
    the IDCT work and memory traffic. The crop is drawn from `rng` exactly as `crop_params`
    would from the header size, so the GPU path sees the same crops.
    """
    with Image.open(io.BytesIO(jpg)) as img:
        if img.format != "JPEG":
            raise ValueError(f"not a JPEG: {img.format}")
        full_w, full_h = img.size
        x, y, w, h, flip = crop_params(full_w, full_h, rng)
        if draft:
            img.draft("RGB", (math.ceil(full_w * size / w), math.ceil(full_h * size / h)))
        sx, sy = img.size[0] / full_w, img.size[1] / full_h
        rgb = img.convert("RGB")
        out = rgb.resize(
            (size, size), Image.BILINEAR, box=(x * sx, y * sy, (x + w) * sx, (y + h) * sy)
        )
    if flip:
        out = out.transpose(Image.FLIP_LEFT_RIGHT)
    return np.asarray(out)


def decode_crop_gpu(
    jpgs: list[torch.Tensor], params: torch.Tensor, size: int, device: torch.device
) -> tuple[torch.Tensor, list[int]]:
    """Batched nvjpeg decode then crop/resize/flip on the GPU.

    Returns (uint8 NCHW images, indices kept). A batch that fails to decode as a whole is
    retried one image at a time so that one bad JPEG costs one sample, not the batch.
    """
    from torchvision.io import ImageReadMode, decode_jpeg
    from torchvision.transforms.v2 import functional as F

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
        crop = F.resized_crop(img, y, x, h, w, [size, size], antialias=True)
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
