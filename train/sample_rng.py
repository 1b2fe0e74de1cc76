"""Per-sample augmentation randomness: a counter-based generator keyed by the sample's place.

The loader draws each sample's crop and flip from a generator named by (seed, slot, epoch, t,
shard, position), so a resumed run sees the same augmentations as an uninterrupted one and the
CPU and GPU paths the same crops. A numpy Generator per sample costs ~25 us to build (seed
sequence hashing, bit-generator state), more than the rest of the loader's bookkeeping for that
sample. Here the key is folded into one 64-bit word with splitmix64's finaliser (the hash
train/epoch_plan.py already orders shards with), and draw `i` is the finaliser of
`key + i * golden` (splitmix64's own stream): a few microseconds per sample, no state but a
counter. Only the methods `transforms.crop_params` uses are provided, with numpy's meaning, so
a numpy Generator can still be passed where a caller wants one.
"""

from __future__ import annotations

from .epoch_plan import _MASK, _mix

_GOLDEN = 0x9E3779B97F4A7C15
_UNIT = 2.0**-53


def fold(*key: int, start: int = 0) -> int:
    """A 64-bit hash of `key` continuing from `start` (the fold of a prefix), so a stream can
    fold its fixed part once and each sample only its own."""
    h = start
    for part in key:
        h = _mix(h ^ (int(part) & _MASK))
    return h


class SampleRng:
    """Uniform draws for one sample: a pure function of its key and the draw's index."""

    __slots__ = ("_key", "_i")

    def __init__(self, key: int) -> None:
        self._key, self._i = key & _MASK, 0

    @classmethod
    def of(cls, *key: int) -> SampleRng:
        return cls(fold(*key))

    def random(self) -> float:
        """Uniform in [0, 1), 53 bits."""
        self._i += 1
        return (_mix((self._key + self._i * _GOLDEN) & _MASK) >> 11) * _UNIT

    def uniform(self, low: float = 0.0, high: float = 1.0) -> float:
        return low + (high - low) * self.random()

    def integers(self, low: int, high: int) -> int:
        """Uniform in [low, high) (numpy's `integers` with an exclusive bound); the bias of
        scaling 53 random bits is below 2^-40 for any image side."""
        if high <= low:
            raise ValueError(f"integers: high {high} <= low {low}")
        return low + min(int(self.random() * (high - low)), high - low - 1)
