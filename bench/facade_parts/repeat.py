"""Repeating one call for a time budget, to time what is too quick to time once."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any


def enough(samples: Sequence[float], budget_s: float, most: int) -> bool:
    """Stop repeating: the budget is spent (after 3 calls, or 1 that alone exceeded it)."""
    if len(samples) >= most:
        return True
    return sum(samples) >= budget_s and (len(samples) >= 3 or samples[0] >= budget_s)


def repeat_timed(work: Callable[[], object], budget_s: float, most: int = 10_000) -> list[float]:
    """Seconds per call of ``work``, repeated for about ``budget_s``."""
    samples: list[float] = []
    while not samples or not enough(samples, budget_s, most):
        started = time.perf_counter()
        work()
        samples.append(time.perf_counter() - started)
    return samples


async def repeat_timed_async(
    work: Callable[[], Any], budget_s: float, most: int = 20_000
) -> list[float]:
    """As :func:`repeat_timed`, for a coroutine function."""
    samples: list[float] = []
    while not samples or not enough(samples, budget_s, most):
        started = time.perf_counter()
        await work()
        samples.append(time.perf_counter() - started)
    return samples
