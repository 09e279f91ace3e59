"""Connections killed from the server side: subscribers, workers and publishers recover.

aio-pika has had bugs here (issues #231, #626, #536: consumers not restored, objects
restored only while referenced); these tests prove ours come back by themselves.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from urllib.parse import urlsplit

import pytest

from jupiter_bus.agent import Agent
from jupiter_bus.errors import TransportError
from jupiter_bus.facade import JupiterInterface
from jupiter_bus.messages import ResourceSample, encode
from jupiter_bus.topology import EVENTS_EXCHANGE, TRANSFERS_EXCHANGE, resource_key
from jupiter_bus.transport import Transport, connect
from jupiter_bus.transport.amqp import AmqpTransport

from .conftest import AMQP_URL, amqp_url_via, eventually
from .proxy import TcpProxy

pytestmark = pytest.mark.amqp
WAIT = 20.0


def _rabbitmqctl_close(connection_name: str) -> int:
    listing = subprocess.run(
        ["rabbitmqctl", "list_connections", "pid", "client_properties", "-q", "--no-table-headers"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    closed = 0
    for line in listing.stdout.splitlines():
        pid, _, props = line.partition("\t")
        if f'{{"connection_name","{connection_name}"}}' in props:
            subprocess.run(
                ["rabbitmqctl", "close_connection", pid, "killed by test"],
                check=True,
                capture_output=True,
                timeout=60,
            )
            closed += 1
    return closed


Killer = Callable[[], Awaitable[int]]


@pytest.fixture(params=["tcp-proxy", "rabbitmqctl"])
async def victim(
    request: pytest.FixtureRequest, broker_proxy: TcpProxy, unique: str
) -> AsyncIterator[tuple[AmqpTransport, Killer]]:
    """A transport and a way to kill its connection from the other side."""
    name = f"victim {unique}"
    if request.param == "tcp-proxy":
        transport = AmqpTransport(
            amqp_url_via(broker_proxy.port), connection_name=name, reconnect_interval=0.2
        )

        async def kill() -> int:
            return broker_proxy.cut()
    else:
        if shutil.which("rabbitmqctl") is None or urlsplit(AMQP_URL).hostname not in (
            "127.0.0.1",
            "localhost",
        ):
            pytest.skip("rabbitmqctl for the local broker is not available")
        transport = AmqpTransport(AMQP_URL, connection_name=name, reconnect_interval=0.2)

        async def kill() -> int:
            return await asyncio.to_thread(_rabbitmqctl_close, name)

    await transport.connect()
    yield transport, kill
    await transport.close()


@pytest.fixture
async def observer() -> AsyncIterator[Transport]:
    transport = await connect(AMQP_URL, connection_name="observer")
    yield transport
    await transport.close()


async def _publish_until_seen(
    publisher: Transport, key: str, feed_next: Callable[[], Awaitable[bytes]]
) -> bytes:
    """Publish a probe every 200 ms until the feed yields one (the subscriber is back)."""
    received: asyncio.Task[bytes] = asyncio.ensure_future(feed_next())
    try:
        async with asyncio.timeout(WAIT):
            i = 0
            while not received.done():
                await publisher.publish(EVENTS_EXCHANGE, key, f"probe-{i}".encode())
                i += 1
                await asyncio.wait({received}, timeout=0.2)
        return received.result()
    finally:
        received.cancel()


async def test_subscriber_worker_and_publisher_recover_by_themselves(
    victim: tuple[AmqpTransport, Killer], observer: Transport, unique: str
) -> None:
    transport, kill = victim
    node = f"rc-{unique}"
    queue = await observer.declare_work_queue(node)
    try:
        async with (
            transport.subscribe([f"resource.{unique}"]) as feed,
            transport.consume(queue, prefetch=1) as consumer,
            observer.subscribe([f"network.{unique}.back"]) as observer_feed,
        ):
            await observer.publish(TRANSFERS_EXCHANGE, node, b"job-1", persistent=True)
            first = await asyncio.wait_for(anext(consumer), WAIT)
            assert first.envelope.body == b"job-1"
            assert not first.envelope.redelivered
            await observer.publish(EVENTS_EXCHANGE, f"resource.{unique}", b"before")
            assert (await asyncio.wait_for(anext(feed), WAIT)).body == b"before"

            assert await kill() >= 1
            await first.ack()  # lost with the connection: must not raise, job comes back

            async def feed_next() -> bytes:
                return (await anext(feed)).body

            assert (
                await _publish_until_seen(observer, f"resource.{unique}", feed_next)
            ).startswith(b"probe-")

            again = await asyncio.wait_for(anext(consumer), WAIT)
            assert again.envelope.body == b"job-1"
            assert again.envelope.redelivered
            await again.ack()
            await observer.publish(TRANSFERS_EXCHANGE, node, b"job-2", persistent=True)
            second = await asyncio.wait_for(anext(consumer), WAIT)
            assert second.envelope.body == b"job-2"
            await second.ack()

            await transport.publish(EVENTS_EXCHANGE, f"network.{unique}.back", b"from victim")
            assert (await asyncio.wait_for(anext(observer_feed), WAIT)).body == b"from victim"
        assert await observer.queue_length(queue) == 0
    finally:
        await observer.delete_queue(queue)


async def test_publish_during_an_outage_waits_for_the_connection(
    broker_proxy: TcpProxy, observer: Transport, unique: str
) -> None:
    transport = AmqpTransport(
        amqp_url_via(broker_proxy.port), reconnect_interval=0.2, publish_timeout=15
    )
    await transport.connect()
    try:
        async with observer.subscribe([f"resource.{unique}"]) as feed:
            broker_proxy.cut()
            await transport.publish(EVENTS_EXCHANGE, f"resource.{unique}", b"after-cut")
            assert (await asyncio.wait_for(anext(feed), WAIT)).body == b"after-cut"
        assert broker_proxy.connections >= 2
    finally:
        await transport.close()


async def test_queue_operations_during_an_outage_fail_as_transport_errors(
    broker_proxy: TcpProxy, observer: Transport, unique: str
) -> None:
    """``queue_stats`` and ``delete_queue`` while the connection is down raise
    TransportError (what callers handle, e.g. a facade deleting its completion queue on
    close), never aio-pika's ``RuntimeError`` for a closed connection; then work again."""
    queue = await observer.declare_work_queue(f"outage-{unique}")
    transport = AmqpTransport(amqp_url_via(broker_proxy.port), reconnect_interval=0.2)
    await transport.connect()
    try:
        for _ in range(3):
            broker_proxy.cut()
            for _ in range(20):
                with contextlib.suppress(TransportError):
                    await transport.queue_stats(queue)
                await transport.delete_queue(f"jupiter.transfer.none-{unique}")
                await asyncio.sleep(0.01)
        await eventually(lambda: not transport.connection.is_closed, WAIT)
        for _ in range(100):
            with contextlib.suppress(TransportError):
                assert (await transport.queue_stats(queue)).messages == 0
                break
            await asyncio.sleep(0.05)
        else:
            pytest.fail("queue_stats never worked again")
    finally:
        await transport.close()
        await observer.delete_queue(queue)


async def test_request_works_again_after_reconnect(
    victim: tuple[AmqpTransport, Killer], observer: Transport, unique: str
) -> None:
    transport, kill = victim
    node = f"rr-{unique}"
    queue = await observer.declare_work_queue(node)

    async def serve() -> None:
        async with observer.consume(queue, prefetch=4) as consumer:
            async for delivery in consumer:
                await observer.reply(delivery.envelope, b"pong")
                await delivery.ack()

    server = asyncio.create_task(serve())
    try:
        reply = await transport.request(TRANSFERS_EXCHANGE, node, b"ping", timeout=WAIT)
        assert reply.body == b"pong"
        await kill()
        async with asyncio.timeout(WAIT):
            while True:
                try:
                    reply = await transport.request(TRANSFERS_EXCHANGE, node, b"ping", timeout=1)
                    break
                except Exception:
                    await asyncio.sleep(0.2)
        assert reply.body == b"pong"
    finally:
        server.cancel()
        await asyncio.gather(server, return_exceptions=True)
        await observer.delete_queue(queue)


def _sample(node: str, cpu: float) -> bytes:
    return encode(
        ResourceSample(
            node=node,
            cpu_percent=cpu,
            cpu_count=1,
            memory_percent=1.0,
            memory_total_bytes=1,
            memory_available_bytes=1,
        )
    )


async def test_facade_asks_for_a_snapshot_again_after_reconnecting(
    broker_proxy: TcpProxy, observer: Transport, unique: str
) -> None:
    node = f"sn-{unique}"
    agent = Agent(node, observer, {})
    running = asyncio.create_task(agent.run())
    await asyncio.wait_for(agent.started(), WAIT)
    assert agent.context is not None

    def sample(cpu: float) -> bytes:
        return _sample(node, cpu)

    await agent.context.publish_event(resource_key(node), sample(11.0))
    transport = AmqpTransport(amqp_url_via(broker_proxy.port), reconnect_interval=0.2)
    await transport.connect()
    try:
        async with JupiterInterface(transport) as facade:
            data = await facade.get_resource_data(nodes=[node], timeout=WAIT)
            assert data[node].cpu_percent == 11.0
            broker_proxy.cut()
            # published while the facade is cut off: its subscription never sees it
            await agent.context.publish_event(resource_key(node), sample(77.0))
            await eventually(lambda: facade.resources.snapshot()[node].cpu_percent == 77.0, WAIT)
    finally:
        await transport.close()
        agent.stop()
        await asyncio.wait_for(running, WAIT)


async def test_a_connection_gone_silent_is_noticed_by_heartbeats_and_replaced(
    broker_proxy: TcpProxy, observer: Transport, unique: str
) -> None:
    """The broker's side falls silent without closing (a partition, a machine gone): the
    facade (``heartbeat=1``) notices by missed heartbeats, connects again,
    and its state catches up with what was published meanwhile."""
    node = f"hb-{unique}"
    agent = Agent(node, observer, {})
    running = asyncio.create_task(agent.run())
    await asyncio.wait_for(agent.started(), WAIT)
    assert agent.context is not None
    transport = AmqpTransport(amqp_url_via(broker_proxy.port), reconnect_interval=0.2, heartbeat=1)
    await transport.connect()
    back: list[float] = []
    transport.on_reconnect(lambda: back.append(time.monotonic()))
    try:
        async with JupiterInterface(transport) as facade:
            await agent.context.publish_event(resource_key(node), _sample(node, 11.0))
            data = await facade.get_resource_data(nodes=[node], timeout=WAIT)
            assert data[node].cpu_percent == 11.0
            assert broker_proxy.freeze() >= 1
            frozen = time.monotonic()
            await agent.context.publish_event(resource_key(node), _sample(node, 77.0))
            await eventually(lambda: facade.resources.snapshot()[node].cpu_percent == 77.0, WAIT)
            caught_up = time.monotonic() - frozen
            assert back, "the facade never reconnected"
            print(
                f"\nconnection silent: noticed and replaced in {back[0] - frozen:.2f} s "
                f"(heartbeat {transport.heartbeat} s), state caught up in {caught_up:.2f} s"
            )
    finally:
        await transport.close()
        agent.stop()
        await asyncio.wait_for(running, WAIT)


@pytest.mark.parametrize(("query", "negotiated"), [("", 10), ("heartbeat=5", 5)])
async def test_the_heartbeat_is_ten_seconds_unless_the_url_sets_it(
    query: str, negotiated: int
) -> None:
    url = AMQP_URL + ("&" if "?" in AMQP_URL else "?") + query if query else AMQP_URL
    transport = AmqpTransport(url)
    await transport.connect()
    try:
        underlay = transport.connection.transport
        assert underlay is not None
        tune = underlay.connection.connection_tune
        assert tune.heartbeat == negotiated
    finally:
        await transport.close()
