"""Frozen values that cross the transport seam, with no behaviour beyond their own.

- :class:`Envelope`: a message as received; :class:`Outgoing`: a message to publish;
- :class:`SubscriptionSpec` and :class:`WorkQueueOptions`: what a transport is asked
  to declare for a subscription or a work queue.

Everything here is re-exported by :mod:`jupiter_bus.transport.base`.

Example::

    Outgoing("jupiter.events", "resource.node1", b"{}")
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

from ..topology import DEAD_EXCHANGE, EVENTS_EXCHANGE

__all__ = [
    "DEFAULT_MAX_BACKLOG",
    "DEFAULT_MAX_BACKLOG_BYTES",
    "DEFAULT_MAX_EVENT_AGE",
    "JSON_CONTENT_TYPE",
    "Envelope",
    "ExchangeType",
    "HeaderValue",
    "Headers",
    "Outgoing",
    "QueueStats",
    "QueueType",
    "SubscriptionSpec",
    "WorkQueueOptions",
]

HeaderValue = str | int | float | bool | None
Headers = Mapping[str, HeaderValue]
ExchangeType = Literal["topic", "direct", "fanout"]
QueueType = Literal["classic", "quorum"]

JSON_CONTENT_TYPE = "application/json"
DEFAULT_MAX_BACKLOG = 100_000
"""Default bound on a subscription's queue: older events are dropped beyond it."""
DEFAULT_MAX_BACKLOG_BYTES = 256 * 1024 * 1024
"""Bodies a subscription's queue holds before dropping its oldest (a 1,000-node snapshot
answer is about 64 MB)."""
DEFAULT_MAX_EVENT_AGE = 600.0
"""Seconds an event waits in a subscription's queue before it is dropped unread
(RabbitMQ's ``x-message-ttl``): a stuck reader does not come back to stale state."""


@dataclass(frozen=True, slots=True)
class Envelope:
    """A message as received: its body and the properties that travelled with it.

    Example::

        envelope.routing_key  # 'resource.node1'
        decode(envelope.body)
    """

    body: bytes
    exchange: str
    routing_key: str
    headers: Mapping[str, Any] = field(default_factory=dict)
    content_type: str | None = None
    correlation_id: str | None = None
    reply_to: str | None = None
    message_id: str | None = None
    redelivered: bool = False


class Outgoing(NamedTuple):
    """A message on its way out: what :meth:`Transport.publish` hands an implementation.

    One is built per publish, so it is an immutable named tuple rather than a frozen
    dataclass (which sets each field through ``object.__setattr__``): 0.3 instead of
    1.1 us to build, on an in-memory publish of about 2 us. A transport reads the
    fields and turns them into its own wire message.

    Example::

        Outgoing("jupiter.transfers", "node1", body, persistent=True, mandatory=True)

    ``expiration`` (seconds, ``None``: never) is the message's time to live in a queue:
    a message not delivered to a consumer within it is never delivered (RabbitMQ's
    per-message ``expiration``; the broker dead-letters it if its queue says where).
    """

    exchange: str
    routing_key: str
    body: bytes
    headers: Headers | None = None
    persistent: bool = False
    mandatory: bool = False
    correlation_id: str | None = None
    reply_to: str | None = None
    message_id: str | None = None
    content_type: str = JSON_CONTENT_TYPE
    expiration: float | None = None


@dataclass(frozen=True, slots=True)
class SubscriptionSpec:
    """What a subscription listens to: topic patterns on one exchange, and its bounds.

    ``max_backlog`` and ``max_backlog_bytes`` bound its private queue (drop-head);
    ``max_age`` (seconds, ``None``: no limit) drops events left unread that long.

    Example::

        SubscriptionSpec(("network.#",), max_backlog=1_000)
    """

    patterns: tuple[str, ...]
    exchange: str = EVENTS_EXCHANGE
    max_backlog: int = DEFAULT_MAX_BACKLOG
    max_backlog_bytes: int = DEFAULT_MAX_BACKLOG_BYTES
    max_age: float | None = DEFAULT_MAX_EVENT_AGE

    def arguments(self) -> dict[str, HeaderValue]:
        """The AMQP ``x-`` arguments of the subscription's private queue."""
        args: dict[str, HeaderValue] = {
            "x-max-length": self.max_backlog,
            "x-max-length-bytes": self.max_backlog_bytes,
        }
        if self.max_age is not None:
            args["x-message-ttl"] = round(self.max_age * 1000)
        return args


@dataclass(frozen=True, slots=True)
class QueueStats:
    """What a queue holds and who reads it (:meth:`Transport.queue_stats`).

    Example::

        stats = await bus.queue_stats("jupiter.transfer.node1")
        stats.messages, stats.consumers   # (0, 1): nothing waiting, one worker
    """

    messages: int
    """Messages ready for delivery (not counting delivered, unacked ones)."""
    consumers: int
    """Consumers attached to the queue."""


@dataclass(frozen=True, slots=True)
class WorkQueueOptions:
    """How work queues are declared; everything in one deployment must agree.

    ``queue_type`` is ``classic`` (the default) or ``quorum``; quorum queues take
    ``delivery_limit`` (RabbitMQ's ``x-delivery-limit``), after which a message that
    keeps coming back is dead-lettered by the broker itself.

    Example::

        WorkQueueOptions(queue_type="quorum", delivery_limit=5)
    """

    queue_type: QueueType = "classic"
    delivery_limit: int | None = None

    def arguments(self) -> dict[str, HeaderValue]:
        """The AMQP ``x-`` arguments for a work queue declared with these options."""
        args: dict[str, HeaderValue] = {"x-dead-letter-exchange": DEAD_EXCHANGE}
        if self.queue_type == "quorum":
            args["x-queue-type"] = "quorum"
            if self.delivery_limit is not None:
                args["x-delivery-limit"] = self.delivery_limit
        return args
