"""Exact, order-free sums of float64 values that tasks fold (pure functions).

A float sum depends on the order of its terms. A total that tasks fold file by file must equal
the one computed over every row in one process (tests/test_plan_rounds.py holds the rounds to
`plan_labels` bit for bit), so partial sums travel as exact integers: every finite float64 is
`mantissa * 2**exponent` with a 53-bit integer mantissa, and integers add exactly in any order.
A part is {exponent: sum of mantissas}; parts merge by adding, and the total is rounded to a
float once, at the end.
"""

from __future__ import annotations

import math

import numpy as np

_HALF = 26  # mantissas are split into 27-bit halves, so int64 sums of 2**36 terms cannot overflow


def exact_parts(values: np.ndarray) -> dict[int, int]:
    """{exponent: integer mantissa sum} whose exact total is the exact sum of `values`
    (finite, >= 0)."""
    values = np.asarray(values, np.float64)
    values = values[values != 0]
    if len(values) == 0:
        return {}
    mant, exp = np.frexp(values)  # values = mant * 2**exp, 0.5 <= |mant| < 1
    ints = np.ldexp(mant, 53).astype(np.int64)  # exact: a 53-bit integer
    exps, inverse = np.unique(exp, return_inverse=True)
    hi = np.zeros(len(exps), np.int64)
    lo = np.zeros(len(exps), np.int64)
    np.add.at(hi, inverse, ints >> _HALF)
    np.add.at(lo, inverse, ints & ((1 << _HALF) - 1))
    return {
        int(e) - 53: (int(h) << _HALF) + int(lo_)
        for e, h, lo_ in zip(exps.tolist(), hi.tolist(), lo.tolist(), strict=True)
    }


def merge_parts(into: dict[int, int], parts: dict) -> dict[int, int]:
    """`into` plus `parts` (keys may arrive as strings from JSON); returns `into`."""
    for e, m in parts.items():
        into[int(e)] = into.get(int(e), 0) + int(m)
    return into


def parts_total(parts: dict[int, int]) -> float:
    """The exact sum of the parts, rounded once to the nearest float64."""
    if not parts:
        return 0.0
    low = min(parts)
    total = sum(m << (e - low) for e, m in parts.items())
    return math.ldexp(float(total), low)  # int -> float rounds correctly; ldexp is exact
