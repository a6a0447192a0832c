"""Paired comparison of two predictions of the same cases: is the second one better, beyond the noise?

On a handful of validation cases a difference of a few hundredths in mean Dice is often one case; a
Student t interval of the mean paired difference, and how many cases each side wins, say how much a
mean difference can be trusted. A bootstrap of the cases is not used: on the four to ten cases of a
validation split it only sees their spread and gives intervals far too narrow.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats

CONFIDENCE = 0.95
LOWER_IS_BETTER = {"hd95"}  # distances; every other metric is better higher


@dataclass(frozen=True)
class PairedDifference:
    """second - first over the cases both scored (cases where either value is NaN are left out)."""

    cases: int
    first_mean: float
    second_mean: float
    mean_difference: float
    ci_low: float  # t interval of the mean difference over the cases; NaN for one case
    ci_high: float
    second_better: int  # cases where the second prediction scores better
    first_better: int

    def to_dict(self) -> dict:
        return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in asdict(self).items()}


def paired_difference(first: list[float], second: list[float], metric: str) -> PairedDifference:
    """The paired difference of one metric between two predictions of the same cases, in case order.

    Raises ValueError when the lists differ in length.
    """
    if len(first) != len(second):
        raise ValueError(f"paired values need the same cases: got {len(first)} and {len(second)}")
    a, b = np.asarray(first, float), np.asarray(second, float)
    keep = ~(np.isnan(a) | np.isnan(b))
    a, b = a[keep], b[keep]
    if a.size == 0:
        nan = float("nan")
        return PairedDifference(0, nan, nan, nan, nan, nan, 0, 0)
    diff = b - a
    mean = float(diff.mean())
    half = float("nan")
    if diff.size > 1:
        half = float(stats.t.ppf(0.5 + CONFIDENCE / 2, diff.size - 1) * diff.std(ddof=1) / math.sqrt(diff.size))
    better = -diff if metric in LOWER_IS_BETTER else diff
    return PairedDifference(
        int(diff.size), float(a.mean()), float(b.mean()), mean, mean - half, mean + half,
        int((better > 0).sum()), int((better < 0).sum()),
    )
