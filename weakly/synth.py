"""`weakly synth`: a synthetic manifest of real-looking photos with hashtag-like tags.

Images are random crops, scales, flips and colour shifts of the real photos bundled with
scikit-image and scikit-learn, saved as JPEGs of 300-2000 px. Tags are drawn Zipf over WordNet
surface forms of the chosen vocabulary, decorated the way people write hashtags (`#`, CamelCase,
plurals, hyphens, concatenated synonyms), mixed with junk tags. With `eval_out`, an eval set is
cut from photos the training images never use, and a fraction of training rows are planted
near-copies of eval images (recompressed, resized, cropped, bordered or flipped), so dedup has
something real to find and nothing else to find.
"""

from __future__ import annotations

import io
import json
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image, ImageEnhance, ImageOps

from .photos import PHOTO_TAGS, bundled_photos

JUNK_TAGS = (
    "#instagood", "#photooftheday", "#love", "#2024", "#tbt", "#nofilter", "#🔥", "#💯✨",
    "#picoftheday", "#follow4follow", "#igers", "#likeforlike", "#123", "#vsco", "#mood",
)  # fmt: skip
EVAL_PHOTOS = 3  # the first photos (by a seeded shuffle) are reserved for the eval set
PLANTED_TRANSFORMS = ("recompress", "resize", "crop5", "border", "hflip")


@dataclass
class SynthResult:
    manifest: Path
    images: int
    planted: int
    eval_images: int


def hashtag_text(lemma: str, rng: random.Random, camel: float = 0.35, dashed: float = 0.5) -> str:
    """A lemma written the ways people write hashtags: `BrownBear`, `brown-bear`, `brownbear`
    (with probabilities camel, dashed - camel, and the rest; one draw from `rng`)."""
    words = lemma.split("_")
    style = rng.random()
    if style < camel:
        return "".join(w.capitalize() for w in words)
    if style < dashed:
        return "-".join(words)
    return "".join(words).lower()


def _decorate(lemma: str, rng: random.Random) -> str:
    text = hashtag_text(lemma, rng)
    if rng.random() < 0.2:
        text += "s"
    return "#" + text


def _random_view(photo: Image.Image, rng: random.Random, min_px: int, max_px: int) -> Image.Image:
    w, h = photo.size
    area = rng.uniform(0.35, 1.0)
    aspect = rng.uniform(0.75, 1.33)
    cw = max(16, min(w, int((w * h * area * aspect) ** 0.5)))
    ch = max(16, min(h, int((w * h * area / aspect) ** 0.5)))
    x, y = rng.randint(0, w - cw), rng.randint(0, h - ch)
    view = photo.crop((x, y, x + cw, y + ch))
    if rng.random() < 0.5:
        view = ImageOps.mirror(view)
    view = ImageEnhance.Color(view).enhance(rng.uniform(0.6, 1.4))
    view = ImageEnhance.Brightness(view).enhance(rng.uniform(0.8, 1.2))
    longer = rng.randint(min_px, max_px)
    scale = longer / max(view.size)
    return view.resize(
        (max(8, round(view.width * scale)), max(8, round(view.height * scale))), Image.BICUBIC
    )


def _jpeg(img: Image.Image, quality: int) -> bytes:
    out = io.BytesIO()
    img.save(out, "JPEG", quality=quality)
    return out.getvalue()


def _near_copy(eval_img: Image.Image, how: str) -> Image.Image:
    w, h = eval_img.size
    if how == "resize":
        return eval_img.resize((w * 3 // 4, h * 3 // 4), Image.BICUBIC)
    if how == "crop5":
        dx, dy = w // 40, h // 40
        return eval_img.crop((dx, dy, w - dx, h - dy))
    if how == "border":
        return ImageOps.expand(eval_img, border=max(2, min(w, h) // 20), fill=(0, 0, 0))
    if how == "hflip":
        return ImageOps.mirror(eval_img)
    return eval_img  # recompress: re-encoded at a lower quality by the caller


def split_photos(rng: random.Random) -> tuple[list, list]:
    """(eval pool, training pool) of the bundled photos: the first draw of a synth run's rng,
    so the demo can find which photos a given seed keeps out of training."""
    photos = bundled_photos()
    rng.shuffle(photos)
    return photos[:EVAL_PHOTOS], photos[EVAL_PHOTOS:]


def synth_tag_pool(vocab: str = "in1k", lexicon_dir: str | None = None) -> list[str]:
    """Lemma names whose synsets are in the vocabulary, in a fixed order."""
    from wordnet_tools import load_lexicon

    lex = load_lexicon(vocab, lexicon_dir=lexicon_dir)
    table = lex._forms
    lemmas = sorted(
        {
            lemma
            for lemma, wnid, kind in zip(
                table["lemma"].to_pylist(),
                table["wnid"].to_pylist(),
                table["kind"].to_pylist(),
                strict=True,
            )
            if kind == 0 and wnid in lex and lex.canonical(lemma) == wnid
        }
    )
    return lemmas


def synth(
    n: int,
    out: str | Path,
    eval_out: str | Path | None = None,
    *,
    seed: int = 0,
    vocab: str = "in1k",
    min_px: int = 300,
    max_px: int = 2000,
    eval_images: int = 20,
    planted_fraction: float = 0.05,
    lexicon_dir: str | None = None,
    content_tags: bool = False,
    wrong_tag: float = 0.1,
) -> SynthResult:
    """Write `out/manifest.parquet` and `out/images/*.jpg` (and eval images into `eval_out`).

    Tags are Zipf draws independent of the pixels (ingest and dedup tests need only tags), or
    with `content_tags` the photo's own subject (`PHOTO_TAGS`, written as hashtags people write,
    one to three forms of it) plus, with probability `wrong_tag`, one Zipf draw: tags a model can
    learn from, with some weak-supervision noise (the demo)."""
    if n < 1 or min_px < 32 or max_px < min_px:
        raise ValueError("synth needs n >= 1 and 32 <= min_px <= max_px")
    rng = random.Random(seed)
    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    eval_pool, train_pool = split_photos(rng)

    lemmas = synth_tag_pool(vocab, lexicon_dir)
    rng.shuffle(lemmas)
    zipf = 1.0 / np.arange(1, len(lemmas) + 1) ** 1.1
    zipf_cdf = np.cumsum(zipf / zipf.sum())

    def zipf_lemma() -> str:
        return lemmas[int(np.searchsorted(zipf_cdf, rng.random()))]

    eval_imgs: list[tuple[str, Image.Image]] = []
    if eval_out is not None:
        eval_dir = Path(eval_out)
        eval_dir.mkdir(parents=True, exist_ok=True)
        for i in range(eval_images):
            name, photo = eval_pool[i % len(eval_pool)]
            img = _random_view(photo, rng, 300, 640)
            eval_id = f"eval{i:04d}"
            (eval_dir / f"{eval_id}.jpg").write_bytes(_jpeg(img, 92))
            eval_imgs.append((eval_id, img))

    keys, paths, tags, planted_of = [], [], [], []
    planted = 0
    for i in range(n):
        key = f"s{i:07d}"
        plant = eval_imgs and rng.random() < planted_fraction
        if plant:
            eval_id, eval_img = eval_imgs[rng.randrange(len(eval_imgs))]
            how = PLANTED_TRANSFORMS[planted % len(PLANTED_TRANSFORMS)]
            data = _jpeg(_near_copy(eval_img, how), 60 if how == "recompress" else 88)
            planted_of.append(f"{eval_id}:{how}")
            planted += 1
        else:
            name, photo = train_pool[rng.randrange(len(train_pool))]
            data = _jpeg(_random_view(photo, rng, min_px, max_px), rng.randint(75, 95))
            planted_of.append(None)
        path = out / "images" / f"{key}.jpg"
        path.write_bytes(data)
        row_tags = []
        if content_tags and not plant:
            # Planted eval copies keep Zipf tags: they must reach dedup, not fail on vocabulary.
            subject = PHOTO_TAGS.get(name, ())
            for _ in range(rng.choice((1, 1, 2, 3)) if subject else 0):
                row_tags.append(_decorate(rng.choice(subject), rng))
            if rng.random() < wrong_tag:
                row_tags.append(_decorate(zipf_lemma(), rng))
        else:
            for _ in range(rng.choice((1, 1, 2, 2, 3, 4))):
                row_tags.append(_decorate(zipf_lemma(), rng))
        if rng.random() < 0.5:
            row_tags.append(rng.choice(JUNK_TAGS))
        keys.append(key)
        paths.append(str(path.resolve()))
        tags.append(row_tags)
    pq.write_table(
        pa.table({"key": keys, "path": paths, "tags": tags, "planted_from": planted_of}),
        out / "manifest.parquet",
    )
    (out / "synth.json").write_text(
        json.dumps(
            {
                "n": n,
                "seed": seed,
                "vocab": vocab,
                "planted": planted,
                "eval_images": len(eval_imgs),
            }
        )
    )
    return SynthResult(out / "manifest.parquet", n, planted, len(eval_imgs))
