"""Issue 12 item 7, load: the facade and the workers under the traffic of a real deployment.

On RabbitMQ, in one run: first idle (ten agents with resources and a local-copy
worker), then under load: fifty agents publishing resources at 1 Hz, a synthetic
profiler refreshing the links of 1,000 nodes every minute (binary ``network.batch``,
about 16,700 link updates per second), and each time 100 concurrent transfer requests.
Figures, idle against loaded: the facade's update latency (publish of one link cost to
``watch_network`` yielding it) p50/p99, and transfer throughput. Every transfer must
succeed and every probe update arrive; the latency under load must stay bounded.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from jupiter_bus import JupiterInterface
from jupiter_bus.agent import Agent, running
from jupiter_bus.batch import BATCH_CONTENT_TYPE, LinkBatch
from jupiter_bus.messages import LinkCost, encode
from jupiter_bus.topology import EVENTS_EXCHANGE, network_batch_key, network_key, work_queue
from jupiter_bus.transport import Transport, connect

from ..conftest import AMQP_URL

pytestmark = pytest.mark.amqp

SYNTHETIC_NODES = 1000
REFRESH_SECONDS = 60.0  # each synthetic node's links, once a minute
AGENTS = 50
WORKERS = 10
TRANSFERS = 100
LATENCY_SAMPLES = 200
WAIT = 60.0


def synthetic_batches(run: str) -> list[bytes]:
    """One binary ``network.batch`` per synthetic node: its links to the 999 others."""
    names = tuple(sorted(f"syn-{run}-{i:04d}" for i in range(SYNTHETIC_NODES)))
    rng = np.random.default_rng(7)
    bodies = []
    n = SYNTHETIC_NODES - 1
    for i in range(SYNTHETIC_NODES):
        others = np.array([j for j in range(SYNTHETIC_NODES) if j != i], dtype=np.uint32)
        batch = LinkBatch(
            nodes=names,
            src=np.full(n, i, dtype=np.uint32),
            dst=others,
            a=np.zeros(n),
            b=rng.uniform(0.005, 0.05, n),
            c=rng.uniform(2.0, 40.0, n),
            link_ts=np.full(n, time.time()),
            samples=np.full(n, 12, dtype=np.uint32),
            r2=np.full(n, 0.99, dtype=np.float32),
            min_kbit=np.full(n, 128.0, dtype=np.float32),
            max_kbit=np.full(n, 32768.0, dtype=np.float32),
            model=np.zeros(n, dtype=np.uint8),
        )
        bodies.append(batch.to_binary())
    return bodies


async def synthetic_profiler(bus: Transport, run: str, bodies: Sequence[bytes]) -> None:
    """Every node's batch once per REFRESH_SECONDS, spread evenly, until cancelled."""
    gap = REFRESH_SECONDS / len(bodies)
    started = time.monotonic()
    k = 0
    while True:
        body = bodies[k % len(bodies)]
        await bus.publish(
            EVENTS_EXCHANGE,
            network_batch_key(f"syn-{run}-{k % len(bodies):04d}"),
            body,
            content_type=BATCH_CONTENT_TYPE,
        )
        k += 1
        await asyncio.sleep(max(0.0, started + k * gap - time.monotonic()))


@dataclass
class Phase:
    """What one phase measured."""

    latencies: list[float]
    transfers_per_second: float
    transfer_seconds: float

    def quantile(self, q: float) -> float:
        return float(np.quantile(self.latencies, q)) * 1000


async def update_latencies(bus: Transport, facade: JupiterInterface, run: str) -> list[float]:
    """Seconds from publishing one link cost to the facade's watch yielding it."""
    src, dst = f"probe-{run}-a", f"probe-{run}-b"
    latencies = []
    async with facade.watch_network(src=src, dst=dst) as updates:
        for k in range(LATENCY_SAMPLES):
            cost = LinkCost(
                src=src, dst=dst, a=0.0, b=0.01, c=10.0 + k, samples=3, r2=1.0,
                min_kbit=8.0, max_kbit=800.0,
            )  # fmt: skip
            started = time.perf_counter()
            await bus.publish(EVENTS_EXCHANGE, network_key(src, dst), encode(cost))
            async with asyncio.timeout(WAIT):
                async for update in updates:
                    if update.id == cost.id:
                        break
            latencies.append(time.perf_counter() - started)
            await asyncio.sleep(0.005)
    return latencies


async def transfer_round(
    facade: JupiterInterface, workers: Sequence[str], folder: Path, tag: str
) -> tuple[float, int]:
    """TRANSFERS concurrent 64 KB local copies over the workers; seconds and successes."""
    (folder / tag).mkdir()
    started = time.perf_counter()
    jobs = []
    for k in range(TRANSFERS):
        source = folder / "payload.bin"
        destination = folder / tag / f"copy-{k}.bin"
        jobs.append(
            await facade.submit_transfer(
                "127.0.0.1",
                "jupiter",
                None,
                str(source),
                str(destination),
                via=workers[k % len(workers)],
                engine="local",
            )
        )
    results = await asyncio.gather(
        *(facade.wait_transfer(job, timeout=WAIT, check=False) for job in jobs)
    )
    seconds = time.perf_counter() - started
    copies = len(list((folder / tag).glob("copy-*.bin")))
    assert copies == TRANSFERS
    return seconds, sum(result.ok for result in results)


def agents(names: Sequence[str], folder: Path, *, workers: bool) -> Any:
    """In-process agents: resources at 1 Hz, and a local-copy worker when ``workers``."""
    started: list[Agent] = []
    for name in names:
        providers: dict[str, dict[str, object]] = {"resources": {"interval": 1.0}}
        if workers:
            providers["transfer"] = {
                "engine": "local",
                "allow_roots": [str(folder)],
                "state_dir": str(folder / "state" / name),
                "concurrency": 16,
            }
        started.append(Agent(name, AMQP_URL, providers, host="127.0.0.1", grace=5.0))
    return running(started, start_timeout=WAIT, stop_timeout=WAIT)


def _print(label: str, phase: Phase) -> None:
    print(
        f"\n{label}: update latency p50 {phase.quantile(0.5):.2f} ms, "
        f"p99 {phase.quantile(0.99):.2f} ms, max {max(phase.latencies) * 1000:.1f} ms "
        f"({len(phase.latencies)} updates); {TRANSFERS} concurrent transfers in "
        f"{phase.transfer_seconds:.2f} s = {phase.transfers_per_second:.0f}/s",
        flush=True,
    )


async def test_latency_and_throughput_under_a_deployments_load(tmp_path: Path) -> None:
    run = uuid.uuid4().hex[:6]
    (tmp_path / "payload.bin").write_bytes(os.urandom(64 * 1024))
    worker_names = [f"load-{run}-w{i}" for i in range(WORKERS)]
    other_names = [f"load-{run}-r{i}" for i in range(AGENTS - WORKERS)]
    bodies = await asyncio.to_thread(synthetic_batches, run)
    bus = await connect(AMQP_URL, connection_name="load test publisher")
    try:
        for name in worker_names:
            await bus.declare_work_queue(name)
        async with (
            JupiterInterface(AMQP_URL, snapshot=False) as facade,
            agents(worker_names, tmp_path, workers=True),
        ):
            idle_latency = await update_latencies(bus, facade, run)
            seconds, ok = await transfer_round(facade, worker_names, tmp_path, "idle")
            assert ok == TRANSFERS
            idle = Phase(idle_latency, TRANSFERS / seconds, seconds)

            async with agents(other_names, tmp_path, workers=False):
                profiler = asyncio.create_task(synthetic_profiler(bus, run, bodies))
                try:
                    await asyncio.sleep(3.0)  # the load in full swing
                    loaded_latency = await update_latencies(bus, facade, run)
                    seconds, ok = await transfer_round(facade, worker_names, tmp_path, "load")
                    assert ok == TRANSFERS
                    loaded = Phase(loaded_latency, TRANSFERS / seconds, seconds)
                    # what the facade took in meanwhile: 50 nodes' resources, 1,000 nodes' links
                    held = facade.network.link_count
                    nodes = len(facade.resources.nodes)
                finally:
                    profiler.cancel()
                    await asyncio.gather(profiler, return_exceptions=True)
    finally:
        for name in worker_names:
            await bus.delete_queue(work_queue(name))
        await bus.close()
    _print("idle (10 agents)", idle)
    _print("loaded (50 agents at 1 Hz, 1,000-node links, 16.7k link updates/s)", loaded)
    print(
        f"facade held {held} links and {nodes} nodes' resources; latency p99 "
        f"{loaded.quantile(0.99) / idle.quantile(0.99):.1f}x idle, throughput "
        f"{loaded.transfers_per_second / idle.transfers_per_second:.2f}x idle; "
        f"p50 {statistics.median(loaded.latencies) * 1000:.2f} ms",
        flush=True,
    )
    assert nodes >= AGENTS
    assert held >= 50_000  # a few seconds of the synthetic profiler at least
    assert loaded.quantile(0.99) < 1000.0  # bounded: under a second even under load
