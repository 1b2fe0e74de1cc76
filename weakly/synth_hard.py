"""A harder learnable long-tailed set for the ablations: many classes, each a distribution.

Why: `synth_learnable` gives each of at most 32 synsets one fixed colour/texture, so a tail
class is as easy to recognise as a head class after a handful of images, and sampling laws
cannot show what they buy. Here (all draws from one seeded generator, in memory, no files):
- Looks: `classes` (<= 360) classes, each a distinct (foreground hue, background hue, texture)
  from 10 hues x 9 other hues x 4 textures (horizontal / vertical / diagonal stripes, checker),
  plus two of three shapes (square, disc, diamond) it may take. Classes that share a hue or a
  texture are confusable, which is what makes 200+ classes hard for a small model.
- Nuisance per object: shape (one of the class's two), size (40-65% of the image side),
  position, stripe period (2 or 3 px) and phase, per-hue brightness (x0.7-1.2) and colour
  jitter (sd 18), and with probability 0.15 the two hues swap roles. Background: a random grey
  with a random colour cast, Gaussian noise (sd 14) over everything.
- Frequencies: a seeded permutation, independent of the looks, gives every class a popularity
  rank r, so difficulty does not depend on frequency (`balanced_check` in the ablation
  benchmark measures it). A training image's first label is drawn with probability
  proportional to (r + 1)^-zipf; with probability `second` it has a second label, drawn from the
  first label's three co-occurrence partners (drawn by popularity) with probability 0.6 (else
  Zipf again), and with
  probability `third` a third one the same way: multi-label with real co-occurrence.
- The difficulty check draws train and test images with `uniform=True` (every label uniform):
  then head and tail classes differ only in their looks.
- Evaluation sets (`balanced=True`) draw the first label uniformly over classes, so every
  class has positives for AP and the tail third has images to score; co-occurring labels follow
  the training process.
- Transfer: `transfer_set` draws single-label images of classes outside the pretraining
  classes (the same family of looks), for a linear probe on frozen features.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

HUES = np.array(
    [
        (225, 40, 40),
        (40, 185, 60),
        (50, 80, 235),
        (235, 215, 40),
        (205, 50, 200),
        (40, 205, 210),
        (245, 140, 20),
        (245, 245, 245),
        (25, 25, 25),
        (130, 70, 30),
    ],
    np.float32,
)
TEXTURES = ("hstripes", "vstripes", "diagonal", "checker")
SHAPES = ("square", "disc", "diamond")
MAX_CLASSES = len(HUES) * (len(HUES) - 1) * len(TEXTURES)
PARTNERS = 3


@dataclass(frozen=True)
class Look:
    fg: int
    bg: int
    texture: int
    shapes: tuple[int, int]


def class_looks(n: int, seed: int) -> list[Look]:
    """`n` distinct looks in a seeded order (index = class id)."""
    if not 2 <= n <= MAX_CLASSES:
        raise ValueError(f"hard synth classes {n}: use 2..{MAX_CLASSES}")
    rng = np.random.default_rng([seed, 1])
    combos = [
        (fg, bg, t)
        for fg in range(len(HUES))
        for bg in range(len(HUES))
        if bg != fg
        for t in range(len(TEXTURES))
    ]
    order = rng.permutation(len(combos))[:n]
    looks = []
    for i in order:
        fg, bg, t = combos[i]
        shapes = tuple(sorted(rng.choice(len(SHAPES), 2, replace=False).tolist()))
        looks.append(Look(fg, bg, t, shapes))
    return looks


def _texture(kind: int, side: int, period: int, phase: int) -> np.ndarray:
    yy, xx = np.mgrid[0:side, 0:side] + phase
    name = TEXTURES[kind]
    if name == "hstripes":
        return (yy // period) % 2 == 0
    if name == "vstripes":
        return (xx // period) % 2 == 0
    if name == "diagonal":
        return ((xx + yy) // period) % 2 == 0
    return ((yy // period) + (xx // period)) % 2 == 0


def _shape(kind: int, side: int) -> np.ndarray:
    c = (side - 1) / 2
    yy, xx = np.mgrid[0:side, 0:side]
    name = SHAPES[kind]
    if name == "square":
        return np.ones((side, side), bool)
    if name == "disc":
        return (yy - c) ** 2 + (xx - c) ** 2 <= (side / 2) ** 2
    return np.abs(yy - c) + np.abs(xx - c) <= side / 2


def render(looks: list[Look], labels: list[int], rng: np.random.Generator, size: int) -> np.ndarray:
    """HWC uint8 image showing one object per label (later labels drawn over earlier)."""
    img = np.empty((size, size, 3), np.float32)
    img[:] = rng.uniform(70, 170) + rng.normal(0, 20, 3)
    for label in labels:
        look = looks[label]
        side = int(rng.integers(round(0.40 * size), round(0.65 * size) + 1))
        y, x = rng.integers(0, size - side + 1, 2)
        lit = _texture(look.texture, side, int(rng.integers(2, 4)), int(rng.integers(0, 6)))
        mask = _shape(look.shapes[int(rng.integers(0, 2))], side)
        fg, bg = look.fg, look.bg
        if rng.random() < 0.15:
            fg, bg = bg, fg
        c_fg = HUES[fg] * rng.uniform(0.7, 1.2) + rng.normal(0, 18, 3)
        c_bg = HUES[bg] * rng.uniform(0.7, 1.2) + rng.normal(0, 18, 3)
        patch = np.where(lit[..., None], c_fg, c_bg)
        region = img[y : y + side, x : x + side]
        region[mask] = patch[mask]
    img += rng.normal(0, 14, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


@dataclass
class LabelledImages:
    pixels: np.ndarray  # [N, H, W, 3] uint8
    labels: list[list[int]]  # sorted class ids per image


@dataclass(frozen=True)
class HardSynth:
    """The generator's parameters; `pretrain` classes are labels, `transfer` classes only
    appear in `transfer_set`."""

    pretrain: int = 240
    transfer: int = 40
    zipf: float = 1.0
    second: float = 0.35
    third: float = 0.1
    size: int = 24
    seed: int = 0

    def __post_init__(self) -> None:
        if self.pretrain < 2 or self.transfer < 0 or self.size < 12 or self.zipf < 0:
            raise ValueError("hard synth needs pretrain >= 2, transfer >= 0, size >= 12, zipf >= 0")
        class_looks(self.pretrain + max(self.transfer, 0), self.seed)  # range check

    def looks(self) -> list[Look]:
        return class_looks(self.pretrain + self.transfer, self.seed)

    def ranks(self) -> np.ndarray:
        """rank[c] of pretraining class c (0 = most frequent), independent of its look."""
        return np.random.default_rng([self.seed, 2]).permutation(self.pretrain)

    def probabilities(self) -> np.ndarray:
        """P(first label = c) for training images."""
        p = (self.ranks() + 1.0) ** -self.zipf
        return p / p.sum()

    def partners(self) -> np.ndarray:
        """[pretrain, PARTNERS] co-occurrence partners of every class, drawn in proportion to
        popularity (tags co-occur mostly with popular tags), so co-occurrence keeps the tail
        a tail."""
        rng = np.random.default_rng([self.seed, 3])
        p = self.probabilities()
        out = np.empty((self.pretrain, PARTNERS), np.int64)
        for c in range(self.pretrain):
            q = p.copy()
            q[c] = 0
            out[c] = rng.choice(self.pretrain, PARTNERS, replace=False, p=q / q.sum())
        return out

    def draw(
        self, n: int, stream: int, balanced: bool = False, uniform: bool = False
    ) -> LabelledImages:
        """`n` multi-label images; `stream` separates train / val / test draws. `balanced`:
        the first label is uniform over classes; `uniform`: every label is (no popularity at
        all, for the difficulty check)."""
        rng = np.random.default_rng([self.seed, 10 + stream])
        looks, p, partners = self.looks(), self.probabilities(), self.partners()
        pixels = np.empty((n, self.size, self.size, 3), np.uint8)
        labels = []
        for i in range(n):
            first = (
                int(rng.integers(self.pretrain))
                if balanced or uniform
                else int(rng.choice(len(p), p=p))
            )
            mine = [first]
            for extra in (self.second, self.third):
                if rng.random() >= extra:
                    break
                for _ in range(8):
                    if uniform:
                        c = int(rng.integers(self.pretrain))
                    elif rng.random() < 0.6:
                        c = int(partners[first][rng.integers(PARTNERS)])
                    else:
                        c = int(rng.choice(len(p), p=p))
                    if c not in mine:
                        mine.append(c)
                        break
            pixels[i] = render(looks, mine, rng, self.size)
            labels.append(sorted(mine))
        return LabelledImages(pixels, labels)

    def transfer_set(self, per_class: int, stream: int) -> tuple[np.ndarray, np.ndarray]:
        """(pixels [N, H, W, 3], class index 0..transfer-1) with `per_class` images each."""
        rng = np.random.default_rng([self.seed, 100 + stream])
        looks = self.looks()
        ys = np.repeat(np.arange(self.transfer), per_class)
        pixels = np.stack([render(looks, [self.pretrain + int(y)], rng, self.size) for y in ys])
        return pixels, ys
