"""The loops that time every contender alike, and one round of every figure."""

from __future__ import annotations

import gc
import time
from collections.abc import Awaitable, Callable, Sequence
from functools import partial

from harness.stats import Percentiles
from harness.window import Timed, in_window

from bus_parts.admin import Admin
from bus_parts.contenders import Contender
from bus_parts.settings import WINDOW, Settings


async def publish_figures(contender: Contender, count: int, window: int) -> dict[str, float]:
    """Messages/s and CPU microseconds per message."""
    timed = await in_window(count, window, contender.publish)
    return {"": count / timed.wall_s, "cpu": timed.cpu_s / count * 1e6}


async def consume_figures(contender: Contender, count: int) -> dict[str, float]:
    """Messages/s and CPU microseconds per message."""
    cpu = time.process_time()
    wall_s = await contender.consume(count)
    return {"": count / wall_s, "cpu": (time.process_time() - cpu) / count * 1e6}


async def request_figures(contender: Contender, count: int, window: int) -> dict[str, float]:
    """p50 and p99 round trip in ms, requests/s, CPU microseconds per request."""
    samples: list[float] = []

    async def one() -> None:
        started = time.perf_counter()
        await contender.request()
        samples.append(time.perf_counter() - started)

    timed: Timed = await in_window(count, window, one)
    spread = Percentiles.of(samples)
    return {
        "p50": spread.p50 * 1e3,
        "p99": spread.p99 * 1e3,
        "rate": count / timed.wall_s,
        "cpu": timed.cpu_s / count * 1e6,
    }


Results = dict[str, dict[str, list[float]]]


async def take_turns(
    contenders: Sequence[Contender],
    results: Results,
    prefix: str,
    measure: Callable[[Contender], Awaitable[dict[str, float]]],
    *,
    before: Callable[[Contender], Awaitable[None]] | None = None,
    after: Callable[[Contender], Awaitable[None]] | None = None,
) -> None:
    """One figure for every contender in turn: ``before`` and ``after`` it are untimed."""
    for contender in contenders:
        if before is not None:
            await before(contender)
        gc.collect()
        for name, value in (await measure(contender)).items():
            row = f"{prefix}.{name}" if name else prefix
            results.setdefault(row, {}).setdefault(contender.key, []).append(value)
        if after is not None:
            await after(contender)


async def one_round(
    contenders: Sequence[Contender], admin: Admin, settings: Settings, results: Results
) -> None:
    """Every figure once for every contender, contenders taking turns figure by figure."""
    s = settings

    async def purge(contender: Contender) -> None:
        await admin.purge(contender.names.events)

    async def fill(contender: Contender) -> None:
        await admin.fill(contender.names.work, s.consume_count, s.sample_timeout_s)

    turns = partial(take_turns, contenders, results)
    await turns("pub1", lambda c: publish_figures(c, s.publish_one_count, 1), after=purge)
    await turns("pub100", lambda c: publish_figures(c, s.publish_window_count, WINDOW), after=purge)
    await turns("consume", lambda c: consume_figures(c, s.consume_count), before=fill)
    await turns("rr1", lambda c: request_figures(c, s.request_one_count, 1))
    await turns("rr100", lambda c: request_figures(c, s.request_window_count, WINDOW))


async def warm_up(contenders: Sequence[Contender], admin: Admin) -> None:
    """Open the lazily created channels and fill caches before anything is timed."""
    for contender in contenders:
        await publish_figures(contender, 200, WINDOW)
        await admin.purge(contender.names.events)
        await admin.fill(contender.names.work, 200, 60.0)
        await contender.consume(200)
        await request_figures(contender, 50, 1)
        await request_figures(contender, 200, WINDOW)
