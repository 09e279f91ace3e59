"""Quadratic cost models, ours (the profiler's fits) and DRUPE's (``np.polyfit``), side by side."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from jupiter_bus.messages import LinkCost
from profiler_parts.settings import DRUPE_KB, OUR_KB


@dataclass(frozen=True, slots=True)
class Model:
    """A quadratic cost model, cost_ms = a*x^2 + b*x + c, x = size in the model's Kbit."""

    label: str
    kind: str
    a: float
    b: float
    c: float
    samples: int
    lo_kbit: float
    hi_kbit: float
    bytes_per_kb: int
    """How the model's x is made from bytes: x = bytes / bytes_per_kb * 8."""

    def x(self, size_bytes: float) -> float:
        return size_bytes / self.bytes_per_kb * 8.0

    def cost_ms(self, size_bytes: float) -> float:
        x = self.x(size_bytes)
        return (self.a * x + self.b) * x + self.c

    def covers(self, size_bytes: float) -> bool:
        return self.lo_kbit * (1 - 1e-9) <= self.x(size_bytes) <= self.hi_kbit * (1 + 1e-9)

    def _grid(self) -> np.ndarray[Any, np.dtype[np.float64]]:
        xs = np.linspace(self.lo_kbit, self.hi_kbit, 2001)
        return np.asarray((self.a * xs + self.b) * xs + self.c, dtype=np.float64)

    def negative_in_range(self) -> bool:
        return bool(np.any(self._grid() < 0))

    def decreasing_in_range(self) -> bool:
        # the slope 2ax + b is linear in x: its ends tell
        return min(2 * self.a * self.lo_kbit + self.b, 2 * self.a * self.hi_kbit + self.b) < 0


def ours_model(label: str, cost: LinkCost) -> Model:
    return Model(
        label,
        cost.model or "unknown",
        cost.a,
        cost.b,
        cost.c,
        cost.samples,
        cost.min_kbit,
        cost.max_kbit,
        OUR_KB,
    )


def drupe_model(label: str, sizes_kb: Sequence[int], times_ms: Sequence[float]) -> Model:
    """DRUPE's regression as it was: ``np.polyfit(KB * 8, seconds * 1000, 2)``."""
    x = np.asarray(sizes_kb, dtype=np.float64) * 8.0
    y = np.asarray(times_ms, dtype=np.float64)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        a, b, c = (float(v) for v in np.polyfit(x, y, 2))
    kind = "np.polyfit" + (" (rank warning)" if caught else "")
    return Model(label, kind, a, b, c, len(y), float(x.min()), float(x.max()), DRUPE_KB)
