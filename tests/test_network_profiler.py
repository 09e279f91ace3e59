"""The network profiler: probes through the real worker, passive samples, budgets, peers."""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from jupiter_providers.network import NetworkProvider

from jupiter_bus.agent import Agent
from jupiter_bus.batch import decode_batch
from jupiter_bus.costmodel import kbit
from jupiter_bus.errors import ProviderError
from jupiter_bus.messages import (
    LinkCost,
    ResourceSample,
    TransferRequest,
    TransferResult,
    decode,
    encode,
)
from jupiter_bus.plugins import NodeContext, TransferSample
from jupiter_bus.topology import (
    EVENTS_EXCHANGE,
    TRANSFERS_EXCHANGE,
    network_batch_key,
    network_key,
    resource_key,
)
from jupiter_bus.transport import Transport

from .conftest import eventually
from .test_transfer_worker import Worker

WAIT = 30.0


def profiler_options(tmp_path: Path, **overrides: Any) -> dict[str, Any]:
    options: dict[str, Any] = {
        "peers": [{"node": "peer1", "host": "127.0.0.1", "user": "nobody"}],
        "probe_sizes_kb": [4, 64, 1024],
        "interval": 0.1,
        "jitter": 0.1,
        "engine": "local",
        "probe_dir": str(tmp_path / "remote"),
        "state_dir": str(tmp_path / "state"),
    }
    options.update(overrides)
    return options


async def test_probes_go_through_the_worker_and_a_fit_is_published(
    transport: Transport, tmp_path: Path, unique: str
) -> None:
    node = f"np-{unique}"
    agent = Agent(
        node,
        transport,
        {
            "transfer": {"engine": "local", "state_dir": str(tmp_path / "tstate")},
            "network": profiler_options(tmp_path),
        },
    )
    async with transport.subscribe([network_key(node, "peer1")]) as costs:
        task = asyncio.create_task(agent.run())
        try:
            cost = decode((await asyncio.wait_for(anext(costs), WAIT)).body, LinkCost)
        finally:
            agent.stop()
            await asyncio.wait_for(task, WAIT)
        await transport.delete_queue(f"jupiter.transfer.{node}")
    assert (cost.src, cost.dst) == (node, "peer1")
    assert cost.samples >= 3
    assert (cost.min_kbit, cost.max_kbit) == (kbit(4000), kbit(1_024_000))
    assert cost.model in ("quadratic", "linear", "constrained")
    sizes = np.geomspace(cost.min_kbit, cost.max_kbit, 20)
    predicted = (cost.a * sizes + cost.b) * sizes + cost.c
    assert np.all(predicted >= 0)
    assert np.all(np.diff(predicted) >= 0)
    assert (tmp_path / "remote" / f"probe-{node}-1024000.bin").stat().st_size == 1_024_000
    profiler = agent.provider("network")
    assert isinstance(profiler, NetworkProvider)
    assert profiler.budget_report()["peer1"] >= 4000 + 64_000 + 1_024_000


async def test_failed_probes_are_link_errors_never_samples(
    transport: Transport, tmp_path: Path, unique: str
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead_port = sock.getsockname()[1]
    node = f"nf-{unique}"
    options = profiler_options(
        tmp_path,
        interval=1.0,
        engine="sftp",
        peers=[{"node": "gone", "host": "127.0.0.1", "port": dead_port, "user": "x"}],
    )
    agent = Agent(
        node,
        transport,
        {
            "transfer": {"state_dir": str(tmp_path / "t"), "max_attempts": 1, "connect_timeout": 1},
            "network": options,
        },
    )
    task = asyncio.create_task(agent.run())
    try:
        await asyncio.wait_for(agent.started(), WAIT)
        profiler = agent.provider("network")
        assert isinstance(profiler, NetworkProvider)
        await eventually(lambda: profiler.probe_failures >= 1, WAIT)
        await asyncio.sleep(0.5)  # the rest of the round skips it; it is backed off 2 s
        peer = profiler.peers["gone"]
        assert len(peer.model.samples) == 0
        assert peer.last_error is not None
        assert peer.last_error.startswith("unreachable")
        assert profiler.probe_failures == 1  # the rest of the round left it alone
        assert not profiler.health().ok
    finally:
        agent.stop()
        await asyncio.wait_for(task, WAIT)
        await transport.delete_queue(f"jupiter.transfer.{node}")


async def test_probing_waits_for_the_nodes_transfer_worker_instead_of_failing(
    transport: Transport, tmp_path: Path, unique: str
) -> None:
    """The agent starts its providers side by side: probes sent before the node's worker
    consumes would be unroutable and count as failures of a link that is fine."""
    node = f"nw-{unique}"
    agent = Agent(node, transport, {"network": profiler_options(tmp_path)})
    task = asyncio.create_task(agent.run())
    worker = Worker(transport, node, {"engine": "local", "state_dir": str(tmp_path / "t")})
    try:
        await asyncio.wait_for(agent.started(), WAIT)
        profiler = agent.provider("network")
        assert isinstance(profiler, NetworkProvider)
        await asyncio.sleep(1.0)  # ten rounds' worth of interval
        assert (profiler.probes_sent, profiler.probe_failures) == (0, 0)
        assert not profiler.health().ok
        assert "waiting for this node's transfer worker" in profiler.health().detail
        await worker.start()
        await eventually(lambda: profiler.probes_ok >= 4, WAIT)  # a warm-up and 3 sizes
        assert profiler.probe_failures == 0
    finally:
        agent.stop()
        await asyncio.wait_for(task, WAIT)
        await worker.stop()
        await transport.delete_queue(f"jupiter.transfer.{node}")


def make_profiler(transport: Transport, tmp_path: Path, **overrides: Any) -> NetworkProvider:
    return NetworkProvider(NodeContext("me", transport), profiler_options(tmp_path, **overrides))


def test_real_traffic_keeps_a_link_fresh_so_it_is_not_probed(
    transport: Transport, tmp_path: Path
) -> None:
    profiler = make_profiler(transport, tmp_path)
    assert len(profiler.plan_round()) == 3  # nothing known yet: all three sizes
    now = time.time()
    for size in (4_000, 64_000, 1_024_000):
        profiler._on_transfer(
            TransferSample("me", "127.0.0.1", 22, size, 0.001 + size / 1e8, "sftp", now, "job")
        )
    assert profiler.plan_round() == []
    assert all(s.passive for s in profiler.peers["peer1"].model.samples)
    elsewhere = TransferSample("me", "10.9.9.9", 22, 5_000, 0.01, "sftp", now, "job2")
    profiler._on_transfer(elsewhere)
    assert len(profiler.peers["peer1"].model.samples) == 3


def test_rounds_are_capped_and_links_held_to_their_budget(
    transport: Transport, tmp_path: Path
) -> None:
    peers = [{"node": f"p{i}", "host": f"127.0.0.{i + 2}", "user": "u"} for i in range(5)]
    profiler = make_profiler(transport, tmp_path, peers=peers, max_probes_per_round=4)
    assert len(profiler.plan_round()) == 4
    tight = make_profiler(transport, tmp_path, peers=peers[:1], budget_bytes_per_link_hour=100_000)
    assert [size for _, size in tight.plan_round()] == [4_000, 64_000]


async def test_peers_are_learned_from_resource_events_and_forgotten(
    transport: Transport, tmp_path: Path, unique: str
) -> None:
    profiler = make_profiler(
        transport, tmp_path, peers=[], default_user="jupiter", peer_ttl_seconds=0.3
    )
    watcher = asyncio.create_task(profiler._watch_resources())
    try:
        await asyncio.sleep(0.1)
        sample = ResourceSample(
            node=f"n{unique}",
            cpu_percent=1.0,
            cpu_count=1,
            memory_percent=1.0,
            memory_total_bytes=1,
            memory_available_bytes=1,
            host="10.1.1.1",
            ssh_port=2222,
        )
        await transport.publish(EVENTS_EXCHANGE, resource_key(sample.node), encode(sample))
        await eventually(lambda: sample.node in profiler.peers, WAIT)
        peer = profiler.peers[sample.node]
        assert (peer.host, peer.port, peer.user) == ("10.1.1.1", 2222, "jupiter")
        assert {p.node for p, _ in profiler.plan_round()} == {sample.node}
        await asyncio.sleep(0.4)
        assert profiler.plan_round() == []  # gone quiet: no longer probed
    finally:
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)


def test_fewer_than_three_probe_sizes_is_refused(transport: Transport, tmp_path: Path) -> None:
    with pytest.raises(Exception, match="at least 3 distinct"):
        make_profiler(transport, tmp_path, probe_sizes_kb=[4, 4, 64])


@pytest.mark.parametrize(("mode", "per_link", "batches"), [("batch", 0, 1), ("both", 2, 1)])
async def test_a_round_of_changes_can_go_out_as_one_batch(
    transport: Transport, tmp_path: Path, unique: str, mode: str, per_link: int, batches: int
) -> None:
    me = f"me-{unique}"
    peers = [{"node": f"p{i}-{unique}", "host": f"127.0.0.{i + 2}", "user": "u"} for i in range(2)]
    context = NodeContext(me, transport)
    profiler = NetworkProvider(context, profiler_options(tmp_path, peers=peers, publish=mode))
    now = time.time()
    for i, peer in enumerate(profiler.peers.values()):
        for size in (4_000, 64_000, 1_024_000):
            peer.model.add(kbit(size), 1.0 + i + size / 1e5, ts=now)
    async with (
        transport.subscribe([f"network.{me}.*"]) as links,
        transport.subscribe([network_batch_key(me)]) as batched,
    ):
        assert await profiler.publish_changes() == 2
        got_batches = [await asyncio.wait_for(anext(batched), WAIT) for _ in range(batches)]
        got_links = [await asyncio.wait_for(anext(links), WAIT) for _ in range(per_link)]
        assert await profiler.publish_changes() == 0  # nothing changed: nothing sent
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(anext(batched), 0.2)
    (batch,) = [decode_batch(e.body) for e in got_batches]
    assert sorted(c.dst for c in batch.costs()) == sorted(p["node"] for p in peers)
    assert all(c.src == me for c in batch.costs())
    assert len(got_links) == per_link
    assert set(context.last_events()) == {network_key(me, p["node"]) for p in peers}


def test_an_unknown_publish_mode_is_refused(transport: Transport, tmp_path: Path) -> None:
    with pytest.raises(
        ProviderError,
        match=r"providers\.network\.publish: expected one of 'links', 'batch', 'both'",
    ):
        make_profiler(transport, tmp_path, publish="sometimes")


async def test_probe_files_are_sent_whatever_allow_roots_but_only_for_the_profiler(
    transport: Transport, tmp_path: Path, unique: str
) -> None:
    """The README's agent (allow_roots = ["/data"]) must still probe: its own probe files
    are granted to its own probe jobs, and to no one else's request."""
    node = f"npr-{unique}"
    allowed = tmp_path / "data"
    allowed.mkdir()
    agent = Agent(
        node,
        transport,
        {
            "transfer": {
                "engine": "local",
                "state_dir": str(tmp_path / "tstate"),
                "allow_roots": [str(allowed)],
            },
            "network": profiler_options(tmp_path),
        },
    )
    async with transport.subscribe([network_key(node, "peer1")]) as costs:
        task = asyncio.create_task(agent.run())
        try:
            cost = decode((await asyncio.wait_for(anext(costs), WAIT)).body, LinkCost)
            profiler = agent.provider("network")
            assert isinstance(profiler, NetworkProvider)
            probe_file = profiler._probe_file(4000)
            assert not probe_file.is_relative_to(allowed)
            foreign = TransferRequest(
                host="127.0.0.1",
                user="nobody",
                source=str(probe_file),
                destination=str(tmp_path / "stolen.bin"),
                engine="local",
            )
            reply = await transport.request(TRANSFERS_EXCHANGE, node, encode(foreign), timeout=WAIT)
            result = decode(reply.body, TransferResult)
        finally:
            agent.stop()
            await asyncio.wait_for(task, WAIT)
        await transport.delete_queue(f"jupiter.transfer.{node}")
    assert cost.samples >= 3
    assert not result.ok
    assert result.error is not None
    assert result.error.kind == "permission"
    assert not (tmp_path / "stolen.bin").exists()


async def test_a_link_busy_with_real_traffic_is_not_probed_until_it_is_free(
    transport: Transport, tmp_path: Path, unique: str
) -> None:
    node = f"bz-{unique}"
    context = NodeContext(node, transport)
    profiler = NetworkProvider(context, profiler_options(tmp_path))
    stopping = asyncio.Event()
    # the node's transfer worker (probes wait for one), as another agent of the node
    worker = Worker(transport, node, {"engine": "local", "state_dir": str(tmp_path / "t")})
    await worker.start()
    with context.samples.sending("127.0.0.1", 22, "real-job"):
        assert context.samples.busy("127.0.0.1", 22)
        assert not context.samples.busy("127.0.0.1", 22, ignore={"real-job"})
        assert not context.samples.busy("127.0.0.1", 2222)
        running = asyncio.create_task(profiler.run(stopping))
        try:
            await eventually(lambda: profiler.probes_deferred >= 3, WAIT)  # three rounds
            assert profiler.probes_sent == 0
            assert profiler.probe_failures == 0
        except BaseException:
            stopping.set()
            await running
            await worker.stop()
            raise
    assert not context.samples.busy("127.0.0.1", 22)
    try:  # free again: probed (a warm-up first)
        await eventually(lambda: len(profiler.peers["peer1"].probe_bytes) >= 1, WAIT)
    finally:
        stopping.set()
        await asyncio.wait_for(running, WAIT)
        await worker.stop()
        await transport.delete_queue(f"jupiter.transfer.{node}")
