"""Real photographs that ship inside installed packages, for `weakly synth` and the demo.

No download: scikit-image's `skimage.data` and scikit-learn's sample images. Only colour or
natural greyscale photos are listed (no synthetic test patterns).
"""

from __future__ import annotations

from PIL import Image

SKIMAGE_COLOUR = ("astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry", "retina")
SKIMAGE_GREY = ("camera", "moon", "brick", "grass", "gravel", "clock", "coins", "page", "text")

# What each photo shows, as lemmas of ImageNet-1k synsets (the demo's vocabulary); a photo whose
# subject has no in1k synset (the moon, coins, a page of text, micrographs) has none, and its
# rows carry only junk tags, which ingest rejects as out of vocabulary.
PHOTO_TAGS: dict[str, tuple[str, ...]] = {
    "astronaut": ("space_shuttle",),
    "chelsea": ("tabby", "tabby_cat"),
    "coffee": ("espresso",),
    "rocket": ("missile",),
    "camera": ("tripod",),
    "clock": ("analog_clock",),
    "china": ("palace",),
    "flower": ("daisy",),
}


def bundled_photos() -> list[tuple[str, Image.Image]]:
    """(name, RGB image) for every bundled real photo, in a fixed order."""
    try:
        import skimage.data
        from sklearn.datasets import load_sample_images
    except ImportError as exc:
        raise RuntimeError(
            "bundled photos need scikit-image and scikit-learn: pip install 'weakly[photos]'"
        ) from exc
    photos = []
    for name in SKIMAGE_COLOUR + SKIMAGE_GREY:
        photos.append((name, Image.fromarray(getattr(skimage.data, name)()).convert("RGB")))
    sample = load_sample_images()
    for filename, array in zip(sample.filenames, sample.images, strict=True):
        photos.append(
            (filename.rsplit("/", 1)[-1].split(".")[0], Image.fromarray(array).convert("RGB"))
        )
    return photos
