"""The three ways of using RabbitMQ that are timed: jupiter-bus, raw aio-pika, FastStream."""

from __future__ import annotations

import abc
import asyncio
import time
import uuid
from typing import Any

import aio_pika
from aio_pika.abc import AbstractIncomingMessage, AbstractRobustConnection, DeliveryMode
from faststream.rabbit import Channel, ExchangeType, RabbitBroker, RabbitExchange, RabbitQueue

from bus_parts.admin import Names
from bus_parts.settings import BODY, DIRECT_REPLY_TO, JSON, PREFETCH, REQUEST_TIMEOUT_S
from jupiter_bus.topology import EVENTS_EXCHANGE, TRANSFERS_EXCHANGE
from jupiter_bus.transport import Delivery, Transport, connect


class Contender(abc.ABC):
    """One way of using RabbitMQ; each method is one unit of timed work."""

    label: str
    key: str

    def __init__(self, url: str, names: Names) -> None:
        self.url = url
        self.names = names

    @abc.abstractmethod
    async def start(self) -> None:
        """Connect, and start the responder on its own connection."""

    @abc.abstractmethod
    async def close(self) -> None: ...

    @abc.abstractmethod
    async def publish(self) -> None:
        """Publish one persistent body to jupiter.events and await its confirm."""

    @abc.abstractmethod
    async def consume(self, count: int) -> float:
        """Consume and ack ``count`` messages of the work queue; seconds taken."""

    @abc.abstractmethod
    async def request(self) -> None:
        """One request/reply round trip through jupiter.transfers."""


class JupiterBus(Contender):
    """jupiter-bus's AmqpTransport; the responder answers each delivery in its own task."""

    label = "jupiter-bus"
    key = "jb"

    async def start(self) -> None:
        self._bus: Transport = await connect(self.url, connection_name="bench jupiter-bus")
        self._responder: Transport = await connect(self.url, connection_name="bench responder")
        self._serving = asyncio.create_task(self._serve())

    async def _serve(self) -> None:
        async with (
            self._responder.consume(self.names.rpc, prefetch=PREFETCH) as requests,
            asyncio.TaskGroup() as tasks,
        ):
            async for delivery in requests:
                tasks.create_task(self._answer(delivery))

    async def _answer(self, delivery: Delivery) -> None:
        await self._responder.reply(delivery.envelope, BODY)
        await delivery.ack()

    async def close(self) -> None:
        self._serving.cancel()
        await asyncio.gather(self._serving, return_exceptions=True)
        await self._responder.close()
        await self._bus.close()

    async def publish(self) -> None:
        await self._bus.publish(EVENTS_EXCHANGE, self.names.events, BODY, persistent=True)

    async def consume(self, count: int) -> float:
        started, seen = time.perf_counter(), 0
        async with self._bus.consume(self.names.work, prefetch=PREFETCH) as deliveries:
            async for delivery in deliveries:
                await delivery.ack()
                seen += 1
                if seen == count:
                    return time.perf_counter() - started
        raise RuntimeError(f"jupiter-bus consumer stopped after {seen} of {count}")

    async def request(self) -> None:
        await self._bus.request(TRANSFERS_EXCHANGE, self.names.rpc, BODY, timeout=REQUEST_TIMEOUT_S)


class RawAioPika(Contender):
    """aio-pika as its documentation writes it; the responder is a consume callback."""

    label = "aio-pika"
    key = "raw"

    async def start(self) -> None:
        self._connection = await aio_pika.connect_robust(self.url)
        channel = await self._connection.channel(publisher_confirms=True)
        self._events = await channel.get_exchange(EVENTS_EXCHANGE, ensure=False)
        await self._start_requester(self._connection)
        self._responder_connection = await aio_pika.connect_robust(self.url)
        await self._start_responder(self._responder_connection)

    async def _start_requester(self, connection: AbstractRobustConnection) -> None:
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        self._transfers = await channel.get_exchange(TRANSFERS_EXCHANGE, ensure=False)
        self._pending: dict[str, asyncio.Future[AbstractIncomingMessage]] = {}
        replies = await channel.declare_queue(DIRECT_REPLY_TO, passive=True)
        await replies.consume(self._on_reply, no_ack=True)

    async def _on_reply(self, message: AbstractIncomingMessage) -> None:
        waiter = self._pending.pop(message.correlation_id or "", None)
        if waiter is not None and not waiter.done():
            waiter.set_result(message)

    async def _start_responder(self, connection: AbstractRobustConnection) -> None:
        channel = await connection.channel(publisher_confirms=True)
        await channel.set_qos(prefetch_count=PREFETCH)
        self._reply_exchange = channel.default_exchange
        queue = await channel.declare_queue(self.names.rpc, passive=True)
        await queue.consume(self._answer)

    async def _answer(self, message: AbstractIncomingMessage) -> None:
        reply = aio_pika.Message(BODY, content_type=JSON, correlation_id=message.correlation_id)
        await self._reply_exchange.publish(reply, message.reply_to or "", mandatory=False)
        await message.ack()

    async def close(self) -> None:
        await self._responder_connection.close()
        await self._connection.close()

    async def publish(self) -> None:
        message = aio_pika.Message(BODY, content_type=JSON, delivery_mode=DeliveryMode.PERSISTENT)
        await self._events.publish(message, self.names.events, mandatory=False)

    async def consume(self, count: int) -> float:
        started, seen = time.perf_counter(), 0
        channel = await self._connection.channel(publisher_confirms=False)
        try:
            await channel.set_qos(prefetch_count=PREFETCH)
            queue = await channel.declare_queue(self.names.work, passive=True)
            async with queue.iterator() as messages:
                async for message in messages:
                    await message.ack()
                    seen += 1
                    if seen == count:
                        return time.perf_counter() - started
        finally:
            await channel.close()
        raise RuntimeError(f"aio-pika consumer stopped after {seen} of {count}")

    async def request(self) -> None:
        correlation_id = uuid.uuid4().hex
        waiter = asyncio.get_running_loop().create_future()
        self._pending[correlation_id] = waiter
        try:
            message = aio_pika.Message(
                BODY,
                content_type=JSON,
                delivery_mode=DeliveryMode.PERSISTENT,
                correlation_id=correlation_id,
                reply_to=DIRECT_REPLY_TO,
            )
            await self._transfers.publish(message, self.names.rpc, mandatory=True)
            await asyncio.wait_for(waiter, REQUEST_TIMEOUT_S)
        finally:
            self._pending.pop(correlation_id, None)


class FastStream(Contender):
    """A FastStream RabbitBroker: publisher object, subscribers, ``broker.request``."""

    label = "faststream"
    key = "fs"

    async def start(self) -> None:
        self._channel = Channel(prefetch_count=PREFETCH)
        self._broker = RabbitBroker(self.url, logger=None)
        self._responder = RabbitBroker(self.url, logger=None)
        self._transfers = RabbitExchange(TRANSFERS_EXCHANGE, type=ExchangeType.DIRECT)
        serve = self._responder.subscriber(
            RabbitQueue(self.names.rpc, durable=True, routing_key=self.names.rpc),
            self._transfers,
            channel=Channel(prefetch_count=PREFETCH),
        )

        @serve  # type: ignore[untyped-decorator, unused-ignore]  # without faststream installed
        async def answer(request: dict[str, Any]) -> bytes:
            return BODY

        await self._responder.start()
        await self._broker.start()
        self._events = self._broker.publisher(
            routing_key=self.names.events,
            exchange=RabbitExchange(EVENTS_EXCHANGE, type=ExchangeType.TOPIC),
            persist=True,
            mandatory=False,
            content_type=JSON,
            persistent=False,
        )

    async def close(self) -> None:
        await self._broker.stop()
        await self._responder.stop()

    async def publish(self) -> None:
        await self._events.publish(BODY)

    async def consume(self, count: int) -> float:
        done = asyncio.Event()
        seen, finished = 0, 0.0
        subscriber = self._broker.subscriber(
            RabbitQueue(self.names.work, durable=True), channel=self._channel, persistent=False
        )

        @subscriber  # type: ignore[untyped-decorator, unused-ignore]  # without faststream installed
        async def on_event(event: dict[str, Any]) -> None:
            nonlocal seen, finished
            seen += 1
            if seen == count:
                finished = time.perf_counter()
                done.set()

        started = time.perf_counter()
        await subscriber.start()
        try:
            await done.wait()
        finally:
            await subscriber.stop()
        return finished - started

    async def request(self) -> None:
        await self._broker.request(
            BODY,
            routing_key=self.names.rpc,
            exchange=self._transfers,
            persist=True,
            mandatory=True,
            timeout=REQUEST_TIMEOUT_S,
            content_type=JSON,
        )
