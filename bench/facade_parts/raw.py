"""Raw aio-pika consumers, the baselines: a private queue consumed the way the facade's is."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Final

import aio_pika
from aio_pika.abc import (
    AbstractChannel,
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustConnection,
)

from jupiter_bus.topology import EVENTS_EXCHANGE

# The facade's AMQP subscription consumes with prefetch 512 and acks every 128
# deliveries (jupiter_bus.transport.amqp); the raw baseline uses the same settings.
SUBSCRIPTION_PREFETCH: Final = 512
ACK_EVERY: Final = 128


async def connection(url: str, role: str) -> AbstractRobustConnection:
    """A robust connection named ``bench/facade.py <role>`` on the broker.

    Example::

        consumer = await connection(url, "raw consumer")
    """
    return await aio_pika.connect_robust(
        url, client_properties={"connection_name": f"bench/facade.py {role}"}
    )


async def private_queue(
    connection: AbstractRobustConnection,
    on_message: Callable[[AbstractIncomingMessage], Awaitable[None]],
    *,
    bind: str | None = None,
    name: str | None = None,
    arguments: dict[str, Any] | None = None,
) -> tuple[AbstractChannel, AbstractQueue]:
    """An exclusive, auto-deleted queue (bound to ``bind`` on the events exchange, if
    given) consumed by ``on_message`` on a channel with the facade's prefetch.

    Example::

        channel, queue = await private_queue(conn, on_message, bind="network.*.*")
    """
    channel = await connection.channel(publisher_confirms=False)
    await channel.set_qos(prefetch_count=SUBSCRIPTION_PREFETCH)
    queue = await channel.declare_queue(name, exclusive=True, auto_delete=True, arguments=arguments)
    if bind is not None:
        await queue.bind(EVENTS_EXCHANGE, bind)
    await queue.consume(on_message)
    return channel, queue
