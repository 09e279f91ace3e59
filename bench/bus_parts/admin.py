"""Each contender's queues, declared, filled, purged and deleted outside the timed code."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractQueue, DeliveryMode
from harness import broker
from harness.window import in_window

from bus_parts.settings import BODY, JSON
from jupiter_bus.topology import EVENTS_EXCHANGE, TRANSFERS_EXCHANGE


@dataclass(frozen=True, slots=True)
class Names:
    """One contender's queues; each queue's name is also its routing key."""

    events: str  # bound to jupiter.events
    work: str  # pre-filled through the default exchange
    rpc: str  # bound to jupiter.transfers

    @classmethod
    def for_run(cls, run_id: str, contender: str) -> Names:
        base = f"bench.{run_id}.{contender}"
        return cls(f"{base}.events", f"{base}.work", f"{base}.rpc")


class Admin:
    """Topology and bookkeeping outside the timed code, on its own plain connection."""

    def __init__(self, connection: AbstractConnection, channel: AbstractChannel) -> None:
        self._connection = connection
        self._channel = channel
        self._queues: dict[str, AbstractQueue] = {}

    @classmethod
    async def open(cls, url: str) -> Admin:
        connection = await aio_pika.connect(url)
        return cls(connection, await connection.channel(publisher_confirms=True))

    def broker_version(self) -> str:
        return broker.server_version(self._connection)

    async def declare(self, names: Names) -> None:
        for name, exchange in (
            (names.events, EVENTS_EXCHANGE),
            (names.work, ""),
            (names.rpc, TRANSFERS_EXCHANGE),
        ):
            queue = await self._channel.declare_queue(name, durable=True)
            self._queues[name] = queue
            if exchange:
                await queue.bind(exchange, name)

    async def purge(self, name: str) -> None:
        await self._queues[name].purge()

    async def fill(self, name: str, count: int, timeout_s: float) -> None:
        """Empty ``name``, then put ``count`` persistent, confirmed messages in it."""
        await self.purge(name)
        exchange = self._channel.default_exchange

        async def put() -> None:
            message = aio_pika.Message(
                BODY, content_type=JSON, delivery_mode=DeliveryMode.PERSISTENT
            )
            await exchange.publish(message, name, mandatory=False)

        async with asyncio.timeout(timeout_s):
            await in_window(count, 500, put)

    async def close(self) -> None:
        for queue in self._queues.values():
            await queue.delete(if_unused=False, if_empty=False)
        await self._connection.close()
