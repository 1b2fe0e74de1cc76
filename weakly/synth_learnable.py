"""`weakly synth --learnable`: a long-tailed tagged image set that a small model learns on CPU.

Why: the photo-based `weakly synth` exercises ingest and dedup, but its tags are independent of
its pixels, so nothing trained on it can show what the papers measure (which loss, which
sampling, how much label noise). Here every synset has a visual signature and an image shows
the signatures of exactly its tags, so accuracy is learnable, and the label frequencies follow a
Zipf law, so head/torso/tail effects are measurable within minutes on two cores.

The generator, per run (all draws from one seeded `random.Random`):
- Synsets: `classes` (<= 32) synsets of the vocabulary, each with one lemma; a seeded shuffle
  picks them and fixes their popularity rank r = 1..K.
- Signature of the synset of rank r: a colour from 8 well-separated hues and a texture from 4
  (solid, horizontal stripes, vertical stripes, checker, all with an 8 px period), assigned so
  that no two synsets share both; the colour is jittered per blob and the pattern's dark phase
  is 35% of the colour, so neither colour alone nor texture alone names every synset.
- Tags of an image: one synset drawn with probability proportional to r^-zipf, plus with
  probability `second_tag` a second, different one drawn the same way; each written as a
  hashtag (`#BrownBear`, `#brown-bear`, plurals) so ingest's canonicaliser has work to do;
  with probability 0.3 a junk tag is added (`#instagood`), which ingest drops.
- Pixels: a `size` x `size` grey background (level 90-160) with Gaussian noise (sd 12); each tag
  paints 5-7 squares of 12-22 px at random places in its signature (later tags over earlier);
  the whole image gets Gaussian noise (sd 10) and is saved as JPEG (quality 85-95).
- `synth.json` records every synset's wnid, lemma, rank, colour and texture, and the counts
  of images per synset as drawn, so results can be read against the long tail.
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
from PIL import Image

from .synth import hashtag_text

HUES = (
    (220, 40, 40),
    (40, 190, 60),
    (50, 80, 230),
    (230, 215, 40),
    (210, 50, 200),
    (40, 205, 210),
    (245, 140, 20),
    (250, 250, 250),
)
TEXTURES = ("solid", "hstripes", "vstripes", "checker")
MAX_CLASSES = len(HUES) * len(TEXTURES)
PERIOD = 8
JUNK = ("#instagood", "#photooftheday", "#nofilter", "#2024", "#tbt")


@dataclass(frozen=True)
class Signature:
    wnid: str
    lemma: str
    rank: int
    colour: tuple[int, int, int]
    texture: str


def signatures(synsets: list[tuple[str, str]]) -> list[Signature]:
    """Rank r (0-based) gets hue r % 8 and texture (r // 8 + r) % 4: neighbours in rank differ
    in colour, and every block of 8 ranks uses every hue once."""
    if not 2 <= len(synsets) <= MAX_CLASSES:
        raise ValueError(f"--classes {len(synsets)}: use 2..{MAX_CLASSES}")
    return [
        Signature(wnid, lemma, r, HUES[r % len(HUES)], TEXTURES[(r // len(HUES) + r) % 4])
        for r, (wnid, lemma) in enumerate(synsets)
    ]


def pattern(texture: str, h: int, w: int, y0: int, x0: int) -> np.ndarray:
    """[h, w] array of 1 (lit) and 0.35 (dark) in image coordinates, so stripes line up
    across blobs of one synset."""
    yy, xx = np.mgrid[y0 : y0 + h, x0 : x0 + w]
    on_y, on_x = (yy // (PERIOD // 2)) % 2 == 0, (xx // (PERIOD // 2)) % 2 == 0
    lit = {
        "solid": np.ones((h, w), bool),
        "hstripes": on_y,
        "vstripes": on_x,
        "checker": on_y ^ on_x,
    }[texture]
    return np.where(lit, 1.0, 0.35)


def render(sigs: list[Signature], rng: random.Random, size: int) -> np.ndarray:
    """HWC uint8 image showing the signatures in `sigs`."""
    nrng = np.random.default_rng(rng.getrandbits(64))
    img = np.full((size, size, 3), rng.uniform(90, 160), np.float32)
    img += nrng.normal(0, 12, img.shape)
    for sig in sigs:
        for _ in range(rng.randint(5, 7)):
            side = rng.randint(max(4, size * 12 // 64), max(5, size * 22 // 64))
            y, x = rng.randrange(0, size - side + 1), rng.randrange(0, size - side + 1)
            colour = np.clip(np.array(sig.colour) + nrng.normal(0, 12, 3), 0, 255)
            img[y : y + side, x : x + side] = (
                pattern(sig.texture, side, side, y, x)[..., None] * colour[None, None]
            )
    img += nrng.normal(0, 10, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def _hashtag(lemma: str, rng: random.Random) -> str:
    return "#" + hashtag_text(lemma, rng, camel=0.4, dashed=0.55)


def pick_synsets(vocab: str, classes: int, seed: int, lexicon_dir: str | None) -> list:
    """`classes` (wnid, lemma) pairs whose lemma canonicalises back to the wnid."""
    from wordnet_tools import load_lexicon

    lex = load_lexicon(vocab, lexicon_dir=lexicon_dir)
    table = lex._forms
    first: dict[str, str] = {}
    for lemma, wnid, kind in sorted(
        zip(
            table["lemma"].to_pylist(),
            table["wnid"].to_pylist(),
            table["kind"].to_pylist(),
            strict=True,
        )
    ):
        if kind == 0 and wnid in lex and wnid not in first and lex.canonical(lemma) == wnid:
            first[wnid] = lemma
    pool = sorted(first.items())
    random.Random(seed).shuffle(pool)
    return pool[:classes]


def learnable_synth(
    n: int,
    out: str | Path,
    *,
    classes: int = 24,
    zipf: float = 1.2,
    second_tag: float = 0.3,
    size: int = 64,
    seed: int = 0,
    vocab: str = "in1k",
    lexicon_dir: str | None = None,
) -> Path:
    """Write `out/manifest.parquet`, `out/images/*.jpg` and `out/synth.json`."""
    if n < 1 or size < 32 or zipf < 0 or not 0 <= second_tag <= 1:
        raise ValueError("learnable synth needs n >= 1, --size >= 32, zipf >= 0, 0 <= second <= 1")
    sigs = signatures(pick_synsets(vocab, classes, seed, lexicon_dir))
    rng = random.Random(seed)
    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    p = np.array([(r + 1) ** -zipf for r in range(len(sigs))])
    cdf = np.cumsum(p / p.sum())

    def draw(exclude: int | None = None) -> int:
        while True:
            r = min(int(np.searchsorted(cdf, rng.random(), side="right")), len(sigs) - 1)
            if r != exclude:
                return r

    keys, paths, tags, truth = [], [], [], []
    counts = [0] * len(sigs)
    for i in range(n):
        ranks = [draw()]
        if rng.random() < second_tag:
            ranks.append(draw(exclude=ranks[0]))
        for r in ranks:
            counts[r] += 1
        pixels = render([sigs[r] for r in ranks], rng, size)
        buf = io.BytesIO()
        Image.fromarray(pixels).save(buf, "JPEG", quality=rng.randint(85, 95))
        key = f"l{i:07d}"
        path = out / "images" / f"{key}.jpg"
        path.write_bytes(buf.getvalue())
        row_tags = [_hashtag(sigs[r].lemma, rng) for r in ranks]
        if rng.random() < 0.3:
            row_tags.append(rng.choice(JUNK))
        keys.append(key)
        paths.append(str(path.resolve()))
        tags.append(row_tags)
        truth.append(sorted(sigs[r].wnid for r in ranks))
    pq.write_table(
        pa.table({"key": keys, "path": paths, "tags": tags, "true_wnids": truth}),
        out / "manifest.parquet",
    )
    meta = {
        "mode": "learnable",
        "n": n,
        "seed": seed,
        "vocab": vocab,
        "zipf": zipf,
        "second_tag": second_tag,
        "size": size,
        "synsets": [
            {**sig.__dict__, "colour": list(sig.colour), "images": counts[sig.rank]} for sig in sigs
        ],
    }
    (out / "synth.json").write_text(json.dumps(meta, indent=1))
    return out / "manifest.parquet"
