"""Figure 1: ingest into ``NetworkState`` in process, and through a facade on ``memory://``."""

from __future__ import annotations

import gc
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import Final

from facade_parts.facades import live_only, until_version
from facade_parts.results import Results
from facade_parts.settings import WAIT_S, Settings
from facade_parts.synthetic import Topology, keyed_bodies
from jupiter_bus.messages import LinkCost, decode
from jupiter_bus.state import NetworkState
from jupiter_bus.topology import EVENTS_EXCHANGE
from jupiter_bus.transport import connect

MEMORY_CHUNK: Final = 10_000  # published before draining: far below the 100k backlog bound


def inproc_round(chunks: Iterable[tuple[list[bytes], list[LinkCost]]], n: int) -> dict[str, float]:
    """One round on fresh states: seconds for apply, apply_many (per source row), decode->apply."""
    plain, many, full = NetworkState(), NetworkState(), NetworkState()
    took = {"apply": 0.0, "many": 0.0, "full": 0.0}
    row = max(1, n - 1)
    for bodies, costs in chunks:
        gc.collect()
        started = time.perf_counter()
        apply = plain.apply
        for cost in costs:
            apply(cost)
        took["apply"] += time.perf_counter() - started

        started = time.perf_counter()
        apply_many = many.apply_many
        for i in range(0, len(costs), row):
            apply_many(costs[i : i + row])
        took["many"] += time.perf_counter() - started

        started = time.perf_counter()
        apply = full.apply
        for body in bodies:
            message = decode(body)
            if isinstance(message, LinkCost):  # as the facade's pump does
                apply(message)
        took["full"] += time.perf_counter() - started
    return took


def inproc_chunks(topology: Topology, count: int) -> Iterator[tuple[list[bytes], list[LinkCost]]]:
    """Bodies and their decoded objects, 100k at a time (untimed)."""
    for start in range(0, count, 100_000):
        bodies = [body for _, body in keyed_bodies(topology, start, min(100_000, count - start))]
        yield bodies, [decode(body, LinkCost) for body in bodies]


def measure_inproc(settings: Settings, topology: Topology, results: Results) -> None:
    n, count = topology.n, settings.inproc_count(topology.links)
    cached = list(inproc_chunks(topology, count)) if count <= 250_000 else None
    for _ in range(settings.rounds):
        chunks = cached if cached is not None else inproc_chunks(topology, count)
        took = inproc_round(chunks, n)
        for name, seconds in took.items():
            results.add(f"inproc.{name}", n, count / seconds)


async def memory_bus_round(url: str, updates: Sequence[tuple[str, bytes]]) -> float:
    """Seconds from the first publish to the last update applied in a fresh facade."""
    async with await connect(url) as publisher, live_only(url) as bus:
        state = bus.network
        first = state.version
        gc.collect()
        started = time.perf_counter()
        for start in range(0, len(updates), MEMORY_CHUNK):
            part = updates[start : start + MEMORY_CHUNK]
            for key, body in part:
                await publisher.publish(EVENTS_EXCHANGE, key, body)
            await until_version(state, first + start + len(part), WAIT_S)
        return time.perf_counter() - started


async def measure_memory_bus(settings: Settings, topology: Topology, results: Results) -> None:
    n, count = topology.n, settings.memory_bus_count(topology.links)
    url = topology.memory_url
    updates = keyed_bodies(topology, 0, count)
    for _ in range(settings.rounds):
        results.add("mem.facade", n, count / await memory_bus_round(url, updates))
