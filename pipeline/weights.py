"""Per-image sampling weights from per-synset image counts (pure functions).

`f(s)` is the number of images carrying synset `s`. Schemes:
- `natural`: w = 1; every image equally likely, so synsets appear in proportion to f(s).
- `sqrt` (Mahajan et al. 2018): w = reduce over tags of f(s)^-1/2, so a synset's share of
  samples grows like sqrt(f(s)) instead of f(s).
- `inv-sqrt` (SWAG, the default): the same f(s)^-1/2 law, times `rare_upsample` when the image
  carries a tag with f(s) < `rare_threshold`, so images with a rare tag are seen more.
Neither paper says how to combine several tags; `reduce` picks `max` (default: the image counts
as its rarest tag) or `mean`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

SCHEMES = ("inv-sqrt", "sqrt", "natural")
REDUCERS = ("max", "mean")


@dataclass(frozen=True)
class WeightConfig:
    scheme: str = "inv-sqrt"
    reduce: str = "max"
    rare_threshold: int = 10
    rare_upsample: float = 100.0

    def __post_init__(self) -> None:
        if self.scheme not in SCHEMES:
            raise ValueError(f"--weighting {self.scheme!r}: use one of {', '.join(SCHEMES)}")
        if self.reduce not in REDUCERS:
            raise ValueError(f"--weight-reduce {self.reduce!r}: use max or mean")
        if self.rare_threshold < 0 or self.rare_upsample < 1:
            raise ValueError("--rare-threshold must be >= 0 and --rare-upsample >= 1")

    def as_dict(self) -> dict:
        return asdict(self)


def synset_weight_array(counts: np.ndarray, config: WeightConfig) -> np.ndarray:
    """The weight each synset contributes to an image that carries it, for synset codes
    0..V-1 with image counts `counts` (0 where unused)."""
    counts = np.asarray(counts, dtype=np.float64)
    if config.scheme == "natural":
        return (counts > 0).astype(np.float64)
    out = np.zeros_like(counts)
    used = counts > 0
    out[used] = 1.0 / np.sqrt(counts[used])
    return out
