"""One contract, two transports: every test here runs on memory:// and on RabbitMQ."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator

import pytest

from jupiter_bus.errors import RequestTimeout, TransportError, Unroutable
from jupiter_bus.topology import (
    DEAD_EXCHANGE,
    ERROR_HEADER,
    EVENTS_EXCHANGE,
    ORIGINAL_EXCHANGE_HEADER,
    ORIGINAL_ROUTING_KEY_HEADER,
    TRANSFERS_EXCHANGE,
)
from jupiter_bus.transport import Consumer, Delivery, Envelope, Subscription, Transport
from jupiter_bus.transport.base import QueueStats, WorkQueueOptions, topic_matches

from .conftest import TransportFactory

WAIT = 5.0


async def next_within(feed: Subscription | Consumer, seconds: float = WAIT) -> Envelope:
    if isinstance(feed, Consumer):
        delivery: Delivery = await asyncio.wait_for(anext(feed), seconds)
        return delivery.envelope
    envelope: Envelope = await asyncio.wait_for(anext(feed), seconds)
    return envelope


async def nothing_within(feed: Subscription | Consumer, seconds: float = 0.3) -> None:
    task = asyncio.ensure_future(anext(feed))
    done, _ = await asyncio.wait({task}, timeout=seconds)
    if done:
        pytest.fail(f"expected nothing, got {task.result()!r}")
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


@pytest.fixture
async def work_queue(transport: Transport, unique: str) -> AsyncIterator[str]:
    """A fresh node's work queue, deleted after the test."""
    name = await transport.declare_work_queue(f"node-{unique}")
    yield name
    await transport.delete_queue(name)


async def publish_job(transport: Transport, node: str, body: bytes, **kwargs: object) -> None:
    await transport.publish(
        TRANSFERS_EXCHANGE,
        node,
        body,
        persistent=True,
        mandatory=True,
        **kwargs,  # type: ignore[arg-type]
    )


PATTERNS = ["a.*", "a.#", "#", "*.b.*", "a.*.c", "#.c", "a", "*", "a.#.c"]
KEYS = ["a", "a.b", "a.b.c", "x.b.y", "c", "a.x.y.c", "b.b.b", "a.c"]


async def test_topic_patterns_match_exactly_as_rabbitmq_does(
    transport: Transport, unique: str
) -> None:
    prefix = f"t{unique}"
    subs = [
        transport.subscribe([f"{prefix}.{p}", f"end.{unique}.{i}"]) for i, p in enumerate(PATTERNS)
    ]
    for sub in subs:
        await sub.start()
    for key in KEYS:
        await transport.publish(EVENTS_EXCHANGE, f"{prefix}.{key}", key.encode())
    for i in range(len(PATTERNS)):
        await transport.publish(EVENTS_EXCHANGE, f"end.{unique}.{i}", b"end")
    for i, (pattern, sub) in enumerate(zip(PATTERNS, subs, strict=True)):
        got: list[str] = []
        while True:
            envelope = await next_within(sub)
            if envelope.routing_key == f"end.{unique}.{i}":
                break
            if envelope.routing_key.startswith(f"{prefix}."):
                got.append(envelope.body.decode())
        expected = [k for k in KEYS if topic_matches(f"{prefix}.{pattern}", f"{prefix}.{k}")]
        assert got == expected, pattern
        await sub.close()


async def test_events_from_one_publisher_arrive_in_order(
    transport: Transport, make_transport: TransportFactory, unique: str
) -> None:
    publisher = await make_transport()
    async with transport.subscribe([f"resource.{unique}"]) as feed:
        for i in range(300):
            await publisher.publish(EVENTS_EXCHANGE, f"resource.{unique}", str(i).encode())
        got = [int((await next_within(feed)).body) for _ in range(300)]
    assert got == list(range(300))


async def test_subscription_carries_properties_and_stops_after_close(
    transport: Transport, unique: str
) -> None:
    feed = transport.subscribe([f"network.{unique}.*"])
    async with feed:
        await transport.publish(
            EVENTS_EXCHANGE,
            f"network.{unique}.n2",
            b'{"x": 1}',
            headers={"h": "v"},
            correlation_id="c1",
            message_id="m1",
        )
        envelope = await next_within(feed)
    assert envelope.body == b'{"x": 1}'
    assert envelope.exchange == EVENTS_EXCHANGE
    assert envelope.routing_key == f"network.{unique}.n2"
    assert envelope.headers["h"] == "v"
    assert (envelope.correlation_id, envelope.message_id) == ("c1", "m1")
    assert envelope.content_type == "application/json"
    with pytest.raises(StopAsyncIteration):
        await anext(feed)


async def test_slow_subscriber_keeps_only_the_newest_backlog(
    transport: Transport, unique: str
) -> None:
    async with transport.subscribe([f"resource.{unique}"], max_backlog=10) as feed:
        for i in range(50):
            await transport.publish(EVENTS_EXCHANGE, f"resource.{unique}", str(i).encode())
        # publish a marker after the burst, then drain until it arrives
        await transport.publish(EVENTS_EXCHANGE, f"resource.{unique}", b"-1")
        got = []
        while (value := int((await next_within(feed)).body)) != -1:
            got.append(value)
    # what got through is bounded (prefetched plus backlog) and ends with the newest
    assert got[-1] == 49
    assert got == sorted(got)
    assert len(got) < 50 or transport.url.startswith("amqp")


async def test_a_subscription_backlog_is_bounded_in_bytes_too(
    transport: Transport, unique: str
) -> None:
    """Large bodies (batches) are bounded by bytes: 700 bodies of 1 KB, 10 KB allowed.

    On RabbitMQ up to the subscription's prefetch (512) has left the queue for the
    client before the bound applies; the rest is held to 10 KB, newest kept."""
    key, total = f"network-batch.{unique}", 700
    async with transport.subscribe([key], max_backlog_bytes=10_000) as feed:
        for i in range(total):
            await transport.publish(EVENTS_EXCHANGE, key, str(i).encode().ljust(1000))
        await transport.publish(EVENTS_EXCHANGE, key, b"-1")
        got = []
        while (value := int((await next_within(feed)).body)) != -1:
            got.append(value)
    assert got[-1] == total - 1
    assert got == sorted(got)
    limit = 10 if transport.url.startswith("memory") else 512 + 10
    assert len(got) <= limit


async def test_work_queue_respects_prefetch(transport: Transport, work_queue: str) -> None:
    node = work_queue.rsplit(".", 1)[1]
    for i in range(6):
        await publish_job(transport, node, str(i).encode())
    async with transport.consume(work_queue, prefetch=3) as consumer:
        taken = [await asyncio.wait_for(anext(consumer), WAIT) for _ in range(3)]
        assert [d.envelope.body for d in taken] == [b"0", b"1", b"2"]
        await nothing_within(consumer)
        await taken[0].ack()
        fourth = await asyncio.wait_for(anext(consumer), WAIT)
        assert fourth.envelope.body == b"3"
        for delivery in (*taken[1:], fourth):
            await delivery.ack()


async def test_unacked_job_is_redelivered_when_its_consumer_dies(
    transport: Transport, make_transport: TransportFactory, work_queue: str
) -> None:
    node = work_queue.rsplit(".", 1)[1]
    worker = await make_transport()
    await publish_job(transport, node, b"job-1", message_id="m-1")

    async def take_and_die() -> None:
        async with worker.consume(work_queue, prefetch=1) as consumer:
            delivery = await anext(consumer)
            assert delivery.envelope.body == b"job-1"
            assert not delivery.envelope.redelivered
            raise RuntimeError("worker crashed mid-job")

    with pytest.raises(RuntimeError, match="mid-job"):
        await asyncio.wait_for(take_and_die(), WAIT)
    async with transport.consume(work_queue, prefetch=1) as consumer:
        delivery = await asyncio.wait_for(anext(consumer), WAIT)
        assert delivery.envelope.body == b"job-1"
        assert delivery.envelope.message_id == "m-1"
        assert delivery.envelope.redelivered
        await delivery.ack()
        await nothing_within(consumer)


async def test_requeued_job_comes_back_and_acked_job_does_not(
    transport: Transport, work_queue: str
) -> None:
    node = work_queue.rsplit(".", 1)[1]
    await publish_job(transport, node, b"again")
    async with transport.consume(work_queue, prefetch=1) as consumer:
        first = await asyncio.wait_for(anext(consumer), WAIT)
        await first.requeue()
        second = await asyncio.wait_for(anext(consumer), WAIT)
        assert second.envelope.body == b"again"
        assert second.envelope.redelivered
        await second.ack()
        await second.ack()  # settling twice is harmless
        await nothing_within(consumer)
    assert await transport.queue_length(work_queue) == 0


async def test_jobs_survive_their_publisher_and_wait_for_a_worker(
    make_transport: TransportFactory, work_queue: str
) -> None:
    node = work_queue.rsplit(".", 1)[1]
    publisher = await make_transport()
    for i in range(3):
        await publish_job(publisher, node, f"job-{i}".encode())
    await publisher.close()
    worker = await make_transport()
    assert await worker.queue_length(work_queue) == 3
    async with worker.consume(work_queue, prefetch=8) as consumer:
        bodies = []
        for _ in range(3):
            delivery = await asyncio.wait_for(anext(consumer), WAIT)
            bodies.append(delivery.envelope.body)
            await delivery.ack()
    assert bodies == [b"job-0", b"job-1", b"job-2"]


async def test_malformed_job_is_dead_lettered_and_the_consumer_goes_on(
    transport: Transport, work_queue: str
) -> None:
    node = work_queue.rsplit(".", 1)[1]
    async with transport.subscribe(["#"], exchange=DEAD_EXCHANGE) as dead:
        await publish_job(transport, node, b"\xff not json", message_id="bad-1")
        await publish_job(transport, node, b'{"ok": true}', message_id="good-1")
        handled = []
        async with transport.consume(work_queue, prefetch=4) as consumer:
            for _ in range(2):
                delivery = await asyncio.wait_for(anext(consumer), WAIT)
                if not delivery.envelope.body.startswith(b"{"):
                    await delivery.dead_letter("not JSON: body must be a UTF-8 JSON object")
                    continue
                handled.append(delivery.envelope.message_id)
                await delivery.ack()
        assert handled == ["good-1"]
        while (letter := await next_within(dead)).message_id != "bad-1":
            pass
    assert letter.body == b"\xff not json"
    assert letter.headers[ERROR_HEADER] == "not JSON: body must be a UTF-8 JSON object"
    assert letter.headers[ORIGINAL_EXCHANGE_HEADER] == TRANSFERS_EXCHANGE
    assert letter.headers[ORIGINAL_ROUTING_KEY_HEADER] == node
    assert await transport.queue_length(work_queue) == 0


async def test_dead_letter_can_replace_the_body(transport: Transport, unique: str) -> None:
    async with transport.subscribe(["#"], exchange=DEAD_EXCHANGE) as dead:
        async with transport.subscribe([f"resource.{unique}"]) as feed:
            await transport.publish(
                EVENTS_EXCHANGE, f"resource.{unique}", b'{"password": "x"}', message_id=unique
            )
            event = await next_within(feed)
            await transport.dead_letter(event, "unknown type", body=b"{}")
        while (letter := await next_within(dead)).message_id != unique:
            pass
    assert letter.body == b"{}"
    assert letter.headers[ERROR_HEADER] == "unknown type"
    assert letter.headers[ORIGINAL_EXCHANGE_HEADER] == EVENTS_EXCHANGE


async def test_a_flood_of_dead_letters_is_logged_in_a_few_lines_and_all_kept(
    transport: Transport, unique: str, caplog: pytest.LogCaptureFixture
) -> None:
    count = 200
    async with transport.subscribe(["#"], exchange=DEAD_EXCHANGE) as dead:
        event = Envelope(
            body=b"not json", exchange=EVENTS_EXCHANGE, routing_key=f"resource.{unique}"
        )
        with caplog.at_level(logging.WARNING, logger="jupiter_bus.transport.base"):
            for _ in range(count):
                await transport.dead_letter(event, "body is not valid JSON")
        mine = 0
        while mine < count:
            if (await next_within(dead)).routing_key == f"resource.{unique}":
                mine += 1
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert 1 <= len(warnings) <= 10  # each of the 200 is still in jupiter.dead
    assert "body is not valid JSON" in warnings[0].getMessage()


async def serve_echo(transport: Transport, queue: str, replies: int) -> None:
    async with transport.consume(queue, prefetch=16) as consumer:
        for _ in range(replies):
            delivery = await anext(consumer)
            await transport.reply(delivery.envelope, b"echo:" + delivery.envelope.body)
            await delivery.ack()


async def test_request_gets_its_own_reply(
    transport: Transport, make_transport: TransportFactory, work_queue: str
) -> None:
    node = work_queue.rsplit(".", 1)[1]
    server = asyncio.create_task(serve_echo(await make_transport(), work_queue, 20))
    try:
        replies = await asyncio.gather(
            *(
                transport.request(TRANSFERS_EXCHANGE, node, f"{i}".encode(), timeout=WAIT)
                for i in range(20)
            )
        )
        assert [r.body for r in replies] == [f"echo:{i}".encode() for i in range(20)]
        await asyncio.wait_for(server, WAIT)
    finally:
        server.cancel()
        await asyncio.gather(server, return_exceptions=True)


async def test_a_direct_reply_comes_after_the_ack_on_its_own(
    transport: Transport, make_transport: TransportFactory, work_queue: str, unique: str
) -> None:
    """``ack_and_reply``: a request's direct reply address gets its answer, the job is
    acked; a job whose ``reply_to`` is a queue is not a direct reply."""
    node = work_queue.rsplit(".", 1)[1]
    worker = await make_transport()
    async with worker.consume(work_queue, prefetch=4) as consumer:
        asked = asyncio.create_task(
            transport.request(TRANSFERS_EXCHANGE, node, b"q", timeout=WAIT, correlation_id="c1")
        )
        delivery = await asyncio.wait_for(anext(consumer), WAIT)
        assert delivery.direct_reply
        await delivery.ack_and_reply(b"answer")
        assert delivery.settled
        reply = await asyncio.wait_for(asked, WAIT)
        assert (reply.body, reply.correlation_id) == (b"answer", "c1")
        await publish_job(transport, node, b"j", reply_to=f"jupiter.completions.test-{unique}")
        queued = await asyncio.wait_for(anext(consumer), WAIT)
        assert not queued.direct_reply
        await queued.ack()
    assert await transport.queue_length(work_queue) == 0


async def test_request_without_answer_times_out(transport: Transport, work_queue: str) -> None:
    node = work_queue.rsplit(".", 1)[1]
    started = time.monotonic()
    with pytest.raises(RequestTimeout, match=r"within 0\.3 s"):
        await transport.request(TRANSFERS_EXCHANGE, node, b"anyone?", timeout=0.3)
    assert 0.25 < time.monotonic() - started < 3.0
    # the request itself stays queued for a worker that comes later
    assert await transport.queue_length(work_queue) == 1


async def test_expired_job_is_never_delivered_and_is_dead_lettered(
    transport: Transport, work_queue: str, unique: str
) -> None:
    node = work_queue.rsplit(".", 1)[1]
    async with transport.subscribe(["#"], exchange=DEAD_EXCHANGE) as dead:
        await publish_job(transport, node, b"late", message_id=f"late-{unique}", expiration=0.2)
        await publish_job(transport, node, b"kept", message_id=f"kept-{unique}", expiration=30)
        await asyncio.sleep(0.5)  # past the first one's time to live, with no consumer
        async with transport.consume(work_queue, prefetch=4) as consumer:
            delivery = await asyncio.wait_for(anext(consumer), WAIT)
            assert delivery.envelope.body == b"kept"
            await delivery.ack()
            await nothing_within(consumer)
        while (letter := await next_within(dead)).message_id != f"late-{unique}":
            pass
    assert letter.body == b"late"
    assert letter.headers["x-first-death-reason"] == "expired"
    assert letter.headers["x-first-death-queue"] == work_queue
    assert await transport.queue_length(work_queue) == 0


async def test_expired_request_is_not_delivered_to_a_late_worker(
    transport: Transport, make_transport: TransportFactory, work_queue: str
) -> None:
    node = work_queue.rsplit(".", 1)[1]
    with pytest.raises(RequestTimeout):
        await transport.request(TRANSFERS_EXCHANGE, node, b"anyone?", timeout=0.3, expiration=0.3)
    await asyncio.sleep(0.2)
    assert await transport.queue_length(work_queue) == 0
    worker = await make_transport()
    async with worker.consume(work_queue, prefetch=4) as consumer:
        await nothing_within(consumer)


async def test_expiration_must_be_a_finite_number_of_seconds(
    transport: Transport, work_queue: str
) -> None:
    node = work_queue.rsplit(".", 1)[1]
    for bad in (-1.0, float("inf"), float("nan")):
        with pytest.raises(TransportError, match="expiration"):
            await publish_job(transport, node, b"{}", expiration=bad)


async def test_headers_amqp_cannot_carry_are_refused_and_the_connection_lives_on(
    transport: Transport, unique: str
) -> None:
    """RabbitMQ closes the whole connection over a NaN header (INTERNAL_ERROR), and a
    robust connection retried that publish for 30 s: every feed of the process went down."""
    key = f"resource.h{unique}"
    async with transport.subscribe([key]) as feed:
        for bad in (float("nan"), float("inf"), 1e300, 2**64, [1, float("nan")]):
            with pytest.raises(TransportError, match="header 'x-bad'"):
                await transport.publish(EVENTS_EXCHANGE, key, b"{}", headers={"x-bad": bad})  # type: ignore[dict-item]
        await transport.publish(EVENTS_EXCHANGE, key, b"{}", headers={"x-ok": 1.5})
        envelope = await asyncio.wait_for(anext(feed), 5)
    assert envelope.headers["x-ok"] == 1.5


async def test_job_for_a_node_without_queue_is_unroutable(
    transport: Transport, unique: str
) -> None:
    with pytest.raises(Unroutable, match=f"ghost-{unique}"):
        await publish_job(transport, f"ghost-{unique}", b"{}")
    started = time.monotonic()
    with pytest.raises(Unroutable):
        await transport.request(TRANSFERS_EXCHANGE, f"ghost-{unique}", b"{}", timeout=10)
    assert time.monotonic() - started < 2.0
    # without mandatory an event nobody listens to is simply dropped
    await transport.publish(EVENTS_EXCHANGE, f"nobody.{unique}", b"{}")


async def test_work_queue_must_be_declared_alike_everywhere(
    transport: Transport, work_queue: str
) -> None:
    node = work_queue.rsplit(".", 1)[1]
    assert await transport.declare_work_queue(node) == work_queue  # idempotent
    with pytest.raises(TransportError, match="declare it alike"):
        await transport.declare_work_queue(
            node, WorkQueueOptions(queue_type="quorum", delivery_limit=3)
        )


async def test_consuming_a_missing_queue_is_a_clear_error(
    transport: Transport, unique: str
) -> None:
    with pytest.raises(TransportError, match="declare it before consuming"):
        async with transport.consume(f"jupiter.transfer.none-{unique}"):
            pass


async def test_closed_transport_refuses_work_and_ends_its_feeds(
    make_transport: TransportFactory, unique: str
) -> None:
    transport = await make_transport()
    feed = transport.subscribe([f"resource.{unique}"])
    await feed.start()
    waiting = asyncio.ensure_future(anext(feed))
    await asyncio.sleep(0.05)
    await transport.close()
    with pytest.raises(StopAsyncIteration):
        await asyncio.wait_for(waiting, WAIT)
    with pytest.raises(TransportError, match="closed"):
        await transport.publish(EVENTS_EXCHANGE, "resource.x", b"{}")


async def test_queue_stats_count_ready_messages_and_consumers(
    transport: Transport, make_transport: TransportFactory, work_queue: str, unique: str
) -> None:
    node = work_queue.rsplit(".", 1)[1]
    assert await transport.queue_stats(work_queue) == QueueStats(messages=0, consumers=0)
    for i in range(2):
        await publish_job(transport, node, str(i).encode())
    await eventually_stats(transport, work_queue, QueueStats(messages=2, consumers=0))
    worker = await make_transport()
    async with worker.consume(work_queue, prefetch=1) as consumer:
        delivery = await asyncio.wait_for(anext(consumer), WAIT)
        # one delivered (unacked, not counted), one ready; one consumer
        await eventually_stats(transport, work_queue, QueueStats(messages=1, consumers=1))
        await delivery.ack()
    await eventually_stats(transport, work_queue, QueueStats(messages=1, consumers=0))
    with pytest.raises(TransportError, match="no queue"):
        await transport.queue_stats(f"jupiter.transfer.none-{unique}")


async def eventually_stats(transport: Transport, queue: str, expected: QueueStats) -> None:
    """RabbitMQ counts asynchronously: wait (bounded) for ``expected``."""
    stats = None
    for _ in range(50):
        stats = await transport.queue_stats(queue)
        if stats == expected:
            return
        await asyncio.sleep(0.1)
    assert stats == expected
