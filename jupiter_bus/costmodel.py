"""The quadratic link-cost model: cost_ms = a*x^2 + b*x + c, x = file size in Kbit.

Units are Jupiter's (x = bytes * 8 / 1000, cost in milliseconds). What DRUPE got
wrong and this module guards against:

- a fit from fewer than three distinct sizes is refused (:func:`fit` returns None);
- the fit is done on a scaled domain (x / max_kbit), so ``a`` of order 1e-9 and ``c``
  of order 10 do not ruin the conditioning, on the median cost of each size (one
  stalled transfer does not bend the curve), and weighted by 1/cost, so every size is
  predicted with a similar *relative* error (a 1 KB and a 10 MB transfer both matter);
  ``r2`` is measured on that same relative scale;
- parameters that predict a negative or decreasing cost at any size are never
  returned (schedulers evaluate the model at any size, also beyond the largest
  probe): ``a``, ``b`` and ``c`` are all non-negative. The fit first pins a negative
  intercept at 0, then falls back to non-negative coefficients (``constrained``;
  ``linear`` when ``a`` is 0);
- failed transfers never become samples (callers add successful ones only) and old
  samples leave the window (:class:`LinkModel`).

Example::

    >>> model = LinkModel()
    >>> for kbit, ms in [(8, 41.0), (800, 43.0), (8000, 52.0), (80000, 140.0)]:
    ...     model.add(kbit, ms, ts=0.0)
    >>> fitted = model.fit()
    >>> round(fitted.cost_ms(8000))
    51
"""

from __future__ import annotations

import itertools
import math
from collections import deque
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

__all__ = [
    "Fit",
    "LinkModel",
    "Sample",
    "fit",
    "kbit",
]

Model = Literal["quadratic", "linear", "constrained"]
FloatArray = npt.NDArray[np.float64]


def kbit(size_bytes: float) -> float:
    """Jupiter's size unit: ``bytes * 8 / 1000``."""
    return size_bytes * 8.0 / 1000.0


@dataclass(frozen=True, slots=True)
class Fit:
    """Fitted parameters with their quality and the range they were fitted on."""

    a: float
    b: float
    c: float
    samples: int
    r2: float
    min_kbit: float
    max_kbit: float
    model: Model

    def cost_ms(self, size_kbit: float | FloatArray) -> float | FloatArray:
        """Predicted cost in milliseconds for ``size_kbit`` (scalar or array)."""
        return (self.a * size_kbit + self.b) * size_kbit + self.c

    def differs_from(self, other: Fit | None, *, tolerance: float = 0.05) -> bool:
        """Whether predictions over the fitted range moved by more than ``tolerance``."""
        if other is None or other.model != self.model:
            return True
        xs = np.geomspace(max(self.min_kbit, 1e-3), max(self.max_kbit, 1e-3), 5)
        mine = np.asarray(self.cost_ms(xs))
        theirs = np.asarray(other.cost_ms(xs))
        return bool(np.any(np.abs(mine - theirs) > tolerance * np.maximum(np.abs(theirs), 1e-9)))


def _weighted_lstsq(
    design: FloatArray, y: FloatArray, weights: FloatArray
) -> tuple[FloatArray, float]:
    scaled = design * weights[:, None]
    solution, *_ = np.linalg.lstsq(scaled, y * weights, rcond=None)
    coef = np.asarray(solution, dtype=np.float64)
    residual = float(np.sum(((design @ coef - y) * weights) ** 2))
    return coef, residual


def _nonnegative(design: FloatArray, y: FloatArray, weights: FloatArray) -> FloatArray:
    """Least squares with every coefficient >= 0, by trying each set of free terms."""
    best: FloatArray | None = None
    best_residual = math.inf
    columns = range(design.shape[1])
    for size in range(1, design.shape[1] + 1):
        for free in itertools.combinations(columns, size):
            coef_free, residual = _weighted_lstsq(design[:, free], y, weights)
            if np.any(coef_free < 0) or residual >= best_residual:
                continue
            coef = np.zeros(design.shape[1])
            coef[list(free)] = coef_free
            best, best_residual = coef, residual
    return best if best is not None else np.zeros(design.shape[1])


def _valid(a: float, b: float, c: float) -> bool:
    """Non-negative and non-decreasing at every size >= 0, i.e. ``a, b, c >= 0``.

    A negative ``a`` may fit the probed range well, but its curve turns down beyond
    its vertex: a file four times the largest probe came out at a third of its real
    cost in the demo, and a large enough one would cost less than nothing.
    """
    return a >= 0 and b >= 0 and c >= 0 and all(map(math.isfinite, (a, b, c)))


def fit(size_kbit: npt.ArrayLike, cost_ms: npt.ArrayLike) -> Fit | None:
    """Fit the quadratic model; None when the samples hold fewer than 3 distinct sizes.

    Example::

        >>> fit([8, 8000, 80000], [40.0, 50.0, 160.0]).model
        'quadratic'
        >>> fit([8, 8, 8000], [40.0, 41.0, 50.0]) is None
        True
    """
    x = np.asarray(size_kbit, dtype=np.float64)
    y = np.asarray(cost_ms, dtype=np.float64)
    keep = np.isfinite(x) & np.isfinite(y) & (x >= 0) & (y >= 0)
    x, y = x[keep], y[keep]
    if np.unique(x).size < 3:
        return None
    samples = int(x.size)
    # One point per size, its median: a single stalled transfer must not bend the curve.
    x, inverse = np.unique(x, return_inverse=True)
    y = np.array([float(np.median(y[inverse == i])) for i in range(x.size)])
    lo, hi = float(x.min()), float(x.max())
    scale = hi if hi > 0 else 1.0
    xs = x / scale
    design = np.column_stack([xs * xs, xs, np.ones_like(xs)])
    weights = 1.0 / np.maximum(y, max(float(np.median(y)) * 1e-3, 1e-6))
    (qa, qb, qc), _ = _weighted_lstsq(design, y, weights)
    a, b, c = qa / scale**2, qb / scale, qc
    model: Model = "quadratic"
    # Valid at every size, not just over the probed range: schedulers evaluate the
    # model at any size, and neither a 1 KB nor a 1 GB file may come out wrong-way.
    if not _valid(a, b, c) and c < 0:
        # Most often only the intercept came out negative: pin it at zero first.
        (qa, qb), _ = _weighted_lstsq(design[:, :2], y, weights)
        a, b, c = qa / scale**2, qb / scale, 0.0
        model = "constrained"
    if not _valid(a, b, c):
        qa, qb, qc = _nonnegative(design, y, weights)
        a, b, c = qa / scale**2, qb / scale, qc
        model = "linear" if a == 0.0 else "constrained"
    # R^2 on the scale the fit minimises (relative errors), over the per-size medians
    prediction = (a * x + b) * x + c
    mean = float(np.sum(weights**2 * y) / np.sum(weights**2))
    total = float(np.sum((weights * (y - mean)) ** 2))
    r2 = 1.0 - float(np.sum((weights * (y - prediction)) ** 2)) / total if total > 0 else 1.0
    return Fit(
        a=float(a),
        b=float(b),
        c=float(c),
        samples=samples,
        r2=r2,
        min_kbit=lo,
        max_kbit=hi,
        model=model,
    )


@dataclass(frozen=True, slots=True)
class Sample:
    """One successful transfer: its size, what it cost, when, and how it was obtained."""

    size_kbit: float
    cost_ms: float
    ts: float
    passive: bool = False


class LinkModel:
    """A bounded window of recent samples of one link, and its current fit.

    Example::

        model = LinkModel(window=64, max_age_seconds=3600)
        model.add(kbit(4096), 12.5, ts=time.time())
    """

    def __init__(self, *, window: int = 64, max_age_seconds: float | None = None) -> None:
        self.samples: deque[Sample] = deque(maxlen=window)
        self.max_age_seconds = max_age_seconds
        self._fit: Fit | None = None
        self._dirty = False

    def add(self, size_kbit: float, cost_ms: float, *, ts: float, passive: bool = False) -> None:
        """Add one successful transfer's cost (never a failed one)."""
        if not (math.isfinite(size_kbit) and math.isfinite(cost_ms)) or cost_ms < 0:
            return
        self.samples.append(Sample(size_kbit, cost_ms, ts, passive))
        self._dirty = True

    def expire(self, now: float) -> None:
        """Drop samples older than ``max_age_seconds``."""
        if self.max_age_seconds is None:
            return
        while self.samples and now - self.samples[0].ts > self.max_age_seconds:
            self.samples.popleft()
            self._dirty = True

    def newest_ts(self) -> float | None:
        """When the newest sample was taken (None when empty)."""
        return self.samples[-1].ts if self.samples else None

    def sizes_seen_since(self, since: float) -> set[float]:
        """Distinct sizes (Kbit) sampled at or after ``since``."""
        return {s.size_kbit for s in self.samples if s.ts >= since}

    def fit(self) -> Fit | None:
        """The fit of the current window (cached until the window changes)."""
        if self._dirty:
            self._fit = fit([s.size_kbit for s in self.samples], [s.cost_ms for s in self.samples])
            self._dirty = False
        return self._fit
