"""Outgrowing one broker (issue 12, item 8): failover on a real three-node RabbitMQ cluster.

Three RabbitMQ nodes of our own (:mod:`.rabbit_cluster`: 5781-5783, never the default
broker) form a cluster. Agents and a facade get all three addresses in one URL; the work
queues are quorum queues (``queue_type = "quorum"``), and so is the facade's completion
queue (its default when the URL names several brokers). ``jupiter.dead`` is left as
every client declares it, a classic queue, made by the first client on the node the
clients use.

While transfer jobs (``local`` engine, small files, a steady rate) and a stream of
resource events flow, the node all the clients are connected to is stopped
(``stop_app``); once they have moved, it is started again and must rejoin (its quorum
replicas back online); then the node the clients moved to is stopped in turn, and
started again likewise. :func:`run_mid_stream` checks that each job ran once, its file
arrived once with its content, its result was collected once, every connection came
back by itself and events kept arriving; the printed figures say how long recovery took
(from the first connection lost).

Two shorter cases: clients connect while the node holding ``jupiter.dead`` is down (a
quorum ``jupiter.dead`` keeps its letters); and a worker whose direct replies go to a
stopped requester's node settles instead of losing its connection in a loop.
docs/beyond-one-broker.md has the figures.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections import Counter
from pathlib import Path

import pytest
from jupiter_providers.transfer import TransferProvider

from jupiter_bus.errors import TransportError
from jupiter_bus.facade import JupiterInterface
from jupiter_bus.messages import TransferResult
from jupiter_bus.topology import DEAD_QUEUE, EVENTS_EXCHANGE, work_queue
from jupiter_bus.transport import Envelope, connect
from jupiter_bus.transport.amqp import AmqpTransport

from ..conftest import eventually
from .rabbit_cluster import ClusterError, RabbitCluster, RabbitNode
from .test_restarts import AGENTS, CountingEngine, _print, _start_agent, run_mid_stream

pytestmark = pytest.mark.amqp

JOBS = int(os.environ.get("JUPITER_BUS_CLUSTER_JOBS", "1200"))
RATE = 50.0
"""Jobs submitted per second: the stream lasts JOBS / RATE seconds, through both outages."""
CLIENTS = AGENTS + 1
"""Connections :func:`run_mid_stream` opens through the cluster URL: the agents', the
facade's."""
MOVE_TIMEOUT = 30.0
DIRECT_JOBS = 16
QUIET = 2.0
"""Seconds without a lost connection that say a worker has settled down."""
SETTLE_TIMEOUT = 30.0


async def _clients_by_node(cluster: RabbitCluster, unique: str) -> Counter[str]:
    """How many of this test's agent and facade connections each running node serves."""
    held: Counter[str] = Counter()
    for node in cluster.nodes:
        try:
            names = await cluster.connections(node)
        except ClusterError:
            continue  # its application is stopped
        held[node.name] = sum(
            1 for name in names if unique in name and name.startswith(("agent ", "facade "))
        )
    return held


async def _clients(
    cluster: RabbitCluster, unique: str, *, off: RabbitNode | None = None
) -> Counter[str]:
    """Every client's connection by node, once all are connected (and none is on ``off``).

    Clients need not gather on one node: after an outage each takes the next address of
    its own rotation, so they may spread over the surviving nodes.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + MOVE_TIMEOUT
    while True:
        held = await _clients_by_node(cluster, unique)
        if sum(held.values()) == CLIENTS and (off is None or held[off.name] == 0):
            return held
        if loop.time() > deadline:
            where = f", none on {off.short}" if off is not None else ""
            pytest.fail(f"not all {CLIENTS} clients connected{where} in {MOVE_TIMEOUT:g} s: {held}")
        await asyncio.sleep(0.2)


async def _rejoined(cluster: RabbitCluster, node: RabbitNode, queues: list[str]) -> float:
    """Start ``node`` again; seconds until it runs in the cluster with its replicas of
    ``queues`` online."""
    began = time.monotonic()
    await cluster.start_app(node)
    running = cluster.running_nodes(node)
    assert set(running) == {n.name for n in cluster.nodes}, f"{node.name} sees {running}"
    loop = asyncio.get_running_loop()
    deadline = loop.time() + MOVE_TIMEOUT
    while True:
        status = await cluster.quorum_queues(node)
        lagging = [q for q in queues if node.name not in status[q].online]
        if not lagging:
            return time.monotonic() - began
        if loop.time() > deadline:
            pytest.fail(f"{node.name}'s replicas of {lagging} not back: {status}")
        await asyncio.sleep(0.2)


async def test_jobs_and_events_survive_losing_the_clients_node(
    rabbit_cluster: RabbitCluster, tmp_path: Path, unique: str
) -> None:
    cluster = rabbit_cluster
    observer_node = cluster.nodes[-1]  # the test's own observer, out of the outages' way
    queues = [work_queue(f"rs-{unique}-{k}") for k in range(AGENTS)]
    stopped: list[RabbitNode] = []
    timeline: list[str] = []

    async def outage() -> None:
        held = await _clients(cluster, unique)
        # the node most clients are on (never the observer's: it measures the outage)
        candidates = [n for n in cluster.nodes if n is not observer_node]
        node = max(candidates, key=lambda n: held[n.name])
        leaders = {q.leader for n, q in (await cluster.quorum_queues(node)).items() if n in queues}
        began = time.monotonic()
        await cluster.stop_app(node)
        stopped.append(node)
        timeline.append(
            f"{node.short} stopped in {time.monotonic() - began:.1f} s, {held[node.name]} of "
            f"{CLIENTS} clients on it (work queue leaders were on "
            f"{sorted(n.split('@')[0] for n in leaders)})"
        )
        # Bring it back once the clients have moved (and before the clean-up: deleting a
        # quorum queue with a member down waits for that member, seconds per queue), also
        # when they did not: the next test needs every node.
        try:
            moved = await _clients(cluster, unique, off=node)
        finally:
            seconds = await _rejoined(cluster, node, queues)
        timeline.append(f"clients moved to {dict(moved)}; {node.short} rejoined in {seconds:.1f} s")

    # The first client of a deployment makes jupiter.dead (a classic queue) on the node it
    # is connected to: here the node all clients use, the first one stopped below.
    seed = await connect(cluster.node_url(cluster.nodes[0]), connection_name=f"seed {unique}")
    await seed.close()
    figures = await run_mid_stream(
        tmp_path,
        unique,
        cluster.url,
        outage,
        jobs=JOBS,
        outages=2,
        timeout=90,
        observer_url=cluster.node_url(observer_node),
        transfer_options={"queue_type": "quorum", "delivery_limit": 10},
        submit_rate=RATE,
    )
    assert stopped[0] is not stopped[1]
    assert set(cluster.running_nodes(observer_node)) == {n.name for n in cluster.nodes}
    _print(
        f"RabbitMQ cluster of {len(cluster.nodes)} (up in {cluster.started_seconds:.1f} s), "
        "the clients' node stopped twice: " + "; ".join(timeline),
        figures,
    )


async def test_clients_connect_while_the_dead_letter_queue_is_out_of_reach(
    rabbit_cluster: RabbitCluster, unique: str
) -> None:
    """Every client declares ``jupiter.dead``. As a classic queue its contents live on one
    node: with that node down, clients still connect (its letters are dropped meanwhile).
    Declared a quorum queue beforehand (``jupiter-bus setup``), it is kept as it is and
    keeps what it is sent with its first node down."""
    cluster = rabbit_cluster
    first, home = cluster.nodes[0], cluster.nodes[1]
    classic, quorum = f"jb-classic-{unique}", f"jb-quorum-{unique}"
    await asyncio.gather(cluster.add_vhost(classic), cluster.add_vhost(quorum))
    try:
        seed = await connect(cluster.node_url(home, classic))  # makes it, on ``home``
        await seed.close()
        async with AmqpTransport(cluster.node_url(home, quorum)) as operator:
            await operator.connect()  # makes a classic one, replaced while empty:
            assert await operator.declare_dead_queue("quorum") == "replaced"
        await cluster.stop_app(home)
        try:
            letter = Envelope(b"{}", EVENTS_EXCHANGE, f"resource.{unique}")
            for vhost, kept in ((classic, None), (quorum, 1)):
                bus = await asyncio.wait_for(connect(cluster.node_url(first, vhost)), 10)
                try:
                    await bus.dead_letter(letter, "refused by the test")
                    if kept is None:
                        with pytest.raises(TransportError, match="unavailable"):
                            await bus.queue_stats(DEAD_QUEUE)
                    else:
                        assert (await bus.queue_stats(DEAD_QUEUE)).messages == kept
                finally:
                    await bus.close()
        finally:
            await cluster.start_app(home)
        bus = await connect(cluster.node_url(first, classic))
        try:
            assert (await bus.queue_stats(DEAD_QUEUE)).messages == 0  # dropped meanwhile
        finally:
            await bus.close()
    finally:
        await asyncio.gather(cluster.delete_vhost(classic), cluster.delete_vhost(quorum))


async def _settled(bus: AmqpTransport, queue: str, losses: list[float]) -> None:
    """Wait until ``bus`` has lost no connection for QUIET seconds and ``queue`` is empty
    (every job acked); fail after SETTLE_TIMEOUT."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + SETTLE_TIMEOUT
    while loop.time() < deadline:
        if time.monotonic() - max(losses, default=0.0) > QUIET:
            with contextlib.suppress(TransportError):
                if (await bus.queue_stats(queue)).messages == 0:
                    return
        await asyncio.sleep(0.1)
    pytest.fail(f"worker not settled within {SETTLE_TIMEOUT:g} s: {len(losses)} losses")


async def test_replies_to_a_stopped_requesters_node_leave_the_worker_alone(
    rabbit_cluster: RabbitCluster, tmp_path: Path, unique: str
) -> None:
    """A facade waits in ``data_transfer`` calls (direct reply-to); its node stops while
    their jobs run. The worker's replies then go to addresses of a node that is down
    (RabbitMQ 3.10 answers such a publish by crashing the channel, and the connection
    with it). Each job still runs once, is acked once, and the worker settles down
    instead of losing its connection again and again to redelivered jobs whose replies
    crash it; the facade moves to another node and every call still returns its result
    (from the job's ``transfer.done`` event or the job store, asked again)."""
    cluster = rabbit_cluster
    requester_node = cluster.nodes[2]
    node = f"dr-{unique}"
    src = tmp_path / "src"
    src.mkdir()
    runs: Counter[str] = Counter()
    losses: list[float] = []
    worker_bus = AmqpTransport(cluster.url, connection_name=f"agent {node}", reconnect_interval=0.2)
    await worker_bus.connect()
    worker_bus.connection.close_callbacks.add(lambda *_: losses.append(time.monotonic()))
    agent = await _start_agent(
        worker_bus, node, tmp_path, {"queue_type": "quorum", "concurrency": 32}
    )
    running = asyncio.create_task(agent.run())
    # the requester's node first: it connects there, and moves on to the others
    others = [n for n in cluster.nodes if n is not requester_node]
    hosts = ",".join(f"127.0.0.1:{n.port}" for n in [requester_node, *others])
    requester = AmqpTransport(
        f"amqp://guest:guest@{hosts}/", connection_name=f"rq {unique}", reconnect_interval=0.2
    )
    await requester.connect()
    facade = JupiterInterface(requester, node=node)
    await facade.__aenter__()
    calls: list[asyncio.Task[TransferResult]] = []
    try:
        await asyncio.wait_for(agent.started(), 30)
        provider = agent.provider("transfer")
        assert isinstance(provider, TransferProvider)
        provider.engines["local"] = CountingEngine(provider.engines["local"], runs)
        await eventually(lambda: provider.health().detail.startswith("consuming"), 30)
        for i in range(DIRECT_JOBS):
            source = src / f"slow-{i}.bin"
            source.write_bytes(b"x" * 100)
            transfer = facade.data_transfer(
                "127.0.0.1",
                "nobody",
                None,
                str(source),
                str(tmp_path / f"out-{i}.bin"),
                engine="local",
                timeout=60,
            )
            calls.append(asyncio.create_task(transfer))
        await eventually(lambda: len(runs) == DIRECT_JOBS, 30)  # all running (1 s each)
        await cluster.stop_app(requester_node)
        stopped = time.monotonic()
        await eventually(lambda: provider.completed == DIRECT_JOBS, 30)
        await _settled(worker_bus, work_queue(node), losses)
        after = [t - stopped for t in losses if t > stopped]
        # Bounded: each job is acked before its reply, so a reply to the stopped node costs
        # one loss (counted up to twice: the close, and a restore it interrupted). Likely, an ack
        # still on its way when another reply crashed the connection makes that job come
        # back, answered from the job store to the stopped node once more: a few such
        # rounds under load (37 losses once in a fresh-clone CI run, 6-11 here alone). A
        # loop would never let _settled see QUIET seconds without a loss.
        assert len(after) <= 4 * DIRECT_JOBS, f"worker connection lost {len(after)} times"
        assert all(n == 1 for n in runs.values()), runs
        async with asyncio.timeout(SETTLE_TIMEOUT):
            results = await asyncio.gather(*calls)
        answered = time.monotonic() - stopped
        assert all(r.ok and r.bytes == 100 for r in results)
        assert {r.request_id for r in results} == set(runs)
        print(
            f"\n{DIRECT_JOBS} direct-reply jobs, their requester's node stopped mid-run: "
            f"each ran once; the worker's connection was lost {len(after)} times, the last "
            f"{max(after, default=0):.2f} s after the stop; all {DIRECT_JOBS} data_transfer "
            f"calls returned their results within {answered:.2f} s of it"
        )
    finally:
        for call in calls:
            call.cancel()
        await asyncio.gather(*calls, return_exceptions=True)
        agent.stop()
        await asyncio.gather(running, return_exceptions=True)
        await cluster.start_app(requester_node)
        await worker_bus.delete_queue(work_queue(node))
        await worker_bus.close()
        await facade.__aexit__(None, None, None)
        await requester.close()
