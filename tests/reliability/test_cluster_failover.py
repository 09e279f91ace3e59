"""Outgrowing one broker (issue 12, item 8): failover on a real three-node RabbitMQ cluster.

Three RabbitMQ nodes of our own (:mod:`.rabbit_cluster`: 5781-5783, never the default
broker) form a cluster. Agents and a facade get all three addresses in one URL; the work
queues are quorum queues. While transfer jobs (``local`` engine, small files) and a
stream of resource events flow, the node the clients are connected to is stopped
(``stop_app``); later it is started again, and the node the clients moved to is stopped
in turn. Each job runs once, its file arrives once, its result is collected once, every
connection moves to a surviving node by itself and events keep arriving
(:func:`run_mid_stream` checks all that). The printed figures say how long recovery took.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from pathlib import Path

import pytest

from .rabbit_cluster import RabbitCluster, RabbitNode
from .test_restarts import AGENTS, _print, run_mid_stream

pytestmark = pytest.mark.amqp

JOBS = int(os.environ.get("JUPITER_BUS_CLUSTER_JOBS", "600"))
CLIENTS = AGENTS + 1
"""Connections :func:`run_mid_stream` opens through the cluster URL: one per agent, the
facade's."""


async def _clients_by_node(cluster: RabbitCluster, unique: str) -> Counter[str]:
    """How many of this test's agent/facade connections each running node holds."""
    held: Counter[str] = Counter()
    for node in cluster.nodes:
        try:
            connections = await cluster.connections(node)
        except Exception:
            continue  # stopped
        held[node.name] = sum(
            1
            for name, _ in connections
            if unique in name and name.startswith(("agent ", "facade "))
        )
    return held


async def test_jobs_and_events_survive_losing_the_clients_node(
    rabbit_cluster: RabbitCluster, tmp_path: Path, unique: str
) -> None:
    cluster = rabbit_cluster
    observer_node = cluster.nodes[-1]  # the test's observer stays out of the outages' way
    stopped: list[RabbitNode] = []
    timeline: list[str] = []

    async def outage() -> None:
        if stopped:
            began = time.monotonic()
            await cluster.start_app(stopped[-1])
            running = cluster.running_nodes(stopped[-1])
            assert len(running) == len(cluster.nodes), f"{stopped[-1].name} sees {running}"
            timeline.append(f"{stopped[-1].short} back in {time.monotonic() - began:.1f} s")
        held = await _clients_by_node(cluster, unique)
        name, count = held.most_common(1)[0]
        assert count == CLIENTS, f"clients spread over the nodes: {dict(held)}"
        node = next(n for n in cluster.nodes if n.name == name)
        assert node is not observer_node
        began = time.monotonic()
        await cluster.stop_app(node)
        stopped.append(node)
        timeline.append(
            f"{node.short} stopped ({count} clients on it) in {time.monotonic() - began:.1f} s"
        )

    figures = await run_mid_stream(
        tmp_path,
        unique,
        cluster.url,
        outage,
        jobs=JOBS,
        outages=2,
        timeout=60,
        observer_url=cluster.node_url(observer_node),
        transfer_options={"queue_type": "quorum", "delivery_limit": 10},
    )
    await cluster.start_app(stopped[-1])
    assert len(cluster.running_nodes(stopped[-1])) == len(cluster.nodes)
    _print(
        f"cluster of {len(cluster.nodes)} (up in {cluster.started_seconds:.1f} s); "
        + "; ".join(timeline),
        figures,
    )
