"""The loader's per-sample augmentation generator (train/sample_rng.py): a pure function of its
key, uniform, and with numpy's meaning for the draws the crop uses."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import kstest

from train.sample_rng import SampleRng, fold


def _draws(rng: SampleRng, n: int = 8) -> list[float]:
    return [rng.random() for _ in range(n)]


def test_draws_are_a_pure_function_of_the_key():
    assert _draws(SampleRng.of(0, 4, 2, 7, 11)) == _draws(SampleRng.of(0, 4, 2, 7, 11))
    assert _draws(SampleRng.of(0, 4, 2, 7, 11)) != _draws(SampleRng.of(0, 4, 2, 7, 12))
    assert _draws(SampleRng.of(1, 4, 2, 7, 11)) != _draws(SampleRng.of(0, 4, 2, 7, 11))
    # Order matters, and a prefix folded once is the same as folding the whole key.
    assert fold(1, 2) != fold(2, 1)
    assert fold(5, 6, 7, start=fold(1, 2)) == fold(1, 2, 5, 6, 7)


def test_first_draws_of_consecutive_keys_are_uniform_and_independent():
    """What the loader does: a fresh generator per sample, keyed by its place in the stream."""
    firsts = np.array([SampleRng.of(0, 4, 0, 0, t, 3, 9).random() for t in range(20000)])
    seconds = np.array([SampleRng.of(0, 4, 0, 0, t, 3, 9).uniform(2, 5) for t in range(20000)])
    assert firsts.min() >= 0 and firsts.max() < 1
    assert kstest(firsts, "uniform").pvalue > 1e-3
    assert kstest((seconds - 2) / 3, "uniform").pvalue > 1e-3
    assert abs(np.corrcoef(firsts[:-1], firsts[1:])[0, 1]) < 0.03
    # The test can fail: a generator stuck on its key's low bits is told apart.
    assert kstest((np.arange(20000) % 97) / 97 * 0.5, "uniform").pvalue < 1e-3


def test_integers_cover_their_range_exclusive_of_high():
    rng = SampleRng.of(3)
    got = [rng.integers(0, 7) for _ in range(5000)]
    assert set(got) == set(range(7))
    assert all(SampleRng.of(i).integers(4, 5) == 4 for i in range(50))
    with pytest.raises(ValueError):
        rng.integers(3, 3)
