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

from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar, overload

from .batch import BATCH_CONTENT_TYPE, BATCH_MAGIC, LinkBatch, decode_batch, is_batch
from .errors import MessageError
from .messages import Message, decode, redact
from .transport import Delivery, Envelope, Subscription, Transport

__all__ = [
    "decode_delivery",
    "decode_event",
    "decoded_events",
    "decoded_events_and_batches",
]

M = TypeVar("M", bound=Message)
T = TypeVar("T")


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


def decode_event(envelope: Envelope) -> Message | LinkBatch:
    """Decode an event: a message of the contract, or a ``network.batch`` (either encoding).

    Raises :class:`~jupiter_bus.errors.MessageError` for anything else.
    """
    body = envelope.body
    if envelope.content_type == BATCH_CONTENT_TYPE or body[:4] == BATCH_MAGIC:
        return decode_batch(body)
    try:
        return decode(body)
    except MessageError as exc:
        if exc.field == "type" and is_batch(body):
            return decode_batch(body)
        raise


def decoded_events(
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
    return _dead_lettering(transport, subscription, lambda e: decode(e.body, expected))


def decoded_events_and_batches(
    transport: Transport, subscription: Subscription
) -> AsyncIterator[tuple[Envelope, Message | LinkBatch]]:
    """Like :func:`decoded_events`, also yielding ``network.batch`` bodies as
    :class:`~jupiter_bus.batch.LinkBatch` (:func:`decode_event`)."""
    return _dead_lettering(transport, subscription, decode_event)


async def _dead_lettering(
    transport: Transport, subscription: Subscription, read: Callable[[Envelope], T]
) -> AsyncIterator[tuple[Envelope, T]]:
    """``(envelope, read(envelope))`` for each event; one ``read`` refuses is dead-lettered."""
    async for envelope in subscription:
        try:
            message = read(envelope)
        except MessageError as exc:
            await transport.dead_letter(envelope, str(exc), body=redact(envelope.body))
            continue
        yield envelope, message
