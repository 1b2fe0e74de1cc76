"""The real photographs that ship inside installed packages (no download), for benchmarks.

Synthetic images (checkerboards, blobs, colour wheels, logos, phantoms) are left out; ``cat`` is
skipped because it is the same array as ``chelsea``.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

SKIMAGE_PHOTOS = (
    "astronaut", "brick", "camera", "cell", "chelsea", "clock", "coffee", "coins", "grass",
    "gravel", "hubble_deep_field", "immunohistochemistry", "microaneurysms", "moon", "page",
    "retina", "rocket", "text",
)  # fmt: skip


def real_photos() -> list[tuple[str, Image.Image]]:
    """(name, image) for every offline real photo: 18 from scikit-image, 2 from scikit-learn."""
    import skimage.data
    from sklearn.datasets import load_sample_images

    out = [(n, Image.fromarray(getattr(skimage.data, n)())) for n in SKIMAGE_PHOTOS]
    sk = load_sample_images()
    for fname, arr in zip(sk.filenames, sk.images, strict=True):
        out.append((fname.rsplit("/", 1)[-1].split(".")[0], Image.fromarray(arr)))
    return out


def quadrant_tiles(photos: list[tuple[str, Image.Image]], min_side: int = 256):
    """The four non-overlapping quadrants of each photo with both sides >= ``min_side``.

    Labelled ``parent/q0..q3``: distinct images, but cut from a real photo, not photos taken
    separately; benchmarks report them apart from the whole photos.
    """
    out = []
    for name, img in photos:
        w, h = img.size
        if min(w, h) < min_side:
            continue
        for i, (x, y) in enumerate(((0, 0), (1, 0), (0, 1), (1, 1))):
            box = (x * w // 2, y * h // 2, (x + 1) * w // 2, (y + 1) * h // 2)
            out.append((f"{name}/q{i}", img.crop(box)))
    return out


def lfw_faces() -> list[tuple[str, Image.Image]]:
    """The 200 25x25 face photos of skimage's ``lfw_subset`` (tiny, all centred faces)."""
    import skimage.data

    faces = skimage.data.lfw_subset()
    return [
        (f"lfw/{i:03d}", Image.fromarray(np.clip(f * 255 + 0.5, 0, 255).astype(np.uint8)))
        for i, f in enumerate(faces)
    ]
