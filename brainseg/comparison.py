"""Paired comparison of two predictions of the same cases: is the second one better, beyond the noise?

On a handful of validation cases a difference of a few hundredths in mean Dice is often one case; a
bootstrap interval over the cases, and how many cases each side wins, say how much a mean difference
can be trusted.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

BOOTSTRAP_SAMPLES = 10_000
CONFIDENCE = 0.95
LOWER_IS_BETTER = {"hd95"}  # distances; every other metric is better higher


@dataclass(frozen=True)
class PairedDifference:
    """second - first over the cases both scored (cases where either value is NaN are left out)."""

    cases: int
    first_mean: float
    second_mean: float
    mean_difference: float
    ci_low: float  # bootstrap interval of the mean difference, resampling cases
    ci_high: float
    second_better: int  # cases where the second prediction scores better
    first_better: int

    def to_dict(self) -> dict:
        return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in asdict(self).items()}


def paired_difference(first: list[float], second: list[float], metric: str, seed: int = 0) -> PairedDifference:
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
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, diff.size, (BOOTSTRAP_SAMPLES, diff.size))].mean(axis=1)
    tail = (1 - CONFIDENCE) / 2
    better = -diff if metric in LOWER_IS_BETTER else diff
    return PairedDifference(
        int(diff.size), float(a.mean()), float(b.mean()), float(diff.mean()),
        float(np.quantile(means, tail)), float(np.quantile(means, 1 - tail)),
        int((better > 0).sum()), int((better < 0).sum()),
    )
