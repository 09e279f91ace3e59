"""The RabbitMQ transport (aio-pika): ``amqp://`` and ``amqps://`` URLs.

- one robust connection per transport (``connect_robust``): channels, queues,
  bindings and consumers come back by themselves after the connection is lost;
  this module keeps a strong reference to every object it needs restored (aio-pika
  restores only objects still referenced);
- publishes go through a channel with publisher confirms: :meth:`publish` returns
  once the broker has the message; a publish interrupted by a lost connection is
  retried once the connection is back, up to ``publish_timeout``;
- each consumer and subscription has its own channel, so its prefetch is its own
  and closing it hands unacked deliveries back to the broker;
- requests use RabbitMQ's direct reply-to (``amq.rabbitmq.reply-to``).

Example::

    bus = AmqpTransport("amqp://guest:guest@127.0.0.1:5672/")
    await bus.connect()
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
import uuid
from collections.abc import Callable, Coroutine, Mapping, Sequence
from typing import Any, Final
from urllib.parse import parse_qs, urlsplit

import aio_pika
import aiormq
from aio_pika.abc import (
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractRobustChannel,
    AbstractRobustConnection,
    AbstractRobustQueue,
    DeliveryMode,
    ExchangeType,
)
from aio_pika.connection import make_url

from ..errors import InvalidURL, QueueMismatch, TransportError, Unroutable
from ..topology import DEAD_EXCHANGE, DEAD_QUEUE, EVENTS_EXCHANGE, TRANSFERS_EXCHANGE
from . import secret_scrub
from .base import (
    JSON_CONTENT_TYPE,
    Consumer,
    Delivery,
    Envelope,
    HeaderValue,
    Outgoing,
    QueueStats,
    QueueType,
    Subscription,
    SubscriptionSpec,
    Transport,
    safe_url,
)
from .broker_list import RotatingConnection, split_brokers
from .connect_errors import connect_error

__all__ = [
    "DEFAULT_HEARTBEAT",
    "DIRECT_REPLY_TO",
    "AmqpConsumer",
    "AmqpDelivery",
    "AmqpSubscription",
    "AmqpTransport",
]

log = logging.getLogger(__name__)
secret_scrub.install()

# aiormq logs whole frames at DEBUG, bodies included: a transfer request's password
# would land in the log of anyone who turns on debug logging for everything. Unless
# the application chose a level for these loggers itself, keep them at INFO.
for _name in ("aiormq", "aio_pika"):
    if logging.getLogger(_name).level == logging.NOTSET:
        logging.getLogger(_name).setLevel(logging.INFO)

DIRECT_REPLY_TO = "amq.rabbitmq.reply-to"
DEFAULT_HEARTBEAT = 10
"""AMQP heartbeat (seconds) of a URL that sets none: a silent connection is noticed in
about 33 s (aio-pika's own default, 60, takes 183 s)."""
_QUORUM: Final[dict[str, Any]] = {"x-queue-type": "quorum"}
_SUBSCRIPTION_PREFETCH = 512
_SUBSCRIPTION_ACK_EVERY = 128
_RETRYABLE = (
    aiormq.exceptions.AMQPConnectionError,
    aiormq.exceptions.ChannelInvalidStateError,
    aiormq.exceptions.ConnectionClosed,
    ConnectionError,
)


def _envelope(message: AbstractIncomingMessage) -> Envelope:
    return Envelope(
        body=message.body,
        exchange=message.exchange or "",
        routing_key=message.routing_key or "",
        headers=message.headers,
        content_type=message.content_type,
        correlation_id=message.correlation_id,
        reply_to=message.reply_to,
        message_id=message.message_id,
        redelivered=bool(message.redelivered),
    )


def _is_stale(message: AbstractIncomingMessage) -> bool:
    """Whether the channel that delivered ``message`` has gone (it will be redelivered)."""
    try:
        return message.channel.is_closed
    except aio_pika.exceptions.ChannelInvalidStateError:
        return True


async def _queue_op(channel: aiormq.abc.AbstractChannel, name: str, op: str) -> Any:
    """One queue operation of :meth:`AmqpTransport._on_scratch_channel`; its answer."""
    try:
        if op == "delete":
            return await channel.queue_delete(name)
        if op == "create":
            return await channel.queue_declare(name, durable=True)
        if op == "create-quorum":
            return await channel.queue_declare(name, durable=True, arguments=_QUORUM)
        if op == "delete-if-empty":
            return await channel.queue_delete(name, if_empty=True)
        if op == "bind":
            return await channel.queue_bind(name, DEAD_EXCHANGE, "")
        return await channel.queue_declare(name, passive=True)
    except aiormq.exceptions.ChannelNotFoundEntity as exc:
        detail = str(exc.args[0]) if exc.args else ""
        if "down or inaccessible" in detail:  # a classic queue whose cluster node is down
            raise TransportError(f"queue {name!r} unavailable: {detail}") from None
        raise TransportError(f"no queue {name!r}") from None
    except aiormq.exceptions.ChannelPreconditionFailed as exc:
        detail = str(exc.args[0]) if exc.args else ""
        if op.startswith("create"):
            raise QueueMismatch(f"queue {name!r}: {detail}", queue=name) from None
        raise TransportError(f"queue {name!r}: {detail}") from None


def _connection_lost(name: str, op: str, exc: BaseException) -> TransportError:
    return TransportError(
        f"{op} of queue {name!r} failed: connection lost ({type(exc).__name__}); "
        "it comes back by itself, try again"
    )


class AmqpDelivery(Delivery):
    """A delivery from a RabbitMQ work queue."""

    __slots__ = ("_message", "_transport")

    def __init__(self, message: AbstractIncomingMessage, transport: AmqpTransport) -> None:
        super().__init__(_envelope(message))
        self._message = message
        self._transport = transport

    async def _ack(self) -> None:
        try:
            await self._message.ack()
        except (*_RETRYABLE, aio_pika.exceptions.ChannelInvalidStateError):
            log.warning(
                "ack of %s lost with its channel; the broker will deliver it again",
                self.envelope.message_id or self.envelope.routing_key,
            )

    async def _requeue(self) -> None:
        with contextlib.suppress(*_RETRYABLE, aio_pika.exceptions.ChannelInvalidStateError):
            await self._message.nack(requeue=True)

    async def _publish_dead(self, reason: str, body: bytes | None) -> None:
        await self._transport.dead_letter(self.envelope, reason, body=body)

    def _is_direct(self, reply_to: str) -> bool:
        return reply_to.startswith(DIRECT_REPLY_TO)

    async def _ack_and_reply(self, body: bytes, correlation_id: str | None) -> None:
        # The reply goes on the delivery's own channel (no confirms), after the ack: the
        # broker handles one channel's frames in order, so the ack is done even if the
        # reply makes it close the connection (RabbitMQ 3.10 does when the requester's
        # node is down), and nothing is retried.
        await self._ack()
        if _is_stale(self._message):
            return  # the ack was lost with the channel: the job comes back, answered again
        properties = aiormq.spec.Basic.Properties(
            content_type=JSON_CONTENT_TYPE, correlation_id=correlation_id, delivery_mode=1
        )
        try:
            await self._message.channel.basic_publish(
                body, exchange="", routing_key=self.envelope.reply_to or "", properties=properties
            )
        except (*_RETRYABLE, aiormq.exceptions.AMQPError) as exc:
            log.info("reply to %s lost: %s", self.envelope.correlation_id, type(exc).__name__)


class _OwnChannel:
    """A channel of its own and the buffer its consumer callback fills.

    What an AMQP consumer and subscription share: its prefetch is its own, and closing
    the channel hands its unacked deliveries back to the broker.
    """

    __slots__ = ("buffer", "channel", "queue", "transport")

    def __init__(self, transport: AmqpTransport) -> None:
        self.transport = transport
        self.buffer: asyncio.Queue[AbstractIncomingMessage | None] = asyncio.Queue()
        self.channel: AbstractRobustChannel | None = None
        self.queue: AbstractRobustQueue | None = None

    async def open(self, prefetch: int) -> AbstractRobustChannel:
        channel = await self.transport.open_channel()
        self.channel = channel
        await channel.set_qos(prefetch_count=prefetch)
        return channel

    async def consume(self, queue: AbstractRobustQueue) -> None:
        self.queue = queue  # strong reference: restored after reconnects
        await queue.consume(self.on_message, no_ack=False)

    async def on_message(self, message: AbstractIncomingMessage) -> None:
        self.buffer.put_nowait(message)

    async def close(self) -> None:
        self.buffer.put_nowait(None)
        channel, self.channel, self.queue = self.channel, None, None
        if channel is not None:
            # Closing the channel cancels the consumer (an auto-delete queue goes with
            # it); deleting a queue first would make the broker cancel a live consumer,
            # which aio-pika treats as a reason to reconnect.
            with contextlib.suppress(Exception):
                await channel.close()


class AmqpConsumer(Consumer):
    """Consumes one RabbitMQ work queue on its own channel with a prefetch limit."""

    def __init__(self, transport: AmqpTransport, queue: str, prefetch: int) -> None:
        super().__init__(transport, queue, prefetch)
        self._own = _OwnChannel(transport)

    async def _start(self) -> None:
        try:
            channel = await self._own.open(self._prefetch)
            await self._own.consume(await channel.declare_queue(self._queue_name, passive=True))
        except aiormq.exceptions.ChannelNotFoundEntity:
            await self.close()
            raise TransportError(
                f"no queue {self._queue_name!r}: declare it before consuming"
            ) from None

    async def __anext__(self) -> AmqpDelivery:
        buffer = self._own.buffer
        while True:
            if self._closed:
                raise StopAsyncIteration
            message = await buffer.get()
            if message is None:
                raise StopAsyncIteration
            if not _is_stale(message):
                return AmqpDelivery(message, self._own.transport)

    async def _close(self) -> None:
        await self._own.close()


class AmqpSubscription(Subscription):
    """A private queue (exclusive, bounded, drop-head) bound to topic patterns."""

    def __init__(self, transport: AmqpTransport, spec: SubscriptionSpec) -> None:
        super().__init__(transport, spec, f"jupiter.sub.{uuid.uuid4().hex}")
        self._own = _OwnChannel(transport)
        self._unacked: AbstractIncomingMessage | None = None
        self._taken = 0

    async def _start(self) -> None:
        if self._own.channel is not None:
            return
        channel = await self._own.open(_SUBSCRIPTION_PREFETCH)
        # A client-chosen name: after a reconnect aio-pika re-declares the same
        # queue (server-named "amq.gen-*" queues cannot be re-declared by name).
        queue = await channel.declare_queue(
            self.name,
            durable=False,
            exclusive=True,
            auto_delete=True,
            arguments=self.spec.arguments(),
        )
        for pattern in self.spec.patterns:
            await queue.bind(self.spec.exchange, pattern)
        await self._own.consume(queue)

    async def _ack_taken(self) -> None:
        message, self._unacked = self._unacked, None
        if message is not None and not _is_stale(message):
            with contextlib.suppress(*_RETRYABLE):
                await message.ack(multiple=True)

    async def __anext__(self) -> Envelope:
        buffer = self._own.buffer
        while True:
            if buffer.empty():
                await self._ack_taken()  # about to wait: let the broker send more
            message = await buffer.get()
            if message is None or self._closed:
                raise StopAsyncIteration
            if _is_stale(message):
                continue
            self._unacked = message
            self._taken += 1
            if self._taken % _SUBSCRIPTION_ACK_EVERY == 0:
                await self._ack_taken()
            return _envelope(message)

    async def _close(self) -> None:
        await self._own.close()


class AmqpTransport(Transport):
    """Transport on RabbitMQ through aio-pika.

    ``connection_name`` is shown by ``rabbitmqctl list_connections`` (default: this
    process's pid). ``publish_timeout`` bounds how long :meth:`publish` waits out a
    lost connection before giving up (on a live connection the broker always answers
    a publish with a confirm, or closes the channel, so the first attempt arms no
    timer: one per publish measurably slows confirmed publishing). ``connect_timeout``
    bounds one attempt of :meth:`connect`. ``heartbeat``: seconds of the AMQP heartbeat
    when the URL sets none (``?heartbeat=N`` wins; 0: none). A connection gone silent
    without closing (a partition, a host gone) is noticed after about
    ``3 * (heartbeat + 1)`` seconds (aiormq's grace): 33 s by default, against 183 s at
    aio-pika's 60; RabbitMQ advises 5-20 s, lower values risk false alarms.

    Example::

        async with AmqpTransport("amqp://guest:guest@127.0.0.1/") as bus:
            await bus.connect()
            await bus.publish("jupiter.events", "resource.n1", b"{...}")
    """

    def __init__(
        self,
        url: str,
        *,
        connection_name: str | None = None,
        publish_timeout: float = 30.0,
        reconnect_interval: float = 1.0,
        connect_timeout: float = 10.0,
        heartbeat: int = DEFAULT_HEARTBEAT,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("amqp", "amqps"):
            raise InvalidURL(f"not an AMQP URL: {safe_url(url)}")
        super().__init__(url)
        self.connection_name = connection_name or f"jupiter-bus pid {os.getpid()}"
        self.publish_timeout = publish_timeout
        self.reconnect_interval = reconnect_interval
        self.connect_timeout = connect_timeout
        self.heartbeat = heartbeat
        self._connection: AbstractRobustConnection | None = None
        self._channel: AbstractRobustChannel | None = None
        self._admin: AbstractRobustChannel | None = None
        self._exchanges: dict[tuple[int, str], AbstractExchange] = {}
        self._rpc_channel: AbstractRobustChannel | None = None
        self._rpc_queue: AbstractRobustQueue | None = None
        self._rpc_lock = asyncio.Lock()
        self._pending: dict[str, asyncio.Future[Envelope]] = {}
        self._dead_queue_task: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"AmqpTransport({safe_url(self.url)!r})"

    @property
    def connection(self) -> AbstractRobustConnection:
        """The underlying robust connection (for tools and tests)."""
        if self._connection is None:
            raise TransportError("transport not connected: call connect() first")
        return self._connection

    async def connect(self) -> None:
        if self._connection is not None:
            return
        # connect_robust() itself, cancelled mid-attempt (Ctrl-C), leaves a connection
        # behind that reconnects forever: build it here, so that it can be closed.
        # aio-pika fails fast on the first attempt: try each address in turn here,
        # the connection then rotates through all of them on every reconnect.
        urls = split_brokers(self.url)
        for start, url in enumerate(urls):
            connection = RotatingConnection(
                [
                    make_url(
                        u, reconnect_interval=self.reconnect_interval, heartbeat=self._heartbeat(u)
                    )
                    for u in urls[start:] + urls[:start]
                ],
                client_properties={"connection_name": self.connection_name},
                reconnect_interval=self.reconnect_interval,
            )
            try:
                await connection.connect(timeout=self.connect_timeout)
                break
            except BaseException as exc:
                with contextlib.suppress(Exception):
                    await connection.close()
                if not isinstance(exc, OSError | TimeoutError | aiormq.exceptions.AMQPError):
                    raise
                if start == len(urls) - 1:
                    raise connect_error(exc, url) from None
        try:
            self._channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
            self._admin = await connection.channel(publisher_confirms=False)
            await self._declare_topology(self._admin, connection)
        except BaseException:
            with contextlib.suppress(Exception):
                await connection.close()
            raise
        self._connection = connection
        connection.close_callbacks.add(self._on_lost)
        connection.reconnect_callbacks.add(self._on_restored)

    def _heartbeat(self, url: str) -> int | None:
        """``heartbeat`` for :func:`make_url` (None: left out), unless ``url`` sets its own."""
        return None if "heartbeat" in parse_qs(urlsplit(url).query) else self.heartbeat

    def _on_lost(self, _: object, exc: BaseException | None = None) -> None:
        if not self._closed and exc is not None:
            log.warning(
                "connection to %s lost (%s); reconnecting every %g s",
                safe_url(self.url),
                str(exc) or type(exc).__name__,
                self.reconnect_interval,
            )

    def _on_restored(self, *_: object) -> None:
        log.info("connection to %s restored", safe_url(self.url))
        if self._connection is not None and (
            self._dead_queue_task is None or self._dead_queue_task.done()
        ):
            self._dead_queue_task = asyncio.create_task(
                self._ensure_dead_queue_again(self._connection),
                name="jupiter-bus ensure dead-letter queue",
            )

    async def _ensure_dead_queue_again(self, connection: AbstractRobustConnection) -> None:
        """:meth:`_ensure_dead_queue` after a reconnect; a connection lost meanwhile makes
        it wait for the next one."""
        try:
            await self._ensure_dead_queue(connection)
        except Exception as exc:
            log.info("dead-letter queue not checked (%s); next reconnect will", exc)

    def on_reconnect(self, callback: Callable[[], None]) -> Callable[[], None]:
        def fire(*_: object, **__: object) -> None:
            try:
                callback()
            except Exception:
                log.exception("reconnect callback failed")

        callbacks = self.connection.reconnect_callbacks
        callbacks.add(fire)
        return lambda: callbacks.discard(fire)

    async def _declare_topology(
        self, channel: AbstractRobustChannel, connection: AbstractRobustConnection
    ) -> None:
        await channel.declare_exchange(EVENTS_EXCHANGE, ExchangeType.TOPIC, durable=True)
        await channel.declare_exchange(TRANSFERS_EXCHANGE, ExchangeType.DIRECT, durable=True)
        await channel.declare_exchange(DEAD_EXCHANGE, ExchangeType.FANOUT, durable=True)
        await self._ensure_dead_queue(connection)

    async def _ensure_dead_queue(self, connection: AbstractRobustConnection) -> None:
        """Make sure ``jupiter.dead`` exists and is bound, on scratch channels.

        Not declared on a robust channel: aio-pika would declare it again on every
        reconnect, and on a cluster a classic queue lives on one node, so while that
        node is down its declaration fails (NOT_FOUND) and takes the whole connection
        with it, every reconnect, in every client. Here that failure is a warning (dead
        letters are dropped until the node is back); :meth:`_on_restored` ensures the
        queue again after each reconnect. A queue declared otherwise beforehand (e.g. a
        quorum queue, by an operator) is kept as it is: it is only checked for, and bound.
        """
        try:
            try:
                await self._on_scratch_channel(DEAD_QUEUE, "declare", connection)
            except TransportError:  # no such queue (or its node is down): declare it
                await self._on_scratch_channel(DEAD_QUEUE, "create", connection)
            await self._on_scratch_channel(DEAD_QUEUE, "bind", connection)
        except TransportError as exc:
            log.warning(
                "dead-letter queue %s unavailable (%s): messages refused until it is "
                "back are dropped; on a cluster declare it as a quorum queue "
                "(docs/beyond-one-broker.md)",
                DEAD_QUEUE,
                exc,
            )

    async def declare_dead_queue(self, queue_type: QueueType = "quorum") -> str:
        """Make ``jupiter.dead`` a ``queue_type`` queue, bound to its exchange; what was done:
        ``created``, ``kept`` (it already was one) or ``replaced`` (an empty classic queue
        was deleted and declared again as a quorum one; a quorum queue is never replaced).

        For a cluster, once per deployment, ideally before the clients connect (each
        makes a classic one when it finds none, and keeps one that exists as it is): a
        quorum ``jupiter.dead`` keeps its letters while a node is down. A queue of the
        other type that holds letters raises :class:`QueueMismatch` and is left as it
        is: read or purge them first. ``jupiter-bus setup`` calls this.

        Example::

            async with AmqpTransport("amqp://admin:PASSWORD@h1,h2,h3/") as bus:
                await bus.connect()
                print(await bus.declare_dead_queue("quorum"))  # replaced
        """
        self._check_open()
        create = "create-quorum" if queue_type == "quorum" else "create"
        try:
            await self._on_scratch_channel(DEAD_QUEUE, "declare")
            existed = True
        except TransportError:
            existed = False
        try:
            await self._on_scratch_channel(DEAD_QUEUE, create)
            outcome = "kept" if existed else "created"
        except QueueMismatch:
            if queue_type == "classic":
                # RabbitMQ deletes a quorum queue "only if empty" not at all (the
                # connection goes): turning it back would risk letters
                raise QueueMismatch(
                    f"{DEAD_QUEUE} is a quorum queue, and is not replaced by a classic one "
                    f"here (nothing was changed): once it is empty, `rabbitmqctl "
                    f"delete_queue {DEAD_QUEUE}` and run this again",
                    queue=DEAD_QUEUE,
                ) from None
            letters = (await self.queue_stats(DEAD_QUEUE)).messages
            if letters:
                raise QueueMismatch(
                    f"{DEAD_QUEUE} is not a {queue_type} queue and holds {letters} dead "
                    "letters: read or purge them first (nothing was changed)",
                    queue=DEAD_QUEUE,
                ) from None
            try:
                await self._on_scratch_channel(DEAD_QUEUE, "delete-if-empty")
            except TransportError as exc:  # a letter arrived meanwhile
                raise QueueMismatch(
                    f"{DEAD_QUEUE} could not be replaced ({exc}); nothing was changed",
                    queue=DEAD_QUEUE,
                ) from None
            await self._on_scratch_channel(DEAD_QUEUE, create)
            outcome = "replaced"
        await self._on_scratch_channel(DEAD_QUEUE, "bind")
        log.info("%s: %s as a %s queue", DEAD_QUEUE, outcome, queue_type)
        return outcome

    async def open_channel(self) -> AbstractRobustChannel:
        """A new robust channel on this transport's connection."""
        self._check_open()
        channel = await self.connection.channel(publisher_confirms=False)
        assert isinstance(channel, aio_pika.RobustChannel)
        return channel

    async def _disconnect(self) -> None:
        for waiter in self._pending.values():
            if not waiter.done():
                waiter.set_exception(TransportError("transport closed before the reply came"))
        self._pending.clear()
        if self._dead_queue_task is not None:
            self._dead_queue_task.cancel()
            await asyncio.gather(self._dead_queue_task, return_exceptions=True)
        if self._connection is not None:
            with contextlib.suppress(Exception):
                await self._connection.close()

    async def _exchange(self, channel: AbstractRobustChannel, name: str) -> AbstractExchange:
        if name == "":
            return channel.default_exchange
        exchange = self._exchanges.get((id(channel), name))
        if exchange is None:
            exchange = await channel.get_exchange(name, ensure=False)
            self._exchanges[(id(channel), name)] = exchange
        return exchange

    def _send(self, message: Outgoing) -> Coroutine[Any, Any, None]:
        if self._channel is None:
            raise TransportError("transport not connected: call connect() first")
        return self._publish_on(self._channel, message)

    async def _publish_on(self, channel: AbstractRobustChannel, outgoing: Outgoing) -> None:
        exchange, routing_key, mandatory = (
            outgoing.exchange,
            outgoing.routing_key,
            outgoing.mandatory,
        )
        message = aio_pika.Message(
            outgoing.body,
            headers=dict(outgoing.headers) if outgoing.headers else None,
            content_type=outgoing.content_type,
            delivery_mode=DeliveryMode.PERSISTENT
            if outgoing.persistent
            else DeliveryMode.NOT_PERSISTENT,
            correlation_id=outgoing.correlation_id,
            reply_to=outgoing.reply_to,
            message_id=outgoing.message_id,
            expiration=outgoing.expiration,  # seconds; aio-pika sends whole milliseconds
        )
        deadline = time.monotonic() + self.publish_timeout
        timeout: float | None = None  # no timer per publish on the fast path (it costs)
        while True:
            target = self._exchanges.get((id(channel), exchange)) or await self._exchange(
                channel, exchange
            )
            try:
                await target.publish(message, routing_key, mandatory=mandatory, timeout=timeout)
                return
            except aiormq.exceptions.PublishError:
                raise Unroutable(
                    f"no queue is bound to {exchange!r} for routing key {routing_key!r}"
                ) from None
            except aiormq.exceptions.ChannelNotFoundEntity:
                raise TransportError(f"no exchange {exchange!r} on the broker") from None
            except TimeoutError:
                raise TransportError(
                    f"publish to {exchange!r}/{routing_key!r} not confirmed within "
                    f"{self.publish_timeout:g} s"
                ) from None
            except _RETRYABLE as exc:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._closed:
                    raise TransportError(
                        f"publish to {exchange!r}/{routing_key!r} failed: connection lost "
                        f"({type(exc).__name__}) and not back within {self.publish_timeout:g} s"
                    ) from None
                log.info("publish interrupted by %s; waiting for reconnection", type(exc).__name__)
                try:
                    await asyncio.wait_for(channel.ready(), remaining)
                except TimeoutError:
                    continue
                timeout = max(0.001, deadline - time.monotonic())

    async def _declare_queue(
        self, name: str, bindings: Sequence[tuple[str, str]], arguments: Mapping[str, HeaderValue]
    ) -> None:
        if self._admin is None:
            raise TransportError("transport not connected: call connect() first")
        try:
            queue = await self._admin.declare_queue(
                name, durable=True, arguments=dict(arguments) if arguments else None
            )
            for exchange, key in bindings:
                await queue.bind(exchange, key)
        except aiormq.exceptions.ChannelPreconditionFailed as exc:
            raise QueueMismatch(
                f"queue {name!r} exists with other arguments ({exc.args[0] if exc.args else ''}): "
                "every part of a deployment must declare it alike",
                queue=name,
            ) from None
        except aiormq.exceptions.ChannelNotFoundEntity as exc:
            raise TransportError(f"cannot declare or bind {name!r}: {exc}") from None

    async def _on_scratch_channel(
        self, name: str, op: str, connection: AbstractRobustConnection | None = None
    ) -> Any:
        """``op`` on queue ``name`` on a channel of its own (a failure closes only that one).

        ``op``: ``declare`` (passive), ``create`` (a durable classic queue), ``bind`` (to
        ``jupiter.dead``, for the dead-letter queue) or ``delete``; on ``connection``
        (default: this transport's). A connection lost meanwhile is a
        :class:`TransportError` too (aio-pika raises ``RuntimeError`` for a closed one).
        """
        try:
            channel = await (connection or self.connection).channel(publisher_confirms=False)
        except (RuntimeError, *_RETRYABLE) as exc:
            raise _connection_lost(name, op, exc) from None
        try:
            return await _queue_op(await channel.get_underlay_channel(), name, op)
        except (RuntimeError, *_RETRYABLE) as exc:
            raise _connection_lost(name, op, exc) from None
        finally:
            with contextlib.suppress(Exception):
                await channel.close()

    async def delete_queue(self, name: str) -> None:
        self._check_open()
        with contextlib.suppress(TransportError):
            await self._on_scratch_channel(name, "delete")

    async def queue_stats(self, name: str) -> QueueStats:
        self._check_open()
        result = await self._on_scratch_channel(name, "declare")
        return QueueStats(int(result.message_count or 0), int(result.consumer_count or 0))

    def _subscription(self, spec: SubscriptionSpec) -> AmqpSubscription:
        return AmqpSubscription(self, spec)

    def _consumer(self, queue: str, prefetch: int) -> AmqpConsumer:
        return AmqpConsumer(self, queue, prefetch)

    async def _open_rpc(self) -> None:
        async with self._rpc_lock:
            if self._rpc_channel is None:
                channel = await self.connection.channel(
                    publisher_confirms=True, on_return_raises=True
                )
                queue = await channel.declare_queue(DIRECT_REPLY_TO, passive=True)
                await queue.consume(self._on_reply, no_ack=True)
                self._rpc_queue = queue  # strong reference: restored after reconnects
                self._rpc_channel = channel

    async def _on_reply(self, message: AbstractIncomingMessage) -> None:
        waiter = self._pending.pop(message.correlation_id or "", None)
        if waiter is not None and not waiter.done():
            waiter.set_result(_envelope(message))

    async def _expect_reply(self, correlation_id: str, waiter: asyncio.Future[Envelope]) -> str:
        if self._rpc_channel is None:
            await self._open_rpc()
        self._pending[correlation_id] = waiter
        return DIRECT_REPLY_TO

    def _forget_reply(self, reply_to: str, correlation_id: str) -> None:
        self._pending.pop(correlation_id, None)

    def _send_request(self, message: Outgoing) -> Coroutine[Any, Any, None]:
        # Direct reply-to: a request goes out on the channel that consumes its replies.
        assert self._rpc_channel is not None, "_expect_reply opens the reply channel"
        return self._publish_on(self._rpc_channel, message)
