"""Bad input is dead-lettered with its reason and no password; consumers keep consuming."""

from __future__ import annotations

import asyncio
import logging

import orjson
import pytest

from jupiter_bus.messages import LinkCost, TransferRequest, encode
from jupiter_bus.receive import decode_delivery, decoded_events
from jupiter_bus.topology import (
    DEAD_EXCHANGE,
    ERROR_HEADER,
    EVENTS_EXCHANGE,
    ORIGINAL_ROUTING_KEY_HEADER,
    TRANSFERS_EXCHANGE,
    network_key,
)
from jupiter_bus.transport import Envelope, Subscription, Transport, connect

WAIT = 5.0


async def dead_letters(feed: Subscription, count: int) -> list[Envelope]:
    return [await asyncio.wait_for(anext(feed), WAIT) for _ in range(count)]


def request(**fields: object) -> TransferRequest:
    base: dict[str, object] = {
        "host": "127.0.0.1",
        "user": "jupiter",
        "password": "hunter2-secret",
        "source": "/data/a; rm -rf $(x)",
        "destination": "/data/b",
    }
    return TransferRequest(**{**base, **fields})  # type: ignore[arg-type]


async def test_bad_jobs_are_dead_lettered_without_password_and_work_goes_on(
    transport: Transport, unique: str
) -> None:
    node = f"rx-{unique}"
    queue = await transport.declare_work_queue(node)
    good = request()
    wrong_port = orjson.loads(encode(request()))
    wrong_port["port"] = "twenty-two"
    bodies = [b"not json at all", orjson.dumps(wrong_port), encode(good)]
    try:
        async with transport.subscribe(["#"], exchange=DEAD_EXCHANGE) as dead:
            for body in bodies:
                await transport.publish(TRANSFERS_EXCHANGE, node, body, persistent=True)
            handled = []
            async with transport.consume(queue, prefetch=2) as jobs:
                for _ in bodies:
                    delivery = await asyncio.wait_for(anext(jobs), WAIT)
                    job = await decode_delivery(delivery, TransferRequest)
                    if job is not None:
                        handled.append(job)
                        await delivery.ack()
            letters = [
                d
                for d in await dead_letters(dead, 2)
                if d.headers[ORIGINAL_ROUTING_KEY_HEADER] == node
            ]
        assert handled == [good]
        assert handled[0].source == "/data/a; rm -rf $(x)"
        assert len(letters) == 2
        assert letters[0].body == b"not json at all"
        assert "not valid JSON" in letters[0].headers[ERROR_HEADER]
        assert letters[1].headers[ERROR_HEADER].startswith("port")
        for letter in letters:
            assert b"hunter2-secret" not in letter.body
            assert "hunter2-secret" not in str(letter.headers)
        assert orjson.loads(letters[1].body)["port"] == "twenty-two"
        assert await transport.queue_length(queue) == 0
    finally:
        await transport.delete_queue(queue)


async def test_bad_events_are_dead_lettered_and_the_feed_goes_on(
    transport: Transport, unique: str
) -> None:
    key = network_key(f"a{unique}", f"b{unique}")
    cost = LinkCost(
        src=f"a{unique}",
        dst=f"b{unique}",
        a=0.0,
        b=0.01,
        c=3.0,
        samples=9,
        r2=0.9,
        min_kbit=8.0,
        max_kbit=800.0,
    )
    newer = orjson.loads(encode(cost))
    newer["v"] = 2
    async with (
        transport.subscribe(["#"], exchange=DEAD_EXCHANGE) as dead,
        transport.subscribe([key]) as feed,
    ):
        for body in (orjson.dumps(newer), b"[1, 2]", encode(cost)):
            await transport.publish(EVENTS_EXCHANGE, key, body)
        stream = decoded_events(transport, feed, LinkCost)
        envelope, message = await asyncio.wait_for(anext(stream), WAIT)
        assert message == cost
        assert envelope.routing_key == key
        reasons = [letter.headers[ERROR_HEADER] for letter in await dead_letters(dead, 2)]
    assert reasons[0].startswith("v")
    assert "object" in reasons[1]


@pytest.mark.amqp
async def test_debug_logging_never_shows_a_password_in_a_body(
    caplog: pytest.LogCaptureFixture, unique: str
) -> None:
    import jupiter_bus.transport.amqp  # noqa: F401 - importing it holds aiormq at INFO

    from .conftest import AMQP_URL

    body = encode(request(password=f"hunter2-{unique}"))
    with caplog.at_level(logging.DEBUG):  # as an application that logs everything would
        assert logging.getLogger().getEffectiveLevel() == logging.DEBUG
        transport = await connect(AMQP_URL)
        try:
            queue = await transport.declare_work_queue(f"log-{unique}")
            await transport.publish(TRANSFERS_EXCHANGE, f"log-{unique}", body, persistent=True)
            async with transport.consume(queue) as jobs:
                delivery = await asyncio.wait_for(anext(jobs), WAIT)
                assert delivery.envelope.body == body
                await delivery.ack()
            await transport.delete_queue(queue)
        finally:
            await transport.close()
    assert f"hunter2-{unique}" not in caplog.text
