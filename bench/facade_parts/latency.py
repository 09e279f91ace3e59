"""Figure 6: update-to-facade latency on RabbitMQ, next to raw aio-pika."""

from __future__ import annotations

import abc
import asyncio
import time
from typing import ClassVar, Final

import aio_pika
import orjson
from aio_pika.abc import AbstractIncomingMessage, AbstractRobustConnection
from harness.rounds import rotated
from harness.stats import Percentiles

from facade_parts import raw
from facade_parts.facades import live_only
from facade_parts.results import Results
from facade_parts.settings import JSON, Settings
from facade_parts.synthetic import Topology, link_body
from jupiter_bus.topology import EVENTS_EXCHANGE, network_key
from jupiter_bus.transport import connect

LATENCY_WARMUP: Final = 20


class Probe(abc.ABC):
    """Publishes one link update and reports when its consumer saw it."""

    label: ClassVar[str]
    key: ClassVar[str]

    def __init__(self, url: str, src: str, dst: str) -> None:
        self.url = url
        self.src, self.dst = src, dst
        self.routing_key = network_key(src, dst)
        self._arrival: asyncio.Future[float] | None = None
        self._expected = ""
        self._expected_body = b""

    def _arrived(self, update_id: str) -> None:
        waiter = self._arrival
        if update_id == self._expected and waiter is not None and not waiter.done():
            waiter.set_result(time.perf_counter())

    async def one(self, body: bytes) -> float:
        """Seconds from the start of the publish to the consumer holding this update."""
        self._expected, self._expected_body = orjson.loads(body)["id"], body
        self._arrival = asyncio.get_running_loop().create_future()
        started = time.perf_counter()
        await self._publish(body)
        async with asyncio.timeout(30):
            return await self._arrival - started

    @abc.abstractmethod
    async def open(self) -> None: ...

    @abc.abstractmethod
    async def _publish(self, body: bytes) -> None: ...

    @abc.abstractmethod
    async def close(self) -> None: ...


class FacadeProbe(Probe):
    """Transport publish (confirmed) -> ``JupiterInterface.watch_network`` yields it."""

    label = "jupiter-bus facade"
    key = "facade"

    async def open(self) -> None:
        self._publisher = await connect(self.url, connection_name="bench/facade.py probe")
        self._bus = live_only(self.url, connection_name="bench/facade.py probe facade")
        await self._bus.__aenter__()
        self._watch = self._bus.watch_network(src=self.src, dst=self.dst)
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for cost in self._watch:
            self._arrived(cost.id)

    async def _publish(self, body: bytes) -> None:
        await self._publisher.publish(EVENTS_EXCHANGE, self.routing_key, body)

    async def close(self) -> None:
        self._watch.close()
        self._reader.cancel()
        await asyncio.gather(self._reader, return_exceptions=True)
        await self._bus.close()
        await self._publisher.close()


class RawProbe(Probe):
    """Raw aio-pika: confirmed publish -> a consume callback on another connection."""

    label = "raw aio-pika"
    key = "raw"

    async def open(self) -> None:
        self._connections: list[AbstractRobustConnection] = []
        for role in ("publisher", "consumer"):
            self._connections.append(await raw.connection(self.url, f"raw {role}"))
        channel = await self._connections[0].channel(publisher_confirms=True)
        self._exchange = await channel.get_exchange(EVENTS_EXCHANGE, ensure=False)
        await raw.private_queue(self._connections[1], self._on_message, bind=self.routing_key)

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        if message.body == self._expected_body:  # as cheap as a raw consumer gets
            self._arrived(self._expected)
        await message.ack()

    async def _publish(self, body: bytes) -> None:
        await self._exchange.publish(
            aio_pika.Message(body, content_type=JSON), self.routing_key, mandatory=False
        )

    async def close(self) -> None:
        for connection in reversed(self._connections):
            await connection.close()


async def measure_latency(settings: Settings, run_id: str, results: Results) -> None:
    """Interleaved samples, one publish at a time, after a warm-up of each probe."""
    topology = Topology(run_id, 2, label="p")
    one, two = topology.names  # a link of its own for each probe
    probes: list[Probe] = [FacadeProbe(settings.url, one, two), RawProbe(settings.url, two, one)]
    total = settings.latency_samples + LATENCY_WARMUP
    ts = time.time()
    bodies = {
        probe.key: [
            link_body(run_id, k, probe.src, probe.dst, ts)
            for k in range(p * total, (p + 1) * total)
        ]
        for p, probe in enumerate(probes)
    }
    opened: list[Probe] = []
    try:
        for probe in probes:
            await probe.open()
            opened.append(probe)
        samples: dict[str, list[float]] = {p.key: [] for p in probes}
        for i in range(total):
            for probe in rotated(probes, i):
                seconds = await probe.one(bodies[probe.key][i])
                if i >= LATENCY_WARMUP:
                    samples[probe.key].append(seconds)
    finally:
        for probe in reversed(opened):
            await probe.close()
    for key, values in samples.items():
        spread = Percentiles.of(values)
        results.add(f"latency.{key}.p50", 0, spread.p50 * 1e3)
        results.add(f"latency.{key}.p99", 0, spread.p99 * 1e3)
        results.add(f"latency.{key}.max", 0, spread.max * 1e3)
