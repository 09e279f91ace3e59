"""Figures 2 and 2b: ingest through RabbitMQ, drained from a backlog by three consumers."""

from __future__ import annotations

import abc
import asyncio
import gc
import time
import uuid
from typing import ClassVar, Final

from aio_pika.abc import AbstractIncomingMessage
from harness.rounds import rotated

from facade_parts import raw
from facade_parts.facades import live_only, until_version
from facade_parts.publisher import Feed, PublisherProcess, batch_feed, link_feed
from facade_parts.results import Results
from facade_parts.settings import WAIT_S, Settings
from facade_parts.synthetic import Topology
from jupiter_bus.transport import Subscription, connect
from jupiter_bus.transport.base import DEFAULT_MAX_BACKLOG


class Sink(abc.ABC):
    """A consumer of one topic pattern that counts what reached it."""

    label: ClassVar[str]
    key: ClassVar[str]

    def __init__(self, url: str, run_id: str, pattern: str) -> None:
        self.url = url
        self.run_id = run_id
        self.pattern = pattern

    @abc.abstractmethod
    async def open(self) -> None:
        """Subscribe (bound before anything is published)."""

    @abc.abstractmethod
    async def close(self) -> None: ...

    @abc.abstractmethod
    def expect(self, count: int) -> None:
        """Start counting: :meth:`arrived` waits for ``count`` more messages."""

    @abc.abstractmethod
    async def arrived(self, timeout: float) -> None: ...


class CountingSink(Sink):
    """A sink that counts deliveries itself and sets an event at the target."""

    def __init__(self, url: str, run_id: str, pattern: str) -> None:
        super().__init__(url, run_id, pattern)
        self._seen = 0
        self._target = 0
        self._done = asyncio.Event()

    def expect(self, count: int) -> None:
        self._target = self._seen + count
        self._done = asyncio.Event()

    def _count(self) -> bool:
        self._seen += 1
        if self._seen == self._target:
            self._done.set()
            return True
        return False

    async def arrived(self, timeout: float) -> None:
        async with asyncio.timeout(timeout):
            await self._done.wait()


class RawSink(CountingSink):
    """Raw aio-pika: a private queue like the facade's, a consume callback, no decoding."""

    label = "raw aio-pika"
    key = "raw"

    async def open(self) -> None:
        self._connection = await raw.connection(self.url, "raw")
        await raw.private_queue(
            self._connection,
            self._on_message,
            bind=self.pattern,
            name=f"bench.facade.{self.run_id}.raw.{uuid.uuid4().hex[:6]}",
            arguments={"x-max-length": DEFAULT_MAX_BACKLOG},
        )

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        last = self._count()
        if last or self._seen % raw.ACK_EVERY == 0:
            await message.ack(multiple=True)

    async def close(self) -> None:
        await self._connection.close()


class TransportSink(CountingSink):
    """``transport.subscribe([pattern])``: the facade's feed without decode or state."""

    label = "transport.subscribe"
    key = "sub"

    async def open(self) -> None:
        self._transport = await connect(self.url, connection_name="bench/facade.py subscribe")
        self._feed: Subscription = self._transport.subscribe([self.pattern])
        await self._feed.start()
        self._task = asyncio.create_task(self._drain())

    async def _drain(self) -> None:
        async for _ in self._feed:
            self._count()

    async def close(self) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        await self._transport.close()


class FacadeSink(Sink):
    """``JupiterInterface``: messages counted when applied to its network state (a batch
    is one change of the state's version, a ``network.cost`` one too)."""

    label = "JupiterInterface"
    key = "facade"

    async def open(self) -> None:
        self._bus = live_only(self.url, connection_name="bench/facade.py facade")
        await self._bus.__aenter__()
        self._target = 0

    def expect(self, count: int) -> None:
        self._target = self._bus.network.version + count

    async def arrived(self, timeout: float) -> None:
        await until_version(self._bus.network, self._target, timeout)

    async def close(self) -> None:
        await self._bus.close()


SINKS: Final[tuple[type[Sink], ...]] = (RawSink, TransportSink, FacadeSink)


async def amqp_sample(
    sink: Sink, publisher: PublisherProcess, feed: Feed, count: int, n: int, results: Results
) -> None:
    """One contender, one sample: subscribe, fill its backlog, time draining it."""
    await sink.open()
    try:
        sink.expect(count)
        gc.collect()
        publish_s = publisher.publish(feed, count)  # blocks: nothing here consumes meanwhile
        wall, cpu = time.perf_counter(), time.process_time()
        await sink.arrived(WAIT_S)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    finally:
        await sink.close()
    links = count * feed.links_per_message
    results.add(f"{feed.prefix}.{sink.key}", n, links / wall)
    results.add(f"{feed.prefix}.{sink.key}.cpu", n, cpu / count * 1e6)
    results.add(f"{feed.prefix}.pub", n, links / publish_s)


async def amqp_rounds(
    settings: Settings,
    topology: Topology,
    publisher: PublisherProcess,
    feed: Feed,
    count: int,
    results: Results,
) -> None:
    """Prepare ``count`` messages, warm up, then each contender per round, rotated."""
    n = topology.n
    publisher.prepare(feed, topology, count)
    sinks = [kind(settings.url, topology.run_id, feed.pattern) for kind in SINKS]
    warm_up = min(count, max(10, 1_000 // feed.links_per_message))
    await amqp_sample(sinks[-1], publisher, feed, warm_up, n, Results())
    for number in range(settings.amqp_rounds):
        for sink in rotated(sinks, number):
            await amqp_sample(sink, publisher, feed, count, n, results)


async def measure_amqp_ingest(
    settings: Settings, topology: Topology, publisher: PublisherProcess, results: Results
) -> None:
    """Per-link JSON events, then binary batches (one per source) of the same topology."""
    count = settings.amqp_count(topology.links)
    await amqp_rounds(settings, topology, publisher, link_feed(), count, results)
    count = settings.batch_count(topology.n)
    await amqp_rounds(settings, topology, publisher, batch_feed(topology.n), count, results)
