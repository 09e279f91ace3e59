"""Part 3: the latency of one small ``data_transfer`` request, and the floors under it."""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from harness.stats import Percentiles
from harness.tables import Indented, print_table
from jupiter_providers.copy_engines import SftpEngine

from jupiter_bus.facade import JupiterInterface
from jupiter_bus.topology import TRANSFERS_EXCHANGE
from jupiter_bus.transport import Transport, connect
from jupiter_bus.transport.memory import drop_memory_broker
from transfer_parts.cases import fmt
from transfer_parts.settings import REQUEST_TIMEOUT_S, Settings
from transfer_parts.sshd_site import Pools, Site
from transfer_parts.worker import request_body, running_worker, send, worker_options

LATENCY_WARMUP: Final = 10


@dataclass(frozen=True, slots=True)
class Latency:
    """One path's sequential request times, in ms, and their percentiles."""

    label: str
    ms: tuple[float, ...]
    spread: Percentiles

    @classmethod
    def of(cls, label: str, ms: Sequence[float]) -> Latency:
        return cls(label, tuple(ms), Percentiles.of(ms))

    @property
    def p50(self) -> float:
        return self.spread.p50


async def time_sequential(label: str, count: int, one: Callable[[int], Awaitable[None]]) -> Latency:
    for i in range(LATENCY_WARMUP):
        await one(-1 - i)
    ms = []
    for i in range(count):
        start = time.perf_counter()
        await one(i)
        ms.append((time.perf_counter() - start) * 1000)
    return Latency.of(label, ms)


@contextlib.asynccontextmanager
async def echo_responder(transport: Transport, node: str) -> AsyncIterator[None]:
    """Answers every request on ``node``'s work queue at once: the bus's own round trip."""
    queue = await transport.declare_work_queue(node)

    async def serve() -> None:
        async with transport.consume(queue, prefetch=16) as deliveries:
            async for delivery in deliveries:
                envelope = delivery.envelope
                await transport.reply(envelope, b"{}", correlation_id=envelope.correlation_id)
                await delivery.ack()

    task = asyncio.create_task(serve(), name=f"bench echo {node}")
    try:
        yield
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await transport.delete_queue(queue)


def latency_sender(
    site: Site, transport: Transport, node: str, folder: Path
) -> Callable[[int], Awaitable[None]]:
    source = site.small[0]

    async def one(i: int) -> None:
        await send(transport, node, request_body(site, source, folder / f"lat{i}.bin"))

    return one


async def worker_latency(
    site: Site, settings: Settings, url: str, label: str, node: str, *, facade: bool = False
) -> Latency:
    """Sequential requests from one transport to a worker on another, both on ``url``;
    with ``facade``, each is ``JupiterInterface.data_transfer`` (its result checked)."""
    folder = site.remote_dir(f"latency-{node}")
    requester = await connect(url, connection_name="bench requester")
    worker_side = await connect(url, connection_name="bench worker")
    try:
        options = worker_options(site, site.local / f"state-{node}", 4)
        async with running_worker(worker_side, node, options):
            if not facade:
                return await time_sequential(
                    label, settings.latency_count, latency_sender(site, requester, node, folder)
                )
            async with JupiterInterface(requester, node=node) as jupiter:
                s, source = site.server, str(site.small[0])

                async def one(i: int) -> None:
                    await jupiter.data_transfer(
                        s.host,
                        s.user,
                        None,
                        source,
                        str(folder / f"lat{i}.bin"),
                        port=s.port,
                        timeout=REQUEST_TIMEOUT_S,
                    )

                return await time_sequential(label, settings.latency_count, one)
    finally:
        await requester.close()
        await worker_side.close()


async def echo_latency(settings: Settings, node: str) -> Latency:
    requester = await connect(settings.url, connection_name="bench requester")
    responder = await connect(settings.url, connection_name="bench echo")
    try:
        async with echo_responder(responder, node):

            async def one(_: int) -> None:
                await requester.request(TRANSFERS_EXCHANGE, node, b"{}", timeout=REQUEST_TIMEOUT_S)

            label = "RabbitMQ request/reply, no-op responder"
            return await time_sequential(label, settings.latency_count, one)
    finally:
        await requester.close()
        await responder.close()


async def engine_latency(site: Site, pools: Pools, settings: Settings) -> Latency:
    engine = SftpEngine(pools.new())
    folder = site.remote_dir("latency-engine")

    async def one(i: int) -> None:
        await engine.copy(site.job(site.small[0], folder / f"lat{i}.bin"))

    return await time_sequential("SftpEngine.copy alone, warm pool", settings.latency_count, one)


async def part_latency(site: Site, pools: Pools, settings: Settings) -> Latency:
    n = settings.latency_count
    print(f"\n[3] one {settings.small_bytes // 1024} KB data_transfer, {n} sequential ...")
    memory_url = f"memory://bench-latency-{site.run_id}"
    rows = [await engine_latency(site, pools, settings)]
    try:
        node = f"bench-{site.run_id}-latmem"
        rows.append(await worker_latency(site, settings, memory_url, "worker, memory bus", node))
    finally:
        drop_memory_broker(memory_url)
    rows.append(await echo_latency(settings, f"bench-{site.run_id}-echo"))
    node = f"bench-{site.run_id}-lat"
    aim = "worker via RabbitMQ (the aim)"
    rows.append(await worker_latency(site, settings, settings.url, aim, node))
    label = "JupiterInterface.data_transfer via RabbitMQ"
    rows.append(await worker_latency(site, settings, settings.url, label, node, facade=True))
    lines = [
        [
            r.label,
            f"{r.p50:.2f}",
            f"{r.spread.p99:.2f}",
            f"{statistics.fmean(r.ms):.2f}",
            fmt(1000 / r.p50),
        ]
        for r in rows
    ]
    print_table(
        ["path", "p50 ms", "p99 ms", "mean ms", "req/s at p50"],
        lines,
        Indented(),
        title=f"request latency, {n} sequential after {LATENCY_WARMUP} warm-up (ms)",
    )
    return next(r for r in rows if r.label == aim)
