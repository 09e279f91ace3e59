"""Figure 7: a facade opened after the agents published, and where its time goes."""

from __future__ import annotations

import asyncio
import gc
import inspect
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

import aio_pika
from aio_pika.abc import AbstractIncomingMessage
from harness.rounds import rotated

from facade_parts import raw
from facade_parts.agents import Agents
from facade_parts.publisher import PublisherProcess
from facade_parts.results import Results
from facade_parts.settings import JSON, WAIT_S, Settings
from facade_parts.synthetic import Topology
from jupiter_bus import JupiterInterface, StateUnavailable
from jupiter_bus.agent import SNAPSHOT_REQUEST_KEY, SnapshotRequest
from jupiter_bus.messages import LinkCost
from jupiter_bus.state import NetworkState
from jupiter_bus.topology import EVENTS_EXCHANGE
from jupiter_bus.transport import connect


@dataclass(frozen=True, slots=True)
class JoinTimes:
    """One late join, in seconds from opening the facade: entered (connected, subscribed,
    request sent), first change of its state, every link held, ``get_network_data``
    returned; and this process's CPU seconds meanwhile."""

    entered: float
    first: float
    applied: float
    returned: float
    cpu: float


async def watch_fill(state: NetworkState, target: int, started: float) -> tuple[float, float]:
    """Seconds from ``started`` to the state's first change and to ``target`` links held.

    Reads ``version`` and ``link_count`` only: it holds no snapshot, so it makes the
    state copy nothing (a snapshot alive across a change makes that change copy).
    """
    version, first = state.version, None
    async with asyncio.timeout(WAIT_S):
        while state.link_count < target:
            version = await state.wait_changed(version)
            first = first or time.perf_counter() - started
    done = time.perf_counter() - started
    return first or done, done


async def late_join(url: str, topology: Topology) -> JoinTimes:
    """Open a facade after the agents published; time it until
    ``get_network_data(nodes=[all])`` returns, as a scheduler would wait."""
    gc.collect()
    started, cpu = time.perf_counter(), time.process_time()
    bus = JupiterInterface(url, connection_name="bench/facade.py late joiner")
    fill = asyncio.create_task(watch_fill(bus.network, topology.links, started))
    try:
        async with bus:
            entered = time.perf_counter() - started
            await bus.get_network_data(nodes=topology.names, timeout=WAIT_S)
            returned = time.perf_counter() - started
            cpu = time.process_time() - cpu
            first, applied = await fill
    finally:
        fill.cancel()
        await asyncio.gather(fill, return_exceptions=True)
    return JoinTimes(entered, first, applied, returned, cpu)


class RawAsker:
    """Raw aio-pika as a late joiner: a private queue, one ``snapshot.request`` asking for
    batches, and the answers of one topology's agents counted, not decoded."""

    def __init__(self, url: str, topology: Topology) -> None:
        self.url = url
        # The names block follows the short JSON header; this run's names start with it.
        self.tag = topology.prefix.encode()
        self.expected = topology.n
        self._seen = self._delivered = 0
        self._done = asyncio.Event()

    async def seconds(self) -> float:
        """Connect, ask and wait for every answer: seconds, all of it timed."""
        started = time.perf_counter()
        connection = await raw.connection(self.url, "raw asker")
        try:
            channel, queue = await raw.private_queue(connection, self._on_message)
            request_id = str(uuid.uuid4())
            exchange = await channel.get_exchange(EVENTS_EXCHANGE, ensure=False)
            body = SnapshotRequest.body(request_id, batch=True)
            await exchange.publish(
                aio_pika.Message(body, content_type=JSON, reply_to=queue.name,
                                 correlation_id=request_id, message_id=request_id),
                SNAPSHOT_REQUEST_KEY,
            )  # fmt: skip
            async with asyncio.timeout(WAIT_S):
                await self._done.wait()
            return time.perf_counter() - started
        finally:
            await connection.close()

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        self._delivered += 1
        if self.tag in message.body[:512]:  # other users' agents answer too
            self._seen += 1
            if self._seen == self.expected:
                self._done.set()
        if self._done.is_set() or self._delivered % raw.ACK_EVERY == 0:
            await message.ack(multiple=True)


async def snapshot_support(run_id: str) -> str | None:
    """``None`` if a facade opened late gets earlier updates; otherwise why not."""
    topology = Topology(run_id, 2, label="x")
    transport = await connect(topology.memory_url)
    try:
        agents, _ = await Agents.set_up(transport, topology)
        try:
            async with JupiterInterface(topology.memory_url) as bus:
                await bus.get_network_data(nodes=topology.names, timeout=1.0)
        except StateUnavailable:
            return snapshot_missing()
        finally:
            await agents.stop()
        return None
    finally:
        await transport.close()


def snapshot_missing() -> str:
    has = [name for name in dir(JupiterInterface) if "snapshot" in name.lower()]
    has += [p for p in inspect.signature(JupiterInterface).parameters if "snapshot" in p]
    if has:
        return (
            "JupiterInterface has " + ", ".join(sorted(has)) + " but a facade opened "
            "late did not receive earlier updates within 1 s (bench needs updating?)"
        )
    return (
        "JupiterInterface sends no snapshot.request when it opens (no snapshot "
        "option yet): a late joiner waits for the next publication of every link"
    )


def record_join(results: Results, bus: str, n: int, contender: str, times: JoinTimes) -> None:
    if contender == "rebuilt":
        results.add(f"late.{bus}.rebuilt", n, times.returned)
        return
    results.add(f"late.{bus}", n, times.returned)
    for part in ("entered", "first", "applied", "cpu"):
        results.add(f"late.{bus}.{part}", n, getattr(times, part))


async def late_join_memory(
    settings: Settings, topology: Topology, rows: Sequence[list[LinkCost]], results: Results
) -> None:
    """Agents and facade in this process, on a memory bus of their own."""
    n, url = topology.n, f"{topology.memory_url}-late"
    transport = await connect(url)
    try:
        agents, setup = await Agents.set_up(transport, topology, rows)
        try:
            for number in range(settings.late_join_rounds(n)):
                for contender in rotated(("facade", "rebuilt"), number):
                    if contender == "rebuilt":
                        await agents.publish_links(first=1)  # untimed
                    times = await late_join(url, topology)
                    record_join(results, "memory", n, contender, times)
        finally:
            await agents.stop()
    finally:
        await transport.close()
    for step_name, seconds in setup.items():
        results.add(f"late.memory.setup.{step_name}", n, seconds)


async def late_join_amqp(
    settings: Settings, topology: Topology, publisher: PublisherProcess, results: Results
) -> None:
    """Agents in the child process (as on other machines), the askers here, on RabbitMQ."""
    n = topology.n
    setup = publisher.start_agents(topology)  # untimed, as every publish_links below
    try:
        for number in range(settings.late_join_rounds(n)):
            for contender in rotated(("facade", "rebuilt", "raw"), number):
                if contender == "raw":
                    seconds = await RawAsker(settings.url, topology).seconds()
                    results.add("late.amqp.raw", n, seconds)
                    continue
                if contender == "rebuilt":
                    publisher.touch_links()  # untimed
                times = await late_join(settings.url, topology)
                record_join(results, "amqp", n, contender, times)
    finally:
        publisher.stop_agents()
    for step_name, seconds in setup.items():
        results.add(f"late.amqp.setup.{step_name}", n, seconds)
