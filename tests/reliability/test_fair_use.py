"""Fair use of the broker (issue 12 item 9): a dead facade or agent leaves nothing growing.

- a facade SIGKILLed while holding a subscription and a default completion queue: the
  subscription queue (exclusive) goes with its connection, the completion queue once its
  ``x-expires`` has passed;
- an event queue's backlog is bounded by length and by age (``x-message-ttl``), on both buses;
- ``jupiter.dead`` keeps the contract's arguments, and is bounded by a policy, as
  docs/messages.md ("Fair use") says to set.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import aiormq
import pytest

from jupiter_bus.errors import TransportError
from jupiter_bus.topology import DEAD_EXCHANGE, DEAD_QUEUE, EVENTS_EXCHANGE
from jupiter_bus.transport import Transport, connect
from jupiter_bus.transport.memory import drop_memory_broker

from .test_bad_input import _rabbitmqctl, own_vhost

WAIT = 15.0

FACADE = """
import asyncio, sys
from jupiter_bus import JupiterInterface
from jupiter_bus.errors import Unreachable

async def main() -> None:
    async with JupiterInterface(sys.argv[1], snapshot=False, completion_expires=2.0) as bus:
        try:  # declares the default completion queue, then finds no worker
            await bus.submit_transfer("127.0.0.1", "x", None, "/a", "/b", via="nobody-here")
        except Unreachable:
            pass
        print(bus.completion_queue, bus._pump._subscription.name, flush=True)
        await asyncio.sleep(3600)

asyncio.run(main())
"""


@pytest.fixture
def vhost(unique: str) -> Iterator[str]:
    with own_vhost(unique) as url:
        yield url


async def exists(transport: Transport, queue: str) -> bool:
    try:
        await transport.queue_length(queue)
    except TransportError:
        return False
    except aiormq.exceptions.ChannelLockedResource:  # another connection's exclusive queue
        return True
    return True


def listed(vhost: str) -> set[str]:
    """The queues of ``vhost`` as the broker lists them: unlike a passive declare, asking
    does not count as using a queue (which would restart its ``x-expires``)."""
    out = subprocess.run(
        ["rabbitmqctl", "list_queues", "-p", vhost.rsplit("/", 1)[1], "name", "-q", "-s"],
        check=True, capture_output=True, text=True, timeout=60,
    ).stdout  # fmt: skip
    return set(out.split())


async def gone_after(vhost: str, queue: str, timeout: float) -> float:
    """Seconds until ``queue`` is no longer listed; fails after ``timeout``."""
    began = time.monotonic()
    while queue in await asyncio.to_thread(listed, vhost):
        if time.monotonic() - began > timeout:
            pytest.fail(f"{queue} still exists after {timeout:g} s")
        await asyncio.sleep(0.1)
    return time.monotonic() - began


@pytest.mark.amqp
async def test_a_killed_facade_leaves_no_queue_behind(vhost: str) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", FACADE, vhost, stdout=subprocess.PIPE
    )
    transport = await connect(vhost, connection_name="fair use")
    try:
        assert process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), WAIT)
        completions, subscription = line.decode().split()
        assert await exists(transport, completions)
        assert await exists(transport, subscription)
        os.kill(process.pid, signal.SIGKILL)
        await asyncio.wait_for(process.wait(), WAIT)
        sub_gone = await gone_after(vhost, subscription, WAIT)
        completion_gone = await gone_after(vhost, completions, WAIT)
        print(
            f"\nSIGKILLed facade: subscription queue gone after {sub_gone:.1f} s, "
            f"default completion queue (x-expires 2 s) after {sub_gone + completion_gone:.1f} s"
        )
    finally:
        if process.returncode is None:
            process.kill()
            await asyncio.wait_for(process.wait(), WAIT)
        await transport.close()


@pytest.mark.parametrize("bus", ["memory", pytest.param("amqp", marks=pytest.mark.amqp)])
async def test_an_event_queue_backlog_is_bounded_by_length_and_age(bus: str, unique: str) -> None:
    url = (
        f"memory://fair-{unique}"
        if bus == "memory"
        else os.environ.get("JUPITER_BUS_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
    )
    transport = await connect(url, connection_name="fair use")
    key = f"resource.fair{unique}"
    try:
        async with transport.subscribe([key], max_backlog=100, max_age=0.5) as feed:
            for k in range(1000):
                await transport.publish(EVENTS_EXCHANGE, key, b'{"k":%d}' % k)
            # On RabbitMQ the subscription's consumer holds its prefetch window (512,
            # unacked while unread) and the queue the newest 100 of the rest.
            held = await transport.queue_length(feed.name)
            assert held == 100
            await asyncio.sleep(1.0)
            aged = await transport.queue_length(feed.name)
            assert aged == 0
        print(f"\n{bus}: 1000 events to a reader that reads none: {held} kept, {aged} after 1 s")
    finally:
        await transport.close()
        if bus == "memory":
            drop_memory_broker(url)


async def test_a_subscription_refuses_a_meaningless_max_age() -> None:
    transport = await connect("memory://fair-age", connection_name="fair use")
    try:
        for bad in (0.0, -1.0, float("inf"), float("nan")):
            with pytest.raises(TransportError, match="max_age"):
                transport.subscribe(["#"], max_age=bad)
    finally:
        await transport.close()
        drop_memory_broker("memory://fair-age")


@pytest.mark.amqp
async def test_the_documented_policy_bounds_jupiter_dead(vhost: str) -> None:
    """``jupiter.dead`` is declared without arguments (changing them would make every
    existing deployment's redeclare fail); the docs' policy bounds it instead."""
    vhost_name = vhost.rsplit("/", 1)[1]
    _rabbitmqctl(
        "set_policy", "-p", vhost_name, "--apply-to", "queues", "jupiter-dead",
        r"^jupiter\.dead$", '{"max-length":100,"overflow":"drop-head"}',
    )  # fmt: skip
    transport = await connect(vhost, connection_name="fair use")
    try:
        for k in range(300):
            await transport.publish(DEAD_EXCHANGE, "x", b"%d" % k)
        async with asyncio.timeout(WAIT):
            while (length := await transport.queue_length(DEAD_QUEUE)) > 100:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
        assert length == 100
        print(f"\njupiter.dead under the policy: 300 dead letters, {length} kept")
    finally:
        await transport.close()
