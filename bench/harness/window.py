"""Timed work with a fixed number of calls in flight."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Timed:
    """One sample: wall-clock seconds, and the CPU seconds counted meanwhile.

    Example::

        timed = await in_window(1_000, 100, publish)
        print(f"{1_000 / timed.wall_s:,.0f} msg/s")
    """

    wall_s: float
    cpu_s: float


async def in_window(count: int, window: int, work: Callable[[], Awaitable[None]]) -> Timed:
    """Run ``work`` ``count`` times with ``window`` calls in flight; this process's CPU.

    The first call that fails cancels the others and is raised as it was.

    Example::

        pending = iter(bodies)
        await in_window(len(bodies), 500, lambda: publish(next(pending)))
    """
    remaining = count

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            await work()

    wall, cpu = time.perf_counter(), time.process_time()
    try:
        async with asyncio.TaskGroup() as tasks:
            for _ in range(min(window, count)):
                tasks.create_task(worker())
    except ExceptionGroup as failed:
        raise failed.exceptions[0] from None
    return Timed(time.perf_counter() - wall, time.process_time() - cpu)
