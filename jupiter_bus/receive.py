"""Receiving typed messages: decode each body, or dead-letter it with the reason.

The rule of the contract (DESIGN section 3, "Bad input"): a consumer that cannot
handle a message republishes it to ``jupiter.dead`` with ``x-jupiter-error`` (and no
password), acks it, and keeps consuming. These helpers apply that rule to work-queue
deliveries and to event subscriptions alike.

Example::

    async with bus.consume(work_queue("node1"), prefetch=4) as jobs:
        async for delivery in jobs:
            request = await decode_delivery(delivery, TransferRequest)
            if request is None:
                continue  # dead-lettered with its reason
            ...
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, TypeVar, overload

from .errors import MessageError
from .messages import Message, decode, redact
from .transport import Delivery, Envelope, Subscription, Transport

M = TypeVar("M", bound=Message)


@overload
async def decode_delivery(delivery: Delivery, expected: type[M]) -> M | None: ...
@overload
async def decode_delivery(delivery: Delivery, expected: None = None) -> Message | None: ...
async def decode_delivery(delivery: Delivery, expected: type[Any] | None = None) -> Message | None:
    """Decode a work-queue delivery; dead-letter it (and return ``None``) when it is bad."""
    try:
        return decode(delivery.envelope.body, expected)
    except MessageError as exc:
        await delivery.dead_letter(str(exc), body=redact(delivery.envelope.body))
        return None


async def decoded_events(
    transport: Transport,
    subscription: Subscription,
    expected: type[Message] | None = None,
) -> AsyncIterator[tuple[Envelope, Message]]:
    """Yield ``(envelope, message)`` from a subscription; bad events are dead-lettered.

    Example::

        async with bus.subscribe(["network.*.*"]) as feed:
            async for envelope, cost in decoded_events(bus, feed, LinkCost):
                ...
    """
    async for envelope in subscription:
        try:
            message = decode(envelope.body, expected)
        except MessageError as exc:
            await transport.dead_letter(envelope, str(exc), body=redact(envelope.body))
            continue
        yield envelope, message
