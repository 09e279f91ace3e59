"""Percentiles and ratios of samples, computed one way for every benchmark."""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass


def percentile(ordered: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile of already sorted samples.

    Example::

        percentile([1.0, 2.0, 3.0, 4.0], 0.5)  # 2.0
    """
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


@dataclass(frozen=True, slots=True)
class Percentiles:
    """p50, p99 and the largest of a set of samples, in the samples' unit.

    Example::

        spread = Percentiles.of(seconds)
        print(f"p50 {spread.p50 * 1e3:.2f} ms")
    """

    p50: float
    p99: float
    max: float

    @classmethod
    def of(cls, samples: Iterable[float]) -> Percentiles:
        ordered = sorted(samples)
        return cls(percentile(ordered, 0.50), percentile(ordered, 0.99), ordered[-1])


def ratios(values: Sequence[float], bases: Sequence[float]) -> list[float]:
    """``values[i] / bases[i]``, round by round (each pair ran back to back).

    Example::

        ratios([2.0, 3.0], [1.0, 2.0])  # [2.0, 1.5]
    """
    return [a / b for a, b in zip(values, bases, strict=True)]


def median_ratio(values: Sequence[float], bases: Sequence[float]) -> float:
    """Median of the per-round ratios: steadier than a ratio of medians on a busy host.

    Example::

        median_ratio([2.0, 3.0, 4.0], [1.0, 2.0, 4.0])  # 1.5
    """
    return statistics.median(ratios(values, bases))
