"""The transport seam: one small protocol every bus implementation follows.

Everything above this module (the facade, state, providers) speaks only to
:class:`Transport`; ``memory`` and ``amqp`` sit below it and are held to the same
behaviour by one contract test suite.

The model is AMQP 0-9-1's, reduced to what jupiter-bus needs:

- exchanges (``topic``, ``direct``, ``fanout`` and the default exchange ``""``, which
  routes to the queue named by the routing key) receive published messages;
- :meth:`Transport.subscribe` binds a private, bounded queue to topic patterns and
  yields :class:`Envelope` objects (live events: when a subscriber falls more than
  ``max_backlog`` messages or ``max_backlog_bytes`` of bodies behind, the oldest are
  dropped);
- :meth:`Transport.consume` reads a durable work queue with a prefetch limit and
  yields :class:`Delivery` objects that must be acked, requeued or dead-lettered;
  deliveries not acked when a consumer goes away are delivered again;
- :meth:`Transport.request` publishes and awaits one reply (``reply_to`` +
  ``correlation_id``), with a timeout.

The public methods are written once, here; an implementation fills in protected
hooks: ``_send`` (one :class:`Outgoing`), ``_expect_reply``/``_forget_reply``,
``_declare_queue``, ``_subscription``/``_consumer`` (its :class:`Feed` classes).

Example::

    async with await connect("memory://demo") as bus:
        async with bus.subscribe(["resource.*"]) as events:
            await bus.publish(EVENTS_EXCHANGE, "resource.node1", b"{}")
            envelope = await anext(events)
"""

from __future__ import annotations

import abc
import asyncio
import logging
import math
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from types import TracebackType
from typing import Any, Generic, Self, TypeVar

from ..errors import RequestTimeout, TransportError
from ..messages import redact
from ..topology import (
    DEAD_EXCHANGE,
    ERROR_HEADER,
    EVENTS_EXCHANGE,
    ORIGINAL_EXCHANGE_HEADER,
    ORIGINAL_ROUTING_KEY_HEADER,
    TRANSFERS_EXCHANGE,
    check_node,
    work_queue,
)
from .values import (
    DEFAULT_MAX_BACKLOG,
    DEFAULT_MAX_BACKLOG_BYTES,
    DEFAULT_MAX_EVENT_AGE,
    JSON_CONTENT_TYPE,
    Envelope,
    ExchangeType,
    Headers,
    HeaderValue,
    Outgoing,
    QueueStats,
    QueueType,
    SubscriptionSpec,
    WorkQueueOptions,
)
from .wire_rules import _check_expiration, _check_headers, check_prefetch, safe_url, topic_matches

__all__ = [
    "DEFAULT_MAX_BACKLOG",
    "DEFAULT_MAX_BACKLOG_BYTES",
    "DEFAULT_MAX_EVENT_AGE",
    "JSON_CONTENT_TYPE",
    "MAX_REASON_CHARS",
    "Consumer",
    "Delivery",
    "Envelope",
    "ExchangeType",
    "Feed",
    "HeaderValue",
    "Headers",
    "Outgoing",
    "QueueStats",
    "QueueType",
    "Subscription",
    "SubscriptionSpec",
    "Transport",
    "WorkQueueOptions",
    "await_reply",
    "check_prefetch",
    "safe_url",
    "topic_matches",
]

log = logging.getLogger(__name__)

MAX_REASON_CHARS = 1_000

_ItemT = TypeVar("_ItemT")


class Delivery(abc.ABC):
    """One message taken from a work queue, owed an answer.

    Exactly one of :meth:`ack`, :meth:`requeue` or :meth:`dead_letter` should be
    called; a delivery left unanswered when its consumer closes goes back to the
    queue and is delivered again (``redelivered`` set).

    Example::

        async for delivery in consumer:
            try:
                job = decode(delivery.envelope.body)
            except MessageError as exc:
                await delivery.dead_letter(str(exc))
                continue
            ...
            await delivery.ack()
    """

    __slots__ = ("_settled", "envelope")

    def __init__(self, envelope: Envelope) -> None:
        self.envelope = envelope
        self._settled = False

    @property
    def settled(self) -> bool:
        """Whether this delivery was already acked, requeued or dead-lettered."""
        return self._settled

    @property
    def direct_reply(self) -> bool:
        """Whether its ``reply_to`` is its requester's own reply address (RabbitMQ's
        direct reply-to, the in-memory bus's waiters) rather than a queue: a reply there
        lives only as long as the requester's channel, nothing keeps it. Answer such a
        delivery with :meth:`ack_and_reply`."""
        reply_to = self.envelope.reply_to
        return bool(reply_to) and self._is_direct(reply_to or "")

    async def ack_and_reply(self, body: bytes, *, correlation_id: str | None = None) -> None:
        """Ack, then send ``body`` to the requester's direct reply address, once.

        A best effort, after the ack: such a reply cannot be kept (a requester that lost
        its connection never gets it), and on RabbitMQ a reply to a requester whose
        cluster node is down makes the broker close the replier's connection, so it must
        never come before the ack, nor be retried (the job would come back, and its
        answer again, in a loop). ``correlation_id`` defaults to the request's.
        """
        if self._settle():
            await self._ack_and_reply(body, correlation_id or self.envelope.correlation_id)

    async def ack(self) -> None:
        """Confirm the message was handled; the queue forgets it."""
        if self._settle():
            await self._ack()

    async def requeue(self) -> None:
        """Give the message back to the queue, to be delivered again."""
        if self._settle():
            await self._requeue()

    async def dead_letter(self, reason: str, *, body: bytes | None = None) -> None:
        """Republish to ``jupiter.dead`` with ``reason``, then ack.

        ``body`` replaces the original body in the dead-lettered copy (e.g. with its
        password removed); ``reason`` must not contain a secret.
        """
        if not self._settled:
            await self._publish_dead(reason, body)
        if self._settle():
            await self._ack()

    def _settle(self) -> bool:
        if self._settled:
            return False
        self._settled = True
        return True

    @abc.abstractmethod
    async def _ack(self) -> None: ...

    @abc.abstractmethod
    async def _requeue(self) -> None: ...

    @abc.abstractmethod
    async def _publish_dead(self, reason: str, body: bytes | None) -> None: ...

    @abc.abstractmethod
    def _is_direct(self, reply_to: str) -> bool: ...

    @abc.abstractmethod
    async def _ack_and_reply(self, body: bytes, correlation_id: str | None) -> None: ...


class Feed(abc.ABC, Generic[_ItemT]):
    """What subscriptions and consumers share: an async context manager and iterator.

    Entering calls :meth:`start`, leaving calls :meth:`close`. A started feed is
    owned by its transport, which closes it when the transport closes. An
    implementation fills in ``_start``, ``_close`` and ``__anext__``.

    Example::

        async with bus.consume(queue) as feed:
            async for delivery in feed:
                ...
    """

    def __init__(self, owner: Transport) -> None:
        self._owner = owner
        self._closed = False

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def __aiter__(self) -> Self:
        return self

    @abc.abstractmethod
    async def __anext__(self) -> _ItemT: ...

    async def start(self) -> None:
        """Start receiving (entering the context does this)."""
        await self._start()
        self._owner._owned.add(self)

    async def close(self) -> None:
        """Stop receiving and let go of what the feed holds. Idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            await self._close()
        finally:
            self._owner._owned.discard(self)

    @abc.abstractmethod
    async def _start(self) -> None: ...

    @abc.abstractmethod
    async def _close(self) -> None: ...


class Subscription(Feed[Envelope]):
    """A live feed of events matching topic patterns; an async context manager.

    Entering binds the subscription as its :attr:`spec` says (events published
    afterwards are seen); leaving unbinds it and removes its queue.

    Example::

        async with bus.subscribe(["network.#"]) as feed:
            async for envelope in feed:
                ...
    """

    def __init__(self, owner: Transport, spec: SubscriptionSpec, name: str) -> None:
        super().__init__(owner)
        self.spec = spec
        self._name = name

    @property
    def name(self) -> str:
        """The name of the subscription's private queue, fixed from creation.

        Others can send to it directly through the default exchange (``""``, routing
        key: this name): a late joiner gives it as ``reply_to`` of a snapshot request,
        so the answers arrive in the same feed as live events.
        """
        return self._name


class Consumer(Feed[Delivery]):
    """A consumer of one durable work queue; an async context manager.

    Yields :class:`Delivery` objects, at most ``prefetch`` unanswered at a time.
    Leaving the context returns unanswered deliveries to the queue.
    """

    def __init__(self, owner: Transport, queue: str, prefetch: int) -> None:
        super().__init__(owner)
        self._queue_name = queue
        self._prefetch = check_prefetch(prefetch)


class Transport(abc.ABC):
    """The seam between jupiter-bus and a message bus.

    Obtain one with :func:`jupiter_bus.transport.connect`; use it as an async
    context manager (or call :meth:`close`).

    Example::

        async with await connect("amqp://guest:guest@127.0.0.1/") as bus:
            await bus.publish("jupiter.events", "resource.node1", body)
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self._closed = False
        self._owned: set[Feed[Any]] = set()  # started, not yet closed (tests read it)
        self._dead_log = _LogThrottle()
        self._dead_letter_listeners: list[Callable[[Envelope, str], None]] = []

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @abc.abstractmethod
    async def connect(self) -> None:
        """Connect and declare the contract's exchanges and dead-letter queue."""

    def on_reconnect(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Call ``callback`` each time a lost connection is back (subscriptions restored).

        Returns a function that removes it. Events published while the connection was
        down are not replayed: this is the moment to ask for a snapshot. The in-memory
        bus never loses its connection, so by default nothing is ever called.
        """
        return lambda: None

    def on_dead_letter(self, callback: Callable[[Envelope, str], None]) -> Callable[[], None]:
        """Call ``callback(envelope, reason)`` each time this transport dead-letters a message
        (:meth:`dead_letter`, and so :meth:`Delivery.dead_letter`), before it is republished.

        Returns a function that removes it. For in-process observers (metrics): a
        callback must be quick; one that raises is logged and kept.

        Example::

            forget = bus.on_dead_letter(lambda envelope, reason: counter.inc())
        """
        self._dead_letter_listeners.append(callback)
        return lambda: self._dead_letter_listeners.remove(callback)

    async def close(self) -> None:
        """Close every subscription, consumer and connection. Idempotent."""
        if self._closed:
            return
        self._closed = True
        for feed in list(self._owned):
            await feed.close()
        await self._disconnect()

    def _check_open(self) -> None:
        if self._closed:
            raise TransportError(f"transport {safe_url(self.url)} is closed")

    async def publish(
        self,
        exchange: str,
        routing_key: str,
        body: bytes,
        *,
        headers: Headers | None = None,
        persistent: bool = False,
        mandatory: bool = False,
        correlation_id: str | None = None,
        reply_to: str | None = None,
        message_id: str | None = None,
        content_type: str = JSON_CONTENT_TYPE,
        expiration: float | None = None,
    ) -> None:
        """Publish ``body``; returns once the bus has taken responsibility for it.

        With ``mandatory``, a message that reaches no queue raises
        :class:`~jupiter_bus.errors.Unroutable`. On AMQP the broker confirms each
        publish; ``persistent`` messages survive a broker restart in durable queues.
        With ``expiration`` (seconds, ``>= 0``), a message still in a queue after that
        long is never delivered: RabbitMQ dead-letters it to the queue's
        ``x-dead-letter-exchange`` (work queues: ``jupiter.dead``), the in-memory bus
        does the same when it would deliver it.
        """
        self._check_open()
        if expiration is not None:
            expiration = _check_expiration(expiration)
        if headers:
            _check_headers(headers)
        await self._send(
            Outgoing(  # positional, in field order: keywords cost 0.25 us a publish
                exchange,
                routing_key,
                body,
                headers,
                persistent,
                mandatory,
                correlation_id,
                reply_to,
                message_id,
                content_type,
                expiration,
            )
        )

    async def request(
        self,
        exchange: str,
        routing_key: str,
        body: bytes,
        *,
        timeout: float,
        headers: Headers | None = None,
        persistent: bool = True,
        mandatory: bool = True,
        correlation_id: str | None = None,
        expiration: float | None = None,
    ) -> Envelope:
        """Publish ``body`` with a private ``reply_to`` and await the one reply.

        Raises :class:`~jupiter_bus.errors.RequestTimeout` when no reply arrives
        within ``timeout`` seconds and :class:`~jupiter_bus.errors.Unroutable` when
        the request reaches no queue. ``expiration`` works as in :meth:`publish` (a
        request nobody took in time is then never delivered).
        """
        self._check_open()
        if expiration is not None:
            expiration = _check_expiration(expiration)
        if headers:
            _check_headers(headers)
        correlation_id = correlation_id or uuid.uuid4().hex
        waiter: asyncio.Future[Envelope] = asyncio.get_running_loop().create_future()
        reply_to = await self._expect_reply(correlation_id, waiter)
        message = Outgoing(
            exchange,
            routing_key,
            body,
            headers,
            persistent,
            mandatory,
            correlation_id,
            reply_to,
            None,
            JSON_CONTENT_TYPE,
            expiration,
        )
        try:
            await self._send_request(message)
            return await await_reply(waiter, timeout, exchange, routing_key)
        finally:
            self._forget_reply(reply_to, correlation_id)

    async def reply(
        self,
        request: Envelope,
        body: bytes,
        *,
        headers: Headers | None = None,
        correlation_id: str | None = None,
    ) -> None:
        """Send ``body`` to the ``reply_to`` of ``request`` with its correlation id.

        A request without ``reply_to`` gets nothing; a reply that finds no listener
        is dropped (the requester has gone).
        """
        if not request.reply_to:
            return
        await self.publish(
            "",
            request.reply_to,
            body,
            headers=headers,
            persistent=True,  # a durable completion queue keeps it across broker restarts
            correlation_id=correlation_id or request.correlation_id,
        )

    async def dead_letter(
        self, envelope: Envelope, reason: str, *, body: bytes | None = None
    ) -> None:
        """Republish ``envelope`` to ``jupiter.dead`` with ``reason`` in ``x-jupiter-error``.

        Used for messages a consumer cannot handle; for work-queue deliveries use
        :meth:`Delivery.dead_letter`, which also acks. Without ``body``, the copy is the
        original body with any password removed (:func:`~jupiter_bus.messages.redact`).
        """
        headers: dict[str, HeaderValue] = {
            k: v for k, v in envelope.headers.items() if isinstance(v, str | int | float | bool)
        }
        headers[ERROR_HEADER] = reason[:MAX_REASON_CHARS]
        headers[ORIGINAL_EXCHANGE_HEADER] = envelope.exchange
        headers[ORIGINAL_ROUTING_KEY_HEADER] = envelope.routing_key
        for listener in list(self._dead_letter_listeners):
            try:
                listener(envelope, reason[:MAX_REASON_CHARS])
            except Exception:
                log.exception("dead-letter listener failed")
        held_back = self._dead_log.take()
        log.log(
            logging.DEBUG if held_back is None else logging.WARNING,
            "dead-lettering message from %s/%s: %s%s",
            envelope.exchange or "(default)",
            envelope.routing_key,
            headers[ERROR_HEADER],
            f" ({held_back} more dead-lettered since, logged at DEBUG only)" if held_back else "",
        )
        await self.publish(
            DEAD_EXCHANGE,
            envelope.routing_key,
            redact(envelope.body) if body is None else body,
            headers=headers,
            persistent=True,
            correlation_id=envelope.correlation_id,
            message_id=envelope.message_id,
            content_type=envelope.content_type or JSON_CONTENT_TYPE,
        )

    async def declare_queue(
        self,
        name: str,
        *,
        bindings: Sequence[tuple[str, str]] = (),
        arguments: Mapping[str, HeaderValue] | None = None,
    ) -> None:
        """Declare a durable queue (idempotent) bound by (exchange, routing key) pairs."""
        self._check_open()
        await self._declare_queue(name, bindings, arguments or {})

    @abc.abstractmethod
    async def delete_queue(self, name: str) -> None:
        """Delete a queue and what it holds; no error when it does not exist."""

    async def queue_length(self, name: str) -> int:
        """Number of messages ready in a queue (not counting unacked ones)."""
        return (await self.queue_stats(name)).messages

    @abc.abstractmethod
    async def queue_stats(self, name: str) -> QueueStats:
        """Messages ready in a queue and its consumers; :class:`TransportError` if none."""

    async def declare_work_queue(self, node: str, options: WorkQueueOptions | None = None) -> str:
        """Declare ``jupiter.transfer.<node>`` bound to ``jupiter.transfers``; return its name."""
        name = work_queue(check_node(node))
        await self.declare_queue(
            name,
            bindings=[(TRANSFERS_EXCHANGE, node)],
            arguments=(options or WorkQueueOptions()).arguments(),
        )
        return name

    def subscribe(
        self,
        patterns: Sequence[str],
        *,
        exchange: str = EVENTS_EXCHANGE,
        max_backlog: int = DEFAULT_MAX_BACKLOG,
        max_backlog_bytes: int = DEFAULT_MAX_BACKLOG_BYTES,
        max_age: float | None = DEFAULT_MAX_EVENT_AGE,
    ) -> Subscription:
        """A subscription to ``exchange`` (default ``jupiter.events``) by topic patterns.

        ``*`` matches exactly one dot-separated word and ``#`` zero or more, as in
        RabbitMQ. Use it with ``async with``. A subscriber more than ``max_backlog``
        messages or ``max_backlog_bytes`` of bodies behind loses the oldest (RabbitMQ's
        ``x-max-length`` and ``x-max-length-bytes``, drop-head), and an event left unread
        ``max_age`` seconds is dropped (``x-message-ttl``; ``None``: kept however old).
        """
        self._check_open()
        if max_age is not None and not 0 < max_age < float("inf"):
            raise TransportError(f"max_age must be a finite number of seconds > 0, got {max_age}")
        return self._subscription(
            SubscriptionSpec(tuple(patterns), exchange, max_backlog, max_backlog_bytes, max_age)
        )

    def consume(self, queue: str, *, prefetch: int = 16) -> Consumer:
        """A consumer of the work queue ``queue``; use it with ``async with``."""
        self._check_open()
        return self._consumer(queue, prefetch)

    # What an implementation fills in.

    @abc.abstractmethod
    def _send(self, message: Outgoing) -> Awaitable[None]:
        """Put ``message`` on the bus; done once the bus has taken responsibility for it.

        Awaited at once: it may return a deeper call's awaitable (a coroutine fewer).
        """

    def _send_request(self, message: Outgoing) -> Awaitable[None]:
        """Put a request on the bus (after :meth:`_expect_reply`); like any message here."""
        return self._send(message)

    @abc.abstractmethod
    async def _expect_reply(self, correlation_id: str, waiter: asyncio.Future[Envelope]) -> str:
        """Resolve ``waiter`` with the reply to ``correlation_id``; return its ``reply_to``."""

    @abc.abstractmethod
    def _forget_reply(self, reply_to: str, correlation_id: str) -> None:
        """Stop listening for that reply (answered, timed out or failed)."""

    @abc.abstractmethod
    async def _declare_queue(
        self, name: str, bindings: Sequence[tuple[str, str]], arguments: Mapping[str, HeaderValue]
    ) -> None:
        """Declare a durable queue with ``arguments`` and bind it (see :meth:`declare_queue`)."""

    @abc.abstractmethod
    def _subscription(self, spec: SubscriptionSpec) -> Subscription:
        """A new, not yet started subscription."""

    @abc.abstractmethod
    def _consumer(self, queue: str, prefetch: int) -> Consumer:
        """A new, not yet started consumer of ``queue`` (``prefetch`` not yet checked)."""

    async def _disconnect(self) -> None:  # noqa: B027 - nothing to release by default
        """Release connections and waiters once every feed is closed."""


class _LogThrottle:
    """At most ``burst`` WARNING lines per ``seconds``: a flood of bad messages must not
    flood the log (100k dead letters were 100k lines). :meth:`take` answers how many
    were held back since the last line allowed (0: none), or None when this one is."""

    def __init__(self, burst: int = 10, seconds: float = 10.0) -> None:
        self._burst, self._seconds = burst, seconds
        self._window_start = -math.inf
        self._used = 0
        self._held = 0

    def take(self) -> int | None:
        now = time.monotonic()
        if now - self._window_start >= self._seconds:
            self._window_start, self._used = now, 0
        if self._used >= self._burst:
            self._held += 1
            return None
        self._used += 1
        held, self._held = self._held, 0
        return held


async def await_reply(
    waiter: asyncio.Future[Envelope], timeout: float, exchange: str, routing_key: str
) -> Envelope:
    """Wait for a request's reply; :class:`RequestTimeout` after ``timeout`` seconds.

    ``asyncio.timeout`` rather than ``wait_for``: no extra task per request.
    """
    try:
        async with asyncio.timeout(timeout):
            return await waiter
    except TimeoutError:
        raise RequestTimeout(
            f"no reply to the request sent to {exchange!r}/{routing_key!r} within {timeout:g} s"
        ) from None
