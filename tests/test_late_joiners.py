"""Late joiners: a JupiterInterface started after the agents has the whole picture at once.

Agents remember the latest body of each key their providers publish
(``NodeContext.publish_event``) and answer ``snapshot.request`` with them; the facade
asks on entering. Node names carry the test's unique word: on RabbitMQ other runs may
publish (and ask for snapshots) at the same time.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import orjson
import pytest

from jupiter_bus.agent import SNAPSHOT_REQUEST_KEY, Agent, SnapshotRequest
from jupiter_bus.costmodel import kbit
from jupiter_bus.errors import ProviderError
from jupiter_bus.facade import JupiterInterface
from jupiter_bus.messages import LinkCost, ResourceSample, decode, encode
from jupiter_bus.plugins import NodeContext
from jupiter_bus.state import StateUnavailable
from jupiter_bus.topology import (
    DEAD_EXCHANGE,
    ERROR_HEADER,
    EVENTS_EXCHANGE,
    ORIGINAL_ROUTING_KEY_HEADER,
    network_key,
    resource_key,
)
from jupiter_bus.transport import Envelope, Subscription, Transport
from providers.network import NetworkProvider

from .conftest import eventually

WAIT = 10.0
LATE_JOIN_SECONDS = 1.0

StartAgent = Callable[..., Awaitable[Agent]]


def cost(src: str, dst: str, c: float = 40.0, ts: float | None = None) -> LinkCost:
    return LinkCost(
        src=src,
        dst=dst,
        a=0.0,
        b=0.002,
        c=c,
        samples=10,
        r2=0.99,
        min_kbit=8.0,
        max_kbit=8e4,
        ts=time.time() if ts is None else ts,
    )


def sample(node: str, cpu: float = 12.5, ts: float | None = None) -> ResourceSample:
    return ResourceSample(
        node=node,
        cpu_percent=cpu,
        cpu_count=4,
        memory_percent=30.0,
        memory_total_bytes=8_000_000_000,
        memory_available_bytes=5_600_000_000,
        ts=time.time() if ts is None else ts,
    )


def context_of(agent: Agent) -> NodeContext:
    assert agent.context is not None
    return agent.context


async def remember(agent: Agent, *messages: LinkCost | ResourceSample) -> None:
    """Publish through the agent's context, as its providers do."""
    context = context_of(agent)
    for message in messages:
        if isinstance(message, LinkCost):
            await context.publish_event(network_key(message.src, message.dst), encode(message))
        else:
            await context.publish_event(resource_key(message.node), encode(message))


@pytest.fixture
async def start_agent(transport: Transport, bus_url: str) -> AsyncIterator[StartAgent]:
    """Start agents on ``bus_url`` (each with its own connection); stop them after."""
    running: list[tuple[Agent, asyncio.Task[None]]] = []

    async def start(node: str, providers: Mapping[str, Mapping[str, Any]] | None = None) -> Agent:
        agent = Agent(node, bus_url, providers or {}, grace=2)
        task = asyncio.create_task(agent.run())
        running.append((agent, task))
        started = asyncio.create_task(agent.started())
        await asyncio.wait({started, task}, timeout=WAIT, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            task.result()  # raise what stopped it
        assert started.done(), f"agent {node} did not start within {WAIT:g} s"
        return agent

    yield start
    for agent, _ in running:
        agent.stop()
    await asyncio.wait_for(
        asyncio.gather(*(task for _, task in running), return_exceptions=True), WAIT
    )


async def answers(feed: Subscription, correlation_id: str, count: int) -> list[Envelope]:
    """The first ``count`` messages in ``feed`` that answer ``correlation_id``."""
    found: list[Envelope] = []
    async with asyncio.timeout(WAIT):
        while len(found) < count:
            envelope = await anext(feed)
            if envelope.correlation_id == correlation_id:
                found.append(envelope)
    return found


async def test_a_late_joiner_has_resources_and_links_within_a_second(
    start_agent: StartAgent, bus_url: str, unique: str
) -> None:
    node, peer = f"lj-{unique}", f"lp-{unique}"
    # Resources every 60 s: only a snapshot can bring them in time.
    agent = await start_agent(node, {"resources": {"interval": 60}})
    await remember(agent, cost(node, peer, c=41.5))
    await eventually(lambda: resource_key(node) in context_of(agent).last_events())

    started = time.monotonic()
    async with JupiterInterface(bus_url) as bus:
        resources = await bus.get_resource_data(nodes=[node], timeout=LATE_JOIN_SECONDS)
        network = await bus.get_network_data(links=[(node, peer)], timeout=LATE_JOIN_SECONDS)
        elapsed = time.monotonic() - started
    assert elapsed < LATE_JOIN_SECONDS, f"late joiner took {elapsed:.3f} s"
    assert resources[node].node == node
    assert network.link(node, peer).c == 41.5
    assert resources.age_seconds(node) < LATE_JOIN_SECONDS  # receipt time, not the producer's


async def test_without_a_snapshot_a_late_joiner_waits_for_the_next_publication(
    start_agent: StartAgent, bus_url: str, unique: str
) -> None:
    node = f"ns-{unique}"
    agent = await start_agent(node)
    await remember(agent, sample(node))
    async with JupiterInterface(bus_url, snapshot=False) as bus:
        with pytest.raises(StateUnavailable):
            await bus.get_resource_data(nodes=[node], timeout=0.3)
        await bus.request_snapshot()  # asking later works too
        data = await bus.get_resource_data(nodes=[node], timeout=LATE_JOIN_SECONDS)
    assert data[node].cpu_percent == 12.5


async def test_several_agents_all_answer_one_request(
    start_agent: StartAgent, transport: Transport, bus_url: str, unique: str
) -> None:
    nodes = [f"sa{i}-{unique}" for i in range(3)]
    for node in nodes:
        agent = await start_agent(node)
        await remember(agent, sample(node), *(cost(node, dst) for dst in nodes if dst != node))
    async with transport.subscribe([f"nothing.{unique}"]) as feed:
        await transport.publish(
            EVENTS_EXCHANGE,
            SNAPSHOT_REQUEST_KEY,
            SnapshotRequest.body(),
            reply_to=feed.name,
            correlation_id=f"all-{unique}",
        )
        replies = await answers(feed, f"all-{unique}", 9)
    seen = set()
    for envelope in replies:
        assert envelope.exchange == ""  # sent straight to the queue
        message = decode(envelope.body)
        if isinstance(message, ResourceSample):
            seen.add(message.node)
        elif isinstance(message, LinkCost):
            seen.add(f"{message.src}->{message.dst}")
    assert seen == {*nodes, *(f"{s}->{d}" for s in nodes for d in nodes if s != d)}
    async with JupiterInterface(bus_url) as bus:
        network = await bus.get_network_data(nodes=nodes, timeout=LATE_JOIN_SECONDS)
        resources = await bus.get_resource_data(nodes=nodes, timeout=LATE_JOIN_SECONDS)
    assert network.link_count >= 6
    assert set(resources) >= set(nodes)


async def test_a_malformed_snapshot_request_is_dead_lettered_and_the_agent_keeps_answering(
    start_agent: StartAgent, transport: Transport, unique: str
) -> None:
    node = f"md-{unique}"
    agent = await start_agent(node)
    await remember(agent, sample(node, cpu=7.0))
    newer = {**orjson.loads(SnapshotRequest.body()), "v": 2}
    bad = {
        f"{unique}-json": (b"\xff not json", True),
        f"{unique}-v": (orjson.dumps(newer), True),
        f"{unique}-type": (b'{"v": 1, "type": "resource", "id": "x", "ts": 1}', True),
        f"{unique}-reply": (SnapshotRequest.body(), False),
        f"{unique}-batch": (orjson.dumps({**newer, "v": 1, "batch": "yes"}), True),
    }
    async with (
        transport.subscribe(["#"], exchange=DEAD_EXCHANGE) as dead,
        transport.subscribe([f"nothing.{unique}"]) as feed,
    ):
        for message_id, (body, with_reply_to) in bad.items():
            await transport.publish(
                EVENTS_EXCHANGE,
                SNAPSHOT_REQUEST_KEY,
                body,
                reply_to=feed.name if with_reply_to else None,
                message_id=message_id,
            )
        await transport.publish(
            EVENTS_EXCHANGE,
            SNAPSHOT_REQUEST_KEY,
            SnapshotRequest.body(),
            reply_to=feed.name,
            correlation_id=f"good-{unique}",
        )
        (reply,) = await answers(feed, f"good-{unique}", 1)
        reasons: dict[str, str] = {}
        async with asyncio.timeout(WAIT):
            while set(reasons) != set(bad):
                letter = await anext(dead)
                if letter.message_id in bad:
                    assert letter.headers[ORIGINAL_ROUTING_KEY_HEADER] == SNAPSHOT_REQUEST_KEY
                    reasons[letter.message_id] = str(letter.headers[ERROR_HEADER])
    assert decode(reply.body, ResourceSample).cpu_percent == 7.0
    assert reasons[f"{unique}-json"].startswith("body is not valid JSON")
    assert reasons[f"{unique}-v"].startswith("v: version 2 is newer")
    assert reasons[f"{unique}-type"].startswith("type: expected 'snapshot.request'")
    assert reasons[f"{unique}-reply"].startswith("reply_to: ")
    assert reasons[f"{unique}-batch"].startswith("batch: must be true or false")


async def test_a_snapshot_answer_never_undoes_a_newer_live_update(
    transport: Transport, bus_url: str, unique: str
) -> None:
    """Answers are compared by the producer's ts; live updates always apply."""
    a, b, c = (f"{x}-{unique}" for x in "abc")
    t = time.time()
    async with (
        transport.subscribe([SNAPSHOT_REQUEST_KEY]) as requests,
        JupiterInterface(bus_url, snapshot=False) as bus,
    ):
        request_id = await bus.request_snapshot()
        async with asyncio.timeout(WAIT):
            while (request := await anext(requests)).correlation_id != request_id:
                pass
        assert request.reply_to is not None

        async def reply(message: LinkCost | ResourceSample) -> None:
            await transport.publish("", request.reply_to or "", encode(message))

        async def live(message: LinkCost | ResourceSample) -> None:
            key = (
                network_key(message.src, message.dst)
                if isinstance(message, LinkCost)
                else resource_key(message.node)
            )
            await transport.publish(EVENTS_EXCHANGE, key, encode(message))

        # a -> b and a's resources: a newer live update first, then an older answer.
        await live(cost(a, b, c=2.0, ts=t + 10))
        await live(sample(a, cpu=2.0, ts=t + 10))
        await bus.get_resource_data(nodes=[a], timeout=WAIT)
        await eventually(lambda: bus.network.snapshot().has_link(a, b))
        await reply(cost(a, b, c=1.0, ts=t))
        await reply(sample(a, cpu=1.0, ts=t))
        # b -> a: an answer first, then a newer live update.
        await reply(cost(b, a, c=1.0, ts=t))
        await eventually(lambda: bus.network.snapshot().has_link(b, a))
        await live(cost(b, a, c=2.0, ts=t + 10))
        # a -> c: an answer for a link never seen applies; it also marks the end.
        await reply(cost(a, c, c=3.0, ts=t))
        network = await bus.get_network_data(links=[(a, c)], timeout=WAIT)
        await eventually(lambda: bus.network.snapshot().link(b, a).c == 2.0)
        resources = await bus.get_resource_data(nodes=[a], timeout=WAIT)
    assert network.link(a, b).c == 2.0
    assert network.link(a, c).c == 3.0
    assert resources[a].cpu_percent == 2.0


async def test_providers_publish_through_the_last_value_record(
    transport: Transport, tmp_path: Path, unique: str
) -> None:
    me, peer = f"me-{unique}", f"peer-{unique}"
    context = NodeContext(me, transport)
    profiler = NetworkProvider(
        context,
        {"peers": [{"node": peer, "host": "127.0.0.1", "user": "nobody"}], "state_dir": tmp_path},
    )
    now = time.time()
    for size in (4_000, 64_000, 1_024_000, 4_000, 64_000, 1_024_000):
        profiler.peers[peer].model.add(kbit(size), 1.0 + size / 1e5, ts=now)
    async with transport.subscribe([network_key(me, peer)]) as feed:
        assert await profiler.publish_changes() == 1
        live = await asyncio.wait_for(anext(feed), WAIT)
    assert context.last_events() == {network_key(me, peer): live.body}
    assert await profiler.publish_changes() == 0  # unchanged: nothing new to remember either
    assert context.forget_event(network_key(me, peer))
    assert context.last_events() == {}


async def test_a_node_remembers_only_its_own_keys(transport: Transport, unique: str) -> None:
    me = f"me-{unique}"
    context = NodeContext(me, transport)
    for key in (f"network.peer.{me}", "resource", "resource.other", f"{me}.resource"):
        with pytest.raises(ProviderError, match="cannot publish"):
            await context.publish_event(key, b"{}")
    for key in (f"resource.{me}.", f"network.{me}.peer.extra"):
        with pytest.raises(ProviderError, match="cannot publish"):
            await context.publish_event(key, b"{}")
    await context.publish_event(f"resource.{me}", b"1")
    await context.publish_event(f"resource.{me}", b"2")
    await context.publish_event(f"network.{me}.peer", b"3")
    assert context.last_events() == {f"resource.{me}": b"2", f"network.{me}.peer": b"3"}


async def test_a_late_joiner_of_50_agents_with_49_links_each_gets_the_full_picture(
    start_agent: StartAgent, bus_url: str, unique: str
) -> None:
    """2,450 links and 50 resource samples: each agent answers with one ``network.batch``
    of its 49 links and its resource sample, 100 messages in all (one per key made 2,500,
    about 1 s on RabbitMQ on 2 vCPUs). bench/facade.py measures 1,000 nodes."""
    limit = LATE_JOIN_SECONDS
    nodes = [f"n{i:02d}-{unique}" for i in range(50)]
    agents = await asyncio.gather(*(start_agent(node) for node in nodes))
    await asyncio.gather(
        *(
            remember(agent, sample(node), *(cost(node, dst) for dst in nodes if dst != node))
            for agent, node in zip(agents, nodes, strict=True)
        )
    )
    started = time.monotonic()
    async with JupiterInterface(bus_url) as bus:
        network = await bus.get_network_data(nodes=nodes, timeout=limit)
        resources = await bus.get_resource_data(nodes=nodes, timeout=limit)
        elapsed = time.monotonic() - started
    logging.getLogger(__name__).info(
        "late joiner on %s: 2450 links and 50 nodes in %.0f ms",
        bus_url.split("://")[0],
        elapsed * 1000,
    )
    assert network.coverage(nodes=nodes).missing == 0
    assert len(set(resources) & set(nodes)) == 50
    assert elapsed < limit, f"late joiner took {elapsed:.3f} s"


async def test_waiting_reads_still_answer_requests_that_ask_for_nothing(unique: str) -> None:
    """Reads skip judging while a cheap count says "not yet"; asking nothing is answered."""
    async with JupiterInterface(f"memory://nothing-{unique}") as bus:
        bus.network.apply(cost("n1", "n2"))
        started = time.monotonic()
        await bus.get_network_data(nodes=["alone"], timeout=WAIT)
        await bus.get_network_data(links=[("self", "self")], timeout=WAIT)
        await bus.get_network_data(nodes=[], links=[], timeout=WAIT)
        assert time.monotonic() - started < 1.0
        with pytest.raises(StateUnavailable, match="1 of 2 requested links: n2->n1"):
            await bus.get_network_data(nodes=["n1", "n2"], timeout=0.05)
        with pytest.raises(StateUnavailable, match="never heard of: x"):
            await bus.get_network_data(links=[("n1", "x")], timeout=0.05)
