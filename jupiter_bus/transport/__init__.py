"""Transports: the bus beneath jupiter-bus, selected by URL.

- ``memory://name``: in-process (the embedded default; no broker needed);
- ``amqp://user:pass@host:port/vhost`` and ``amqps://...`` (TLS): RabbitMQ.

Example::

    from jupiter_bus.transport import connect

    bus = await connect("memory://demo")
    try:
        await bus.publish("jupiter.events", "resource.node1", body)
    finally:
        await bus.close()
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from ..errors import InvalidURL
from .base import (
    JSON_CONTENT_TYPE,
    Consumer,
    Delivery,
    Envelope,
    Feed,
    Outgoing,
    QueueStats,
    Subscription,
    SubscriptionSpec,
    Transport,
    WorkQueueOptions,
    topic_matches,
)

__all__ = [
    "JSON_CONTENT_TYPE",
    "Consumer",
    "Delivery",
    "Envelope",
    "Feed",
    "Outgoing",
    "QueueStats",
    "Subscription",
    "SubscriptionSpec",
    "Transport",
    "WorkQueueOptions",
    "connect",
    "create",
    "topic_matches",
]


def create(url: str, **options: Any) -> Transport:
    """Build (without connecting) the transport for ``url``.

    ``options`` go to the transport class (e.g. ``connection_name`` for AMQP).
    """
    scheme = urlsplit(url).scheme
    if scheme == "memory":
        from .memory import MemoryTransport

        return MemoryTransport(url, connection_name=options.get("connection_name"))
    if scheme in ("amqp", "amqps"):
        from .amqp import AmqpTransport

        return AmqpTransport(url, **options)
    raise InvalidURL(
        f"unknown bus URL scheme {scheme!r}: use memory://name, amqp://... or amqps://..."
    )


async def connect(url: str, **options: Any) -> Transport:
    """Build the transport for ``url``, connect it and declare the contract's topology."""
    transport = create(url, **options)
    try:
        await transport.connect()
    except BaseException:
        await transport.close()
        raise
    return transport
