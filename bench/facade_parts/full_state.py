"""Figures 3-5 on a state holding every link: memory, ``get_network_data()``, Jupiter's formats."""

from __future__ import annotations

import gc
import statistics
import tracemalloc
from collections.abc import Callable, Sequence

from harness.stats import Percentiles

from facade_parts.facades import live_only
from facade_parts.repeat import repeat_timed, repeat_timed_async
from facade_parts.results import Results
from facade_parts.settings import MB, WAIT_S, Settings
from facade_parts.synthetic import Topology
from jupiter_bus.messages import LinkCost, ResourceSample, encode
from jupiter_bus.state import NetworkState
from jupiter_bus.topology import EVENTS_EXCHANGE, resource_key
from jupiter_bus.transport import connect


def measure_state_memory(rows: Sequence[list[LinkCost]], n: int, results: Results) -> None:
    """tracemalloc from an empty state to every link held (rows built beforehand)."""
    gc.collect()
    tracemalloc.start()
    try:
        base, _ = tracemalloc.get_traced_memory()
        state = NetworkState()
        for row in rows:
            state.apply_many(row)
        current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    results.add("memory.current", n, (current - base) / MB)
    results.add("memory.peak", n, (peak - base) / MB)
    results.add("memory.nbytes", n, state.nbytes / MB)
    results.add("memory.links", n, state.link_count)


def resource_sample(node: str, i: int) -> ResourceSample:
    return ResourceSample(
        node=node,
        cpu_percent=10.0 + i % 80,
        cpu_count=8,
        memory_percent=30.0 + i % 60,
        memory_total_bytes=16_000_000_000,
        memory_available_bytes=8_000_000_000,
        host=f"10.{i // 65536 % 256}.{i // 256 % 256}.{i % 256}",
        ssh_port=22,
    )


async def measure_reads_and_formats(
    settings: Settings, topology: Topology, rows: Sequence[list[LinkCost]], results: Results
) -> None:
    """A facade on the memory bus with every link and resource held; time reads and formats."""
    n, names = topology.n, topology.names
    url = topology.memory_url
    async with await connect(url) as publisher, live_only(url) as bus:
        for row in rows:  # straight into the facade's state: the fill is not what is timed
            bus.network.apply_many(row)
        for i, node in enumerate(names):
            await publisher.publish(
                EVENTS_EXCHANGE, resource_key(node), encode(resource_sample(node, i))
            )
        resources = await bus.get_resource_data(nodes=names, timeout=WAIT_S)
        await bus.get_network_data(nodes=names, timeout=WAIT_S)
        budget = settings.read_budget_s

        async def plain() -> None:
            await bus.get_network_data()

        async def every_node() -> None:
            await bus.get_network_data(nodes=names)

        for key, work in (("read.plain", plain), ("read.all", every_node)):
            spread = Percentiles.of(await repeat_timed_async(work, budget))
            results.add(f"{key}.p50", n, spread.p50 * 1e6)
            results.add(f"{key}.p99", n, spread.p99 * 1e6)
        data = await bus.get_network_data()
        ips = resources.ips()
        formats: dict[str, Callable[[], object]] = {
            "heft_rows": lambda: data.heft_rows(ips=ips),
            "tgff_quadratic": data.tgff_quadratic,
            "wave": lambda: data.wave(names[0], ips),
            "to_jupiter": resources.to_jupiter,
        }
        for key, convert in formats.items():
            gc.collect()
            samples = repeat_timed(convert, settings.format_budget_s, most=200)
            results.add(f"format.{key}", n, statistics.median(samples) * 1e3)


async def measure_full_state(
    settings: Settings, topology: Topology, rows: Sequence[list[LinkCost]], results: Results
) -> None:
    measure_state_memory(rows, topology.n, results)
    await measure_reads_and_formats(settings, topology, rows, results)
