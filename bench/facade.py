"""The facade and its live state at scale: 10, 100 and 1,000 nodes, side by side, in one run.

Run it from the repository root (RabbitMQ is needed for the bus figures; without one
they are reported as skipped)::

    python bench/facade.py                     # full run: about 11 minutes
    python bench/facade.py --quick             # under 90 s; 1,000 nodes skip RabbitMQ
    python bench/facade.py --nodes 10,100      # other node counts
    python bench/facade.py --url amqp://guest:guest@127.0.0.1:5672/ --rounds 5

Synthetic ``network.cost`` events (one per directed link; 1,000 nodes make 999,000 links)
and ``network.batch`` bodies (one per source node: its N-1 links) feed
:class:`~jupiter_bus.state.NetworkState` and :class:`~jupiter_bus.JupiterInterface`.
Figures, each with its aim from DESIGN section 5 and whether it is met:

1. ingest in process: ``NetworkState.apply`` and ``apply_many`` from already decoded
   :class:`~jupiter_bus.messages.LinkCost` objects, and the full path
   ``decode(bytes) -> apply``; then through the facade on the ``memory://`` bus
   (publish, route, decode, apply, all in this process);
2. ingest through RabbitMQ: a child process publishes per-link JSON events with the
   transport while this process is held, then the link updates/s reaching the facade's
   state as it drains that backlog, next to a ``transport.subscribe`` feed and raw
   aio-pika (the baseline), both without decoding; the full run extrapolates 1,000 nodes
   from a 100k-update sample; 2b. the same with binary ``network.batch`` bodies on
   ``network-batch.<src>`` (one per source), in link updates/s; 2c. encode and decode
   of one source's links and of all links: per-link JSON, batch JSON, batch binary;
3. ``get_network_data()`` latency (data present), plain and with ``nodes=[all]``;
4. Jupiter's formats: ``heft_rows``, ``tgff_quadratic``, ``wave`` (one source) and
   ``ResourceData.to_jupiter()``;
5. state memory (``tracemalloc`` while the state fills, and ``NetworkState.nbytes``);
6. update-to-facade latency on RabbitMQ (publish one ``LinkCost``, time until
   ``watch_network()`` yields it), next to raw aio-pika publish -> consume;
7. late joiner: one agent per node publishes its links with
   ``NodeContext.publish_links`` (one batch each); a ``JupiterInterface`` opened
   afterwards is timed until ``get_network_data(nodes=[all])`` returns (agents answer
   its ``snapshot.request`` with one batch each), with where the time goes; reported
   "not available" when the facade does not fetch a snapshot.

Rates and ratios are medians over ``--rounds`` rounds; node names carry the run id, so
other users of the same broker do not disturb the figures (see bench/README.md).
"""

from __future__ import annotations

import abc
import argparse
import asyncio
import contextlib
import gc
import importlib.metadata
import inspect
import logging
import math
import os
import platform
import statistics
import subprocess
import sys
import textwrap
import time
import tracemalloc
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, ClassVar, Final

import aio_pika
import orjson
from aio_pika.abc import AbstractIncomingMessage, AbstractRobustConnection

from jupiter_bus import JupiterInterface, StateUnavailable
from jupiter_bus.agent import SNAPSHOT_REQUEST_KEY, Agent, SnapshotRequest
from jupiter_bus.batch import BATCH_CONTENT_TYPE, LinkBatch, decode_batch
from jupiter_bus.messages import LinkCost, ResourceSample, decode, encode
from jupiter_bus.state import NetworkState
from jupiter_bus.topology import EVENTS_EXCHANGE, network_batch_key, network_key, resource_key
from jupiter_bus.transport import Subscription, Transport, connect
from jupiter_bus.transport.base import DEFAULT_MAX_BACKLOG

DEFAULT_URL: Final = "amqp://guest:guest@127.0.0.1:5672/"
SCRIPT: Final = os.path.abspath(__file__)
JSON: Final = "application/json"
NETWORK_PATTERN: Final = "network.*.*"
BATCH_PATTERN: Final = "network-batch.*"
# The facade's AMQP subscription consumes with prefetch 512 and acks every 128
# deliveries (jupiter_bus.transport.amqp); the raw baseline uses the same settings.
SUBSCRIPTION_PREFETCH: Final = 512
ACK_EVERY: Final = 128
PUBLISH_WINDOW: Final = 500
MEMORY_CHUNK: Final = 10_000  # published before draining: far below the 100k backlog bound
WAIT_S: Final = 300.0
LATENCY_WARMUP: Final = 20

INGEST_AIM: Final = 100_000.0  # link updates/s, in process
READ_AIM_US: Final = 1_000.0  # get_network_data() "in microseconds", at 100 nodes
FORMAT_AIM_MS: Final = 10.0  # each Jupiter format, at 100 nodes
MEMORY_AIM_MB: Final = 64.0  # at 1,000 nodes
LATENCY_AIM_MS: Final = 5.0  # p99 event-to-facade on loopback
LATE_JOIN_AIM_S: Final = 1.0  # at 1,000 nodes
AIM_NODES: Final = 100  # where the read and format aims apply
SCALE_NODES: Final = 1_000  # where the memory and late-joiner aims apply
MB: Final = 1e6


@dataclass(frozen=True, slots=True)
class Settings:
    """How much work each figure does; the same for every contender of a figure."""

    url: str
    quick: bool
    nodes: tuple[int, ...]
    rounds: int
    # Updates per sample: every link once, repeated up to ``*_min`` for small node
    # counts, cut to ``*_max`` (a sample of the links) for large ones.
    inproc_min: int
    inproc_max: int
    memory_bus_min: int
    memory_bus_max: int
    amqp_min: int
    amqp_max: int
    amqp_rounds: int
    amqp_max_nodes: int  # larger node counts skip RabbitMQ ingest
    batch_links_min: int  # links per batch-ingest sample: every source once, or more
    latency_samples: int
    read_budget_s: float  # time spent repeating one read
    format_budget_s: float  # ... one conversion to Jupiter's formats
    codec_budget_s: float  # ... one encoding or decoding of one source's links
    codec_rounds: int  # encodings and decodings of every link
    late_join_max_nodes: int  # on the memory bus
    late_join_amqp_max_nodes: int
    late_join_scale_rounds: int  # rounds from SCALE_NODES nodes up

    def inproc_count(self, links: int) -> int:
        return min(self.inproc_max, max(self.inproc_min, links))

    def memory_bus_count(self, links: int) -> int:
        return min(self.memory_bus_max, max(self.memory_bus_min, links))

    def amqp_count(self, links: int) -> int:
        return min(self.amqp_max, max(self.amqp_min, links))

    def batch_count(self, n: int) -> int:
        """Batch messages per sample: one per source, cycling until ``batch_links_min``."""
        return max(n, -(-self.batch_links_min // (n - 1)))

    def late_join_rounds(self, n: int) -> int:
        return self.late_join_scale_rounds if n >= SCALE_NODES else self.rounds


def settings_for(url: str, quick: bool, nodes: tuple[int, ...], rounds: int | None) -> Settings:
    if quick:
        return Settings(
            url,
            True,
            nodes,
            rounds or 3,
            inproc_min=50_000,
            inproc_max=50_000,
            memory_bus_min=30_000,
            memory_bus_max=30_000,
            amqp_min=4_000,
            amqp_max=4_000,
            amqp_rounds=2,
            amqp_max_nodes=100,
            batch_links_min=10_000,
            latency_samples=200,
            read_budget_s=0.3,
            format_budget_s=0.3,
            codec_budget_s=0.1,
            codec_rounds=1,
            late_join_max_nodes=1_000,
            late_join_amqp_max_nodes=100,
            late_join_scale_rounds=1,
        )
    return Settings(
        url,
        False,
        nodes,
        rounds or 3,
        inproc_min=200_000,
        inproc_max=1_000_000,
        memory_bus_min=100_000,
        memory_bus_max=1_000_000,
        amqp_min=20_000,
        amqp_max=100_000,
        amqp_rounds=2,
        amqp_max_nodes=1_000,
        batch_links_min=100_000,
        latency_samples=1_000,
        read_budget_s=1.0,
        format_budget_s=4.0,
        codec_budget_s=1.0,
        codec_rounds=rounds or 3,
        late_join_max_nodes=1_000,
        late_join_amqp_max_nodes=1_000,
        late_join_scale_rounds=rounds or 3,
    )


# -- synthetic link costs ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Topology:
    """``n`` nodes named after the run; link ``k`` is the k-th (src, dst) pair, row by row."""

    run_id: str  # hex: it starts every update's id
    n: int
    label: str = ""  # tells apart topologies of one run

    @property
    def prefix(self) -> str:
        """What every node name starts with."""
        return f"b{self.run_id}{self.label}n"

    @property
    def names(self) -> list[str]:
        return [f"{self.prefix}{i:04d}" for i in range(self.n)]

    @property
    def links(self) -> int:
        return self.n * (self.n - 1)

    @property
    def memory_url(self) -> str:
        """An in-process bus of its own."""
        return f"memory://bench-facade-{self.run_id}{self.label}-{self.n}"

    def pair(self, k: int, names: Sequence[str]) -> tuple[str, str]:
        i, r = divmod(k % self.links, self.n - 1)
        return names[i], names[r if r < i else r + 1]


def link_body(run_id: str, k: int, src: str, dst: str, ts: float) -> bytes:
    """The JSON body ``encode`` writes for update ``k`` of a link (checked at start-up)."""
    return orjson.dumps(
        {
            "v": 1,
            "type": "network.cost",
            "id": f"{run_id}-0000-4000-8000-{k:012x}",
            "ts": ts + k * 1e-6,
            "src": src,
            "dst": dst,
            "a": 1e-9 * (k % 7 + 1),
            "b": 0.001 + (k % 13) * 1e-5,
            "c": 40.0 + k % 17,
            "samples": 10 + k % 5,
            "r2": 0.99,
            "min_kbit": 8.0,
            "max_kbit": 80_000.0,
            "model": "quadratic",
        }
    )


def keyed_bodies(topology: Topology, start: int, count: int) -> list[tuple[str, bytes]]:
    """``count`` updates (routing key, body), cycling over the links from link ``start``."""
    names, ts = topology.names, time.time()
    out = []
    for k in range(start, start + count):
        src, dst = topology.pair(k, names)
        out.append((f"network.{src}.{dst}", link_body(topology.run_id, k, src, dst, ts)))
    return out


_set: Final = object.__setattr__


def fabricated_row(topology: Topology, i: int, names: Sequence[str]) -> list[LinkCost]:
    """Source ``i``'s links as :class:`LinkCost` objects built without re-validation.

    Only for untimed fills (memory, reads, formats, the agents' links): ten times faster
    than the validating constructor, and equal to what ``decode`` returns (checked at
    start-up).
    """
    row = []
    ts = time.time()
    for k in range(i * (topology.n - 1), (i + 1) * (topology.n - 1)):
        src, dst = topology.pair(k, names)
        cost = object.__new__(LinkCost)
        for name, value in (
            ("id", f"{topology.run_id}-0000-4000-8000-{k:012x}"),
            ("ts", ts),
            ("src", src),
            ("dst", dst),
            ("a", 1e-9 * (k % 7 + 1)),
            ("b", 0.001 + (k % 13) * 1e-5),
            ("c", 40.0 + k % 17),
            ("samples", 10 + k % 5),
            ("r2", 0.99),
            ("min_kbit", 8.0),
            ("max_kbit", 80_000.0),
            ("model", "quadratic"),
        ):
            _set(cost, name, value)
        row.append(cost)
    return row


def fabricated_rows(topology: Topology) -> list[list[LinkCost]]:
    """Every source's row (:func:`fabricated_row`), source by source."""
    names = topology.names
    return [fabricated_row(topology, i, names) for i in range(topology.n)]


def batch_bodies(topology: Topology, count: int) -> list[tuple[str, bytes]]:
    """``count`` binary ``network.batch`` bodies (routing key, body): source ``i`` carries
    its N-1 links on ``network-batch.<src>``, cycling over the sources."""
    names = topology.names
    rows = min(count, topology.n)
    bodies = [
        (
            network_batch_key(names[i]),
            LinkBatch.from_costs(fabricated_row(topology, i, names)).to_binary(),
        )
        for i in range(rows)
    ]
    return [bodies[k % rows] for k in range(count)]


def check_synthetic(run_id: str) -> None:
    """The synthetic bodies are the codec's own encoding; fabricated rows equal decoded ones."""
    topology = Topology(run_id, 3)
    names = topology.names
    row = fabricated_row(topology, 0, names)
    for (_, body), made in zip(keyed_bodies(topology, 0, 2), row, strict=True):
        cost = decode(body, LinkCost)
        if encode(cost) != body:
            raise AssertionError("synthetic body differs from encode(decode(body))")
        if decode(encode(made), LinkCost) != made:
            raise AssertionError("a fabricated LinkCost does not survive encode/decode")
    (_, body), *_ = batch_bodies(topology, 1)
    again = [(c.src, c.dst, c.a, c.b, c.c) for c in decode_batch(body).costs()]
    if again != [(c.src, c.dst, c.a, c.b, c.c) for c in row]:
        raise AssertionError("a fabricated row does not survive a binary network.batch")


# -- small helpers ----------------------------------------------------------------------


def percentile(ordered: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile of already sorted samples."""
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


def live_only(url: str, **options: Any) -> JupiterInterface:
    """A facade that does not ask for a snapshot on entering (where the option exists):
    agents of other users of the broker must not add answers to the updates counted."""
    if "snapshot" in inspect.signature(JupiterInterface).parameters:
        options["snapshot"] = False
    return JupiterInterface(url, **options)


@contextlib.contextmanager
def frozen_gc() -> Iterator[None]:
    """Leave the objects alive now out of garbage collection while the block runs.

    The bench holds up to 999,000 fabricated :class:`LinkCost` objects (the agents'
    links; in a deployment they live on the nodes): each full collection would walk
    them all, a cost of the bench, not of what is measured.
    """
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


async def until_version(state: NetworkState, target: int, timeout: float) -> None:
    """Wait until ``state`` has applied changes up to version ``target``."""
    async with asyncio.timeout(timeout):
        while state.version < target:
            await state.wait_changed(state.version)


def enough(samples: Sequence[float], budget_s: float, most: int) -> bool:
    """Stop repeating: the budget is spent (after 3 calls, or 1 that alone exceeded it)."""
    if len(samples) >= most:
        return True
    return sum(samples) >= budget_s and (len(samples) >= 3 or samples[0] >= budget_s)


def repeat_timed(work: Callable[[], object], budget_s: float, most: int = 10_000) -> list[float]:
    """Seconds per call of ``work``, repeated for about ``budget_s``."""
    samples: list[float] = []
    while not samples or not enough(samples, budget_s, most):
        started = time.perf_counter()
        work()
        samples.append(time.perf_counter() - started)
    return samples


async def repeat_timed_async(
    work: Callable[[], Any], budget_s: float, most: int = 20_000
) -> list[float]:
    """As :func:`repeat_timed`, for a coroutine function."""
    samples: list[float] = []
    while not samples or not enough(samples, budget_s, most):
        started = time.perf_counter()
        await work()
        samples.append(time.perf_counter() - started)
    return samples


@dataclass(slots=True)
class Results:
    """Per-round values of each figure, by node count."""

    values: dict[tuple[str, int], list[float]] = field(default_factory=dict)

    def add(self, key: str, n: int, value: float) -> None:
        self.values.setdefault((key, n), []).append(value)

    def get(self, key: str, n: int) -> float | None:
        values = self.values.get((key, n))
        return statistics.median(values) if values else None

    def ratio(self, key: str, base: str, n: int) -> float | None:
        """Median of per-round ratios (each pair ran back to back)."""
        a, b = self.values.get((key, n)), self.values.get((base, n))
        if not a or not b or len(a) != len(b):
            return None
        return statistics.median(x / y for x, y in zip(a, b, strict=True))


# -- 1. ingest in process ----------------------------------------------------------------


def inproc_round(chunks: Iterable[tuple[list[bytes], list[LinkCost]]], n: int) -> dict[str, float]:
    """One round on fresh states: seconds for apply, apply_many (per source row), decode->apply."""
    plain, many, full = NetworkState(), NetworkState(), NetworkState()
    took = {"apply": 0.0, "many": 0.0, "full": 0.0}
    row = max(1, n - 1)
    for bodies, costs in chunks:
        gc.collect()
        started = time.perf_counter()
        apply = plain.apply
        for cost in costs:
            apply(cost)
        took["apply"] += time.perf_counter() - started

        started = time.perf_counter()
        apply_many = many.apply_many
        for i in range(0, len(costs), row):
            apply_many(costs[i : i + row])
        took["many"] += time.perf_counter() - started

        started = time.perf_counter()
        apply = full.apply
        for body in bodies:
            message = decode(body)
            if isinstance(message, LinkCost):  # as the facade's pump does
                apply(message)
        took["full"] += time.perf_counter() - started
    return took


def inproc_chunks(topology: Topology, count: int) -> Iterator[tuple[list[bytes], list[LinkCost]]]:
    """Bodies and their decoded objects, 100k at a time (untimed)."""
    for start in range(0, count, 100_000):
        bodies = [body for _, body in keyed_bodies(topology, start, min(100_000, count - start))]
        yield bodies, [decode(body, LinkCost) for body in bodies]


def measure_inproc(settings: Settings, topology: Topology, results: Results) -> None:
    n, count = topology.n, settings.inproc_count(topology.links)
    cached = list(inproc_chunks(topology, count)) if count <= 250_000 else None
    for _ in range(settings.rounds):
        chunks = cached if cached is not None else inproc_chunks(topology, count)
        took = inproc_round(chunks, n)
        for name, seconds in took.items():
            results.add(f"inproc.{name}", n, count / seconds)


# -- 1b. ingest through the facade on the memory bus -------------------------------------


async def memory_bus_round(url: str, updates: Sequence[tuple[str, bytes]]) -> float:
    """Seconds from the first publish to the last update applied in a fresh facade."""
    async with await connect(url) as publisher, live_only(url) as bus:
        state = bus.network
        first = state.version
        gc.collect()
        started = time.perf_counter()
        for start in range(0, len(updates), MEMORY_CHUNK):
            part = updates[start : start + MEMORY_CHUNK]
            for key, body in part:
                await publisher.publish(EVENTS_EXCHANGE, key, body)
            await until_version(state, first + start + len(part), WAIT_S)
        return time.perf_counter() - started


async def measure_memory_bus(settings: Settings, topology: Topology, results: Results) -> None:
    n, count = topology.n, settings.memory_bus_count(topology.links)
    url = topology.memory_url
    updates = keyed_bodies(topology, 0, count)
    for _ in range(settings.rounds):
        results.add("mem.facade", n, count / await memory_bus_round(url, updates))


# -- 3-5. memory, reads and Jupiter's formats on a full state -------------------------------


def measure_state_memory(rows: Sequence[list[LinkCost]], n: int, results: Results) -> None:
    """tracemalloc from an empty state to every link held (rows built beforehand)."""
    gc.collect()
    tracemalloc.start()
    try:
        base, _ = tracemalloc.get_traced_memory()
        state = NetworkState()
        for row in rows:
            state.apply_many(row)
        current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    results.add("memory.current", n, (current - base) / MB)
    results.add("memory.peak", n, (peak - base) / MB)
    results.add("memory.nbytes", n, state.nbytes / MB)
    results.add("memory.links", n, state.link_count)


def resource_sample(node: str, i: int) -> ResourceSample:
    return ResourceSample(
        node=node,
        cpu_percent=10.0 + i % 80,
        cpu_count=8,
        memory_percent=30.0 + i % 60,
        memory_total_bytes=16_000_000_000,
        memory_available_bytes=8_000_000_000,
        host=f"10.{i // 65536 % 256}.{i // 256 % 256}.{i % 256}",
        ssh_port=22,
    )


async def measure_reads_and_formats(
    settings: Settings, topology: Topology, rows: Sequence[list[LinkCost]], results: Results
) -> None:
    """A facade on the memory bus with every link and resource held; time reads and formats."""
    n, names = topology.n, topology.names
    url = topology.memory_url
    async with await connect(url) as publisher, live_only(url) as bus:
        for row in rows:  # straight into the facade's state: the fill is not what is timed
            bus.network.apply_many(row)
        for i, node in enumerate(names):
            await publisher.publish(
                EVENTS_EXCHANGE, resource_key(node), encode(resource_sample(node, i))
            )
        resources = await bus.get_resource_data(nodes=names, timeout=WAIT_S)
        await bus.get_network_data(nodes=names, timeout=WAIT_S)
        budget = settings.read_budget_s

        async def plain() -> None:
            await bus.get_network_data()

        async def every_node() -> None:
            await bus.get_network_data(nodes=names)

        for key, work in (("read.plain", plain), ("read.all", every_node)):
            samples = sorted(await repeat_timed_async(work, budget))
            results.add(f"{key}.p50", n, percentile(samples, 0.50) * 1e6)
            results.add(f"{key}.p99", n, percentile(samples, 0.99) * 1e6)
        data = await bus.get_network_data()
        ips = resources.ips()
        formats: dict[str, Callable[[], object]] = {
            "heft_rows": lambda: data.heft_rows(ips=ips),
            "tgff_quadratic": data.tgff_quadratic,
            "wave": lambda: data.wave(names[0], ips),
            "to_jupiter": resources.to_jupiter,
        }
        for key, convert in formats.items():
            gc.collect()
            samples = repeat_timed(convert, settings.format_budget_s, most=200)
            results.add(f"format.{key}", n, statistics.median(samples) * 1e3)


async def measure_full_state(
    settings: Settings, topology: Topology, rows: Sequence[list[LinkCost]], results: Results
) -> None:
    measure_state_memory(rows, topology.n, results)
    await measure_reads_and_formats(settings, topology, rows, results)


# -- 2. ingest through RabbitMQ: a publisher process and three consumers ------------------


def topology_command(cmd: str, topology: Topology, **more: Any) -> dict[str, Any]:
    return {"cmd": cmd, "run_id": topology.run_id, "label": topology.label, "n": topology.n,
            **more}  # fmt: skip


class PublisherProcess:
    """This script run as ``--publisher-child``: publishes prepared updates on command,
    and runs the late-joiner section's agents.

    Its methods block on purpose: while :meth:`publish` waits for the child, this
    process's event loop is held, so no consumer here reads until the backlog is
    complete, and the consumers are then timed draining it (as ``bus.py`` times
    consuming a pre-filled queue).
    """

    def __init__(self, url: str) -> None:
        self._process = subprocess.Popen(
            [sys.executable, SCRIPT, "--publisher-child", "--url", url],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )

    def _ask(self, command: dict[str, Any]) -> dict[str, Any]:
        process = self._process
        assert process.stdin is not None
        assert process.stdout is not None
        process.stdin.write(orjson.dumps(command) + b"\n")
        process.stdin.flush()
        line = process.stdout.readline()
        if not line:
            raise RuntimeError(f"the publisher process ended (exit code {process.poll()})")
        answer: dict[str, Any] = orjson.loads(line)
        if "error" in answer:
            raise RuntimeError(f"publisher process: {answer['error']}")
        return answer

    def prepare(self, feed: Feed, topology: Topology, count: int) -> None:
        """Have the child encode ``count`` messages of ``feed`` for ``topology`` (untimed)."""
        self._ask(topology_command("prepare", topology, kind=feed.kind, count=count))

    def publish(self, feed: Feed, count: int) -> float:
        """Publish the first ``count`` prepared messages, holding this process meanwhile;
        the child's seconds."""
        command = {"cmd": "go", "kind": feed.kind, "count": count, "window": PUBLISH_WINDOW}
        return float(self._ask(command)["seconds"])

    def start_agents(self, topology: Topology) -> dict[str, float]:
        """One agent per node of ``topology`` in the child, each publishing its links as one
        batch; the child's seconds to build the links, start the agents and publish."""
        answer = self._ask(topology_command("agents", topology))
        return {key: float(value) for key, value in answer.items()}

    def touch_links(self) -> float:
        """Every agent publishes its first link again: its next answer is built anew."""
        return float(self._ask({"cmd": "touch"})["seconds"])

    def stop_agents(self) -> None:
        self._ask({"cmd": "stop-agents"})

    def close(self) -> None:
        process = self._process
        if process.stdin is not None:
            process.stdin.close()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@dataclass(slots=True)
class PublisherChild:
    """The child side of :class:`PublisherProcess`: one JSON command in, one answer out."""

    transport: Transport
    prepared: dict[str, list[tuple[str, bytes]]] = field(default_factory=dict)
    agents: Agents | None = None

    async def handle(self, command: dict[str, Any]) -> dict[str, Any]:
        topology = Topology(
            command.get("run_id", ""), command.get("n", 2), command.get("label", "")
        )
        cmd, kind = command["cmd"], command.get("kind", "links")
        if cmd == "prepare":
            make = batch_bodies if kind == "batches" else partial(keyed_bodies, start=0)
            self.prepared[kind] = make(topology, count=command["count"])
            return {"ready": len(self.prepared[kind])}
        if cmd == "go":
            part = self.prepared[kind][: command["count"]]
            content_type = BATCH_CONTENT_TYPE if kind == "batches" else JSON
            return {"seconds": await publish_all(self.transport, part, command["window"],
                                                 content_type)}  # fmt: skip
        if cmd == "agents":
            self.agents, timings = await Agents.set_up(self.transport, topology)
            gc.collect()
            gc.freeze()  # the agents' 999,000 links: no full collection walks them again
            return timings
        if cmd == "touch" and self.agents is not None:
            return {"seconds": await self.agents.publish_links(first=1)}
        if cmd == "stop-agents" and self.agents is not None:
            await self.close()
            gc.unfreeze()
            return {"stopped": True}
        return {"error": f"unknown command {cmd!r} (or no agents running)"}

    async def close(self) -> None:
        agents, self.agents = self.agents, None
        if agents is not None:
            await agents.stop()


async def publisher_child(url: str) -> None:
    """Read commands from stdin until it closes; answer each on stdout."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    transport = await connect(url, connection_name="bench/facade.py publisher")
    child = PublisherChild(transport)

    def answer(obj: dict[str, Any]) -> None:
        sys.stdout.write(orjson.dumps(obj).decode() + "\n")
        sys.stdout.flush()

    try:
        while line := await reader.readline():
            answer(await child.handle(orjson.loads(line)))
    except Exception as exc:
        answer({"error": f"{type(exc).__name__}: {exc}"})
    finally:
        await child.close()
        await transport.close()


async def publish_all(
    transport: Transport, updates: Sequence[tuple[str, bytes]], window: int, content_type: str
) -> float:
    """Publish every update with ``window`` confirms outstanding; seconds taken."""
    pending = iter(updates)

    async def worker() -> None:
        for key, body in pending:
            await transport.publish(EVENTS_EXCHANGE, key, body, content_type=content_type)

    started = time.perf_counter()
    async with asyncio.TaskGroup() as tasks:
        for _ in range(min(window, len(updates))):
            tasks.create_task(worker())
    return time.perf_counter() - started


@dataclass(frozen=True, slots=True)
class Feed:
    """What the child publishes for one ingest figure, and how results are keyed."""

    prefix: str  # of the result keys
    kind: str  # the child's prepared messages: "links" or "batches"
    pattern: str  # what the raw and transport consumers bind
    links_per_message: int


def link_feed() -> Feed:
    return Feed("amqp", "links", NETWORK_PATTERN, 1)


def batch_feed(n: int) -> Feed:
    return Feed("amqpb", "batches", BATCH_PATTERN, n - 1)


class Sink(abc.ABC):
    """A consumer of one topic pattern that counts what reached it."""

    label: ClassVar[str]
    key: ClassVar[str]

    def __init__(self, url: str, run_id: str, pattern: str) -> None:
        self.url = url
        self.run_id = run_id
        self.pattern = pattern

    @abc.abstractmethod
    async def open(self) -> None:
        """Subscribe (bound before anything is published)."""

    @abc.abstractmethod
    async def close(self) -> None: ...

    @abc.abstractmethod
    def expect(self, count: int) -> None:
        """Start counting: :meth:`arrived` waits for ``count`` more messages."""

    @abc.abstractmethod
    async def arrived(self, timeout: float) -> None: ...


class CountingSink(Sink):
    """A sink that counts deliveries itself and sets an event at the target."""

    def __init__(self, url: str, run_id: str, pattern: str) -> None:
        super().__init__(url, run_id, pattern)
        self._seen = 0
        self._target = 0
        self._done = asyncio.Event()

    def expect(self, count: int) -> None:
        self._target = self._seen + count
        self._done = asyncio.Event()

    def _count(self) -> bool:
        self._seen += 1
        if self._seen == self._target:
            self._done.set()
            return True
        return False

    async def arrived(self, timeout: float) -> None:
        async with asyncio.timeout(timeout):
            await self._done.wait()


class RawSink(CountingSink):
    """Raw aio-pika: a private queue like the facade's, a consume callback, no decoding."""

    label = "raw aio-pika"
    key = "raw"

    async def open(self) -> None:
        self._connection = await aio_pika.connect_robust(
            self.url, client_properties={"connection_name": "bench/facade.py raw"}
        )
        channel = await self._connection.channel(publisher_confirms=False)
        await channel.set_qos(prefetch_count=SUBSCRIPTION_PREFETCH)
        queue = await channel.declare_queue(
            f"bench.facade.{self.run_id}.raw.{uuid.uuid4().hex[:6]}",
            exclusive=True,
            auto_delete=True,
            arguments={"x-max-length": DEFAULT_MAX_BACKLOG},
        )
        await queue.bind(EVENTS_EXCHANGE, self.pattern)
        await queue.consume(self._on_message)

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        last = self._count()
        if last or self._seen % ACK_EVERY == 0:
            await message.ack(multiple=True)

    async def close(self) -> None:
        await self._connection.close()


class TransportSink(CountingSink):
    """``transport.subscribe([pattern])``: the facade's feed without decode or state."""

    label = "transport.subscribe"
    key = "sub"

    async def open(self) -> None:
        self._transport = await connect(self.url, connection_name="bench/facade.py subscribe")
        self._feed: Subscription = self._transport.subscribe([self.pattern])
        await self._feed.start()
        self._task = asyncio.create_task(self._drain())

    async def _drain(self) -> None:
        async for _ in self._feed:
            self._count()

    async def close(self) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        await self._transport.close()


class FacadeSink(Sink):
    """``JupiterInterface``: messages counted when applied to its network state (a batch
    is one change of the state's version, a ``network.cost`` one too)."""

    label = "JupiterInterface"
    key = "facade"

    async def open(self) -> None:
        self._bus = live_only(self.url, connection_name="bench/facade.py facade")
        await self._bus.__aenter__()
        self._target = 0

    def expect(self, count: int) -> None:
        self._target = self._bus.network.version + count

    async def arrived(self, timeout: float) -> None:
        await until_version(self._bus.network, self._target, timeout)

    async def close(self) -> None:
        await self._bus.close()


SINKS: Final[tuple[type[Sink], ...]] = (RawSink, TransportSink, FacadeSink)


async def amqp_sample(
    sink: Sink, publisher: PublisherProcess, feed: Feed, count: int, n: int, results: Results
) -> None:
    """One contender, one sample: subscribe, fill its backlog, time draining it."""
    await sink.open()
    try:
        sink.expect(count)
        gc.collect()
        publish_s = publisher.publish(feed, count)  # blocks: nothing here consumes meanwhile
        wall, cpu = time.perf_counter(), time.process_time()
        await sink.arrived(WAIT_S)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    finally:
        await sink.close()
    links = count * feed.links_per_message
    results.add(f"{feed.prefix}.{sink.key}", n, links / wall)
    results.add(f"{feed.prefix}.{sink.key}.cpu", n, cpu / count * 1e6)
    results.add(f"{feed.prefix}.pub", n, links / publish_s)


async def amqp_rounds(
    settings: Settings,
    topology: Topology,
    publisher: PublisherProcess,
    feed: Feed,
    count: int,
    results: Results,
) -> None:
    """Prepare ``count`` messages, warm up, then each contender per round, rotated."""
    n = topology.n
    publisher.prepare(feed, topology, count)
    sinks = [kind(settings.url, topology.run_id, feed.pattern) for kind in SINKS]
    warm_up = min(count, max(10, 1_000 // feed.links_per_message))
    await amqp_sample(sinks[-1], publisher, feed, warm_up, n, Results())
    for number in range(settings.amqp_rounds):
        turn = number % len(sinks)
        for sink in sinks[turn:] + sinks[:turn]:
            await amqp_sample(sink, publisher, feed, count, n, results)


async def measure_amqp_ingest(
    settings: Settings, topology: Topology, publisher: PublisherProcess, results: Results
) -> None:
    """Per-link JSON events, then binary batches (one per source) of the same topology."""
    count = settings.amqp_count(topology.links)
    await amqp_rounds(settings, topology, publisher, link_feed(), count, results)
    count = settings.batch_count(topology.n)
    await amqp_rounds(settings, topology, publisher, batch_feed(topology.n), count, results)


# -- 2c. encodings of network.batch (on the links of figures 3-5) ---------------------

CODECS: Final = ("links", "json", "binary")  # per-link network.cost JSON, batch JSON, binary


def codec_one_source(settings: Settings, row: list[LinkCost], results: Results, n: int) -> None:
    """ms per encode / decode / decode+apply of one source's N-1 links, each encoding."""
    batch = LinkBatch.from_costs(row)
    bodies = {"links": [encode(c) for c in row], "json": [batch.to_json()],
              "binary": [batch.to_binary()]}  # fmt: skip
    links_state, batch_state = NetworkState(), NetworkState()

    def decode_apply_links() -> None:
        apply = links_state.apply
        for body in bodies["links"]:
            message = decode(body)
            if isinstance(message, LinkCost):  # as the facade's pump does
                apply(message)

    work: dict[str, dict[str, Callable[[], object]]] = {
        "links": {
            "encode": lambda: [encode(c) for c in row],
            "decode": lambda: [decode(b) for b in bodies["links"]],
            "apply": decode_apply_links,
        },
        "json": {
            "encode": batch.to_json,
            "decode": lambda: decode_batch(bodies["json"][0]),
            "apply": lambda: batch_state.apply_batch(decode_batch(bodies["json"][0])),
        },
        "binary": {
            "encode": batch.to_binary,
            "decode": lambda: decode_batch(bodies["binary"][0]),
            "apply": lambda: batch_state.apply_batch(decode_batch(bodies["binary"][0])),
        },
    }
    timed: list[tuple[str, str, Callable[[], object]]] = [
        ("columns", "build", lambda: LinkBatch.from_costs(row))
    ]
    timed += [(codec, op, call) for codec, ops in work.items() for op, call in ops.items()]
    for codec, op, call in timed:
        samples = repeat_timed(call, settings.codec_budget_s, most=2_000)
        results.add(f"codec.{codec}.{op}.one", n, statistics.median(samples) * 1e3)
    for codec, parts in bodies.items():
        results.add(f"codec.{codec}.bytes", n, sum(map(len, parts)) / len(row))


def codec_all_links(rows: Sequence[list[LinkCost]], results: Results, n: int) -> None:
    """Seconds to build, encode, decode and decode+apply every source's batch (N batches)."""
    gc.collect()
    started = time.perf_counter()
    batches = [LinkBatch.from_costs(row) for row in rows]
    results.add("codec.columns.build.all", n, time.perf_counter() - started)
    for codec in ("json", "binary"):
        convert = LinkBatch.to_json if codec == "json" else LinkBatch.to_binary
        started = time.perf_counter()
        bodies = [convert(batch) for batch in batches]
        results.add(f"codec.{codec}.encode.all", n, time.perf_counter() - started)
        started = time.perf_counter()
        for body in bodies:
            decode_batch(body)
        results.add(f"codec.{codec}.decode.all", n, time.perf_counter() - started)
        state = NetworkState()  # fresh: it grows to N nodes, as a late joiner's does
        started = time.perf_counter()
        for body in bodies:
            state.apply_batch(decode_batch(body))
        results.add(f"codec.{codec}.apply.all", n, time.perf_counter() - started)
        del bodies


def measure_codec(
    settings: Settings, topology: Topology, rows: Sequence[list[LinkCost]], results: Results
) -> None:
    codec_one_source(settings, rows[0], results, topology.n)
    for _ in range(settings.codec_rounds):
        codec_all_links(rows, results, topology.n)


# -- 6. update-to-facade latency on RabbitMQ ---------------------------------------------


class Probe(abc.ABC):
    """Publishes one link update and reports when its consumer saw it."""

    label: ClassVar[str]
    key: ClassVar[str]

    def __init__(self, url: str, src: str, dst: str) -> None:
        self.url = url
        self.src, self.dst = src, dst
        self.routing_key = network_key(src, dst)
        self._arrival: asyncio.Future[float] | None = None
        self._expected = ""
        self._expected_body = b""

    def _arrived(self, update_id: str) -> None:
        waiter = self._arrival
        if update_id == self._expected and waiter is not None and not waiter.done():
            waiter.set_result(time.perf_counter())

    async def one(self, body: bytes) -> float:
        """Seconds from the start of the publish to the consumer holding this update."""
        self._expected, self._expected_body = orjson.loads(body)["id"], body
        self._arrival = asyncio.get_running_loop().create_future()
        started = time.perf_counter()
        await self._publish(body)
        async with asyncio.timeout(30):
            return await self._arrival - started

    @abc.abstractmethod
    async def open(self) -> None: ...

    @abc.abstractmethod
    async def _publish(self, body: bytes) -> None: ...

    @abc.abstractmethod
    async def close(self) -> None: ...


class FacadeProbe(Probe):
    """Transport publish (confirmed) -> ``JupiterInterface.watch_network`` yields it."""

    label = "jupiter-bus facade"
    key = "facade"

    async def open(self) -> None:
        self._publisher = await connect(self.url, connection_name="bench/facade.py probe")
        self._bus = live_only(self.url, connection_name="bench/facade.py probe facade")
        await self._bus.__aenter__()
        self._watch = self._bus.watch_network(src=self.src, dst=self.dst)
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for cost in self._watch:
            self._arrived(cost.id)

    async def _publish(self, body: bytes) -> None:
        await self._publisher.publish(EVENTS_EXCHANGE, self.routing_key, body)

    async def close(self) -> None:
        self._watch.close()
        self._reader.cancel()
        await asyncio.gather(self._reader, return_exceptions=True)
        await self._bus.close()
        await self._publisher.close()


class RawProbe(Probe):
    """Raw aio-pika: confirmed publish -> a consume callback on another connection."""

    label = "raw aio-pika"
    key = "raw"

    async def open(self) -> None:
        self._connections: list[AbstractRobustConnection] = []
        for role in ("publisher", "consumer"):
            self._connections.append(
                await aio_pika.connect_robust(
                    self.url, client_properties={"connection_name": f"bench/facade.py raw {role}"}
                )
            )
        channel = await self._connections[0].channel(publisher_confirms=True)
        self._exchange = await channel.get_exchange(EVENTS_EXCHANGE, ensure=False)
        consumer = await self._connections[1].channel(publisher_confirms=False)
        await consumer.set_qos(prefetch_count=SUBSCRIPTION_PREFETCH)
        queue = await consumer.declare_queue(exclusive=True, auto_delete=True)
        await queue.bind(EVENTS_EXCHANGE, self.routing_key)
        await queue.consume(self._on_message)

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        if message.body == self._expected_body:  # as cheap as a raw consumer gets
            self._arrived(self._expected)
        await message.ack()

    async def _publish(self, body: bytes) -> None:
        await self._exchange.publish(
            aio_pika.Message(body, content_type=JSON), self.routing_key, mandatory=False
        )

    async def close(self) -> None:
        for connection in reversed(self._connections):
            await connection.close()


async def measure_latency(settings: Settings, run_id: str, results: Results) -> None:
    """Interleaved samples, one publish at a time, after a warm-up of each probe."""
    topology = Topology(run_id, 2, label="p")
    one, two = topology.names  # a link of its own for each probe
    probes: list[Probe] = [FacadeProbe(settings.url, one, two), RawProbe(settings.url, two, one)]
    total = settings.latency_samples + LATENCY_WARMUP
    ts = time.time()
    bodies = {
        probe.key: [
            link_body(run_id, k, probe.src, probe.dst, ts)
            for k in range(p * total, (p + 1) * total)
        ]
        for p, probe in enumerate(probes)
    }
    opened: list[Probe] = []
    try:
        for probe in probes:
            await probe.open()
            opened.append(probe)
        samples: dict[str, list[float]] = {p.key: [] for p in probes}
        for i in range(total):
            for probe in probes[i % 2 :] + probes[: i % 2]:
                seconds = await probe.one(bodies[probe.key][i])
                if i >= LATENCY_WARMUP:
                    samples[probe.key].append(seconds)
    finally:
        for probe in reversed(opened):
            await probe.close()
    for key, values in samples.items():
        values.sort()
        results.add(f"latency.{key}.p50", 0, percentile(values, 0.50) * 1e3)
        results.add(f"latency.{key}.p99", 0, percentile(values, 0.99) * 1e3)
        results.add(f"latency.{key}.max", 0, values[-1] * 1e3)


# -- 7. late joiner ---------------------------------------------------------------------


@dataclass(slots=True)
class Agents:
    """One agent per node (no providers) on a shared transport, answering snapshot
    requests; agent ``i`` owns ``rows[i]``, its outgoing links."""

    transport: Transport
    rows: Sequence[list[LinkCost]]
    agents: list[Agent] = field(default_factory=list)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    @classmethod
    async def set_up(
        cls, transport: Transport, topology: Topology, rows: Sequence[list[LinkCost]] = ()
    ) -> tuple[Agents, dict[str, float]]:
        """Build the links (unless given), start the agents, publish the links once;
        the seconds each step took."""
        started = time.perf_counter()
        agents = cls(transport, rows or fabricated_rows(topology))
        built = time.perf_counter()
        timings = {} if rows else {"build": built - started}
        try:
            await agents.start(topology.names)
            ready = time.perf_counter()
            await agents.publish_links()
        except BaseException:
            await agents.stop()
            raise
        timings.update(start=ready - built, seed=time.perf_counter() - ready)
        return agents, timings

    async def start(self, names: Sequence[str]) -> None:
        for name in names:
            agent = Agent(name, self.transport, {}, grace=2.0)
            self.agents.append(agent)
            self.tasks.append(asyncio.create_task(agent.run(), name=f"bench agent {name}"))
        async with asyncio.timeout(WAIT_S):
            await asyncio.gather(*(agent.started() for agent in self.agents))

    async def publish_links(self, first: int | None = None) -> float:
        """Each agent publishes its row (or its ``first`` links) as one batch with
        ``NodeContext.publish_links``; seconds.

        A whole row is also the agent's next snapshot answer, ready-made; part of a row
        (a round of probes that changed some links) makes the next answer be built anew.
        """
        started = time.perf_counter()
        contexts = [agent.context for agent in self.agents]
        await asyncio.gather(
            *(
                context.publish_links(row[:first])
                for context, row in zip(contexts, self.rows, strict=True)
                if context is not None
            )
        )
        return time.perf_counter() - started

    async def stop(self) -> None:
        for agent in self.agents:
            agent.stop()
        await asyncio.gather(*self.tasks, return_exceptions=True)


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
        connection = await aio_pika.connect_robust(
            self.url, client_properties={"connection_name": "bench/facade.py raw asker"}
        )
        try:
            channel = await connection.channel(publisher_confirms=False)
            await channel.set_qos(prefetch_count=SUBSCRIPTION_PREFETCH)
            queue = await channel.declare_queue(exclusive=True, auto_delete=True)
            await queue.consume(self._on_message)
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
        if self._done.is_set() or self._delivered % ACK_EVERY == 0:
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


def rotated(items: Sequence[str], turn: int) -> list[str]:
    turn %= len(items)
    return [*items[turn:], *items[:turn]]


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


# -- the report -------------------------------------------------------------------------


def fmt(value: float | None) -> str:
    if value is None:
        return "-"
    if value >= 100:
        return f"{value:,.0f}"
    return f"{value:.2f}" if value >= 1 else f"{value:.3f}"


def fmt_s(seconds: float) -> str:
    return f"{seconds:,.1f} s" if seconds >= 1 else f"{seconds * 1e3:,.0f} ms"


def verdict(met: bool | None) -> str:
    return "-" if met is None else ("met" if met else "MISSED")


def note(text: str, indent: str = "") -> None:
    """Print an explanation under a table, wrapped."""
    print(textwrap.fill(text, width=96, initial_indent=indent, subsequent_indent=indent))


def print_table(title: str, heads: Sequence[str], lines: Sequence[Sequence[str]]) -> None:
    print(f"\n{title}")
    widths = [max(len(line[i]) for line in [heads, *lines]) for i in range(len(heads))]
    for line in [heads, ["-" * w for w in widths], *lines]:
        cells = zip(line[1:], widths[1:], strict=True)
        print("  ".join([line[0].ljust(widths[0]), *(c.rjust(w) for c, w in cells)]))


@dataclass(slots=True)
class Summary:
    """Each aim checked, in the order printed."""

    lines: list[str] = field(default_factory=list)

    def check(self, what: str, value: float | None, aim: str, met: bool | None) -> str:
        """Record one aim; the table cell that states it."""
        shown = "not measured" if value is None else fmt(value)
        self.lines.append(f"  {what}: {shown}, aim {aim}: {verdict(met)}")
        return f"{aim}: {verdict(met)}"


def below(value: float | None, limit: float) -> bool | None:
    return None if value is None else value < limit


def print_ingest(settings: Settings, results: Results, summary: Summary) -> None:
    keys = ("inproc.apply", "inproc.many", "inproc.full", "mem.facade")
    lines = []
    for n in settings.nodes:
        rates = [results.get(key, n) for key in keys]
        full = rates[2]
        met = None if full is None else full >= INGEST_AIM
        aim = summary.check(
            f"in-process decode->apply at {n} nodes (updates/s)", full, f">= {INGEST_AIM:,.0f}", met
        )
        lines.append([str(n), f"{n * (n - 1):,}", *map(fmt, rates), aim])
    print_table(
        f"1. ingest into the state (link updates/s, median of {settings.rounds} rounds)",
        ["nodes", "links", "apply", "apply_many", "decode->apply", "memory-bus facade", "aim"],
        lines,
    )
    samples = ", ".join(
        f"{n} nodes {settings.inproc_count(links):,} / {settings.memory_bus_count(links):,}"
        for n in settings.nodes
        if (links := n * (n - 1))
    )
    note(
        "apply: NetworkState.apply of decoded LinkCosts; apply_many: one call per source's N-1 "
        "links; decode->apply: decode(bytes) then apply, as the facade's pump does (the aim is "
        "checked on it); memory-bus facade: transport.publish on memory:// until applied in a "
        "JupiterInterface, all in this process. Fresh state each round. Updates per round (in "
        f"process / memory bus): {samples}."
    )


def amqp_cells(settings: Settings, results: Results, n: int) -> list[str]:
    rates = [results.get(f"amqp.{sink.key}", n) for sink in SINKS]
    facade = rates[-1]
    ratio = results.ratio("amqp.facade", "amqp.raw", n)
    cpu = " / ".join(fmt(results.get(f"amqp.{sink.key}.cpu", n)) for sink in SINKS)
    every_link = "-"
    if facade:
        every_link = fmt_s(n * (n - 1) / facade)
        if n * (n - 1) > settings.amqp_max:
            every_link += " (extrapolated)"
    return [
        fmt(results.get("amqp.pub", n)),
        *map(fmt, rates),
        f"{ratio:.2f}x" if ratio else "-",
        cpu,
        every_link,
    ]


def print_amqp_ingest(settings: Settings, results: Results, skipped: dict[int, str]) -> None:
    heads = ["nodes", "publisher", *(sink.label for sink in SINKS), "facade/raw",
             "CPU us/msg (same order)", "all links at that rate"]  # fmt: skip
    lines = []
    for n in settings.nodes:
        if n in skipped:
            lines.append([str(n), skipped[n], *(["-"] * (len(heads) - 2))])
        else:
            lines.append([str(n), *amqp_cells(settings, results, n)])
    print_table(
        "2. ingest through RabbitMQ, per-link JSON events (msgs/s drained from a backlog; "
        f"median of {settings.amqp_rounds} rounds)",
        heads,
        lines,
    )
    samples = ", ".join(
        f"{n} nodes {settings.amqp_count(n * (n - 1)):,}"
        for n in settings.nodes
        if n not in skipped
    )
    note(
        "publisher: a child process publishing with jupiter_bus.transport (confirmed, "
        f"{PUBLISH_WINDOW} in flight); this process is held meanwhile, then each consumer is "
        "timed draining the backlog: raw aio-pika and transport.subscribe count deliveries "
        "without decoding, JupiterInterface counts updates applied to its state. facade/raw: "
        "median of per-round ratios. CPU: this process only, per message. "
        f"Updates per sample: {samples or '-'}."
    )


def batch_cells(settings: Settings, results: Results, n: int) -> list[str]:
    rates = [results.get(f"amqpb.{sink.key}", n) for sink in SINKS]
    facade, per_link = rates[-1], results.get("amqp.facade", n)
    ratio = results.ratio("amqpb.facade", "amqpb.raw", n)
    cpu = " / ".join(fmt(results.get(f"amqpb.{sink.key}.cpu", n)) for sink in SINKS)
    return [
        f"{n - 1:,}",
        fmt(results.get("amqpb.pub", n)),
        *map(fmt, rates),
        f"{ratio:.2f}x" if ratio else "-",
        f"{facade / per_link:,.1f}x" if facade and per_link else "-",
        cpu,
        fmt_s(n * (n - 1) / facade) if facade else "-",
    ]


def print_amqp_batch_ingest(
    settings: Settings, results: Results, skipped: dict[int, str], summary: Summary
) -> None:
    heads = ["nodes", "links/msg", "publisher", *(s.label for s in SINKS), "facade/raw",
             "vs per-link", "CPU us/msg (same order)", "all links at that rate"]  # fmt: skip
    lines = []
    for n in settings.nodes:
        if n in skipped:
            lines.append([str(n), skipped[n], *(["-"] * (len(heads) - 2))])
        else:
            lines.append([str(n), *batch_cells(settings, results, n)])
    print_table(
        "2b. ingest through RabbitMQ, binary network.batch bodies, one per source on "
        f"network-batch.<src> (link updates/s; median of {settings.amqp_rounds} rounds)",
        heads,
        lines,
    )
    samples = ", ".join(
        f"{n} nodes {settings.batch_count(n):,}" for n in settings.nodes if n not in skipped
    )
    note(
        "As in 2, with the child publishing LinkBatch.to_binary() bodies (content type "
        f"{BATCH_CONTENT_TYPE}): each source's N-1 links in one message, the sources in turn. "
        "Rates are link updates/s (messages/s x links/msg); raw aio-pika and "
        "transport.subscribe bind network-batch.* and do not decode; JupiterInterface counts "
        "batches applied (NetworkState.apply_batch). vs per-link: JupiterInterface here "
        "against its column in table 2. CPU: this process, per message (one batch). "
        f"Messages per sample: {samples or '-'}."
    )
    measured = [n for n in settings.nodes if n not in skipped]
    if not measured:
        return
    n = max(measured)
    batch, per_link = results.get("amqpb.facade", n), results.get("amqp.facade", n)
    versus = f"{batch / per_link:,.1f}x per-link JSON" if batch and per_link else "-"
    summary.lines.append(
        f"  RabbitMQ ingest at {n} nodes, binary network.batch (link updates/s): {fmt(batch)}, "
        f"{versus}; aim: report what batching reaches"
    )


CODEC_LABELS: Final = {
    "columns": "LinkBatch.from_costs",
    "links": "per-link JSON (N-1 bodies)",
    "json": "batch JSON",
    "binary": "batch binary",
}
CODEC_OPS: Final = ("build", "encode", "decode", "apply")


def codec_cells(results: Results, codec: str, n: int) -> list[str]:
    def every(op: str) -> str:
        value = results.get(f"codec.{codec}.{op}.all", n)
        if value is None and (single := results.get(f"codec.{codec}.{op}.one", n)):
            return f"{fmt_s(single * n / 1e3)} (extrapolated)"
        return "-" if value is None else fmt_s(value)

    done = ("build",) if codec == "columns" else CODEC_OPS[1:]
    size = results.get(f"codec.{codec}.bytes", n)
    return [
        CODEC_LABELS[codec],
        "-" if size is None else f"{size:.0f}",
        *(
            fmt(results.get(f"codec.{codec}.{op}.one", n)) if op in done else "-"
            for op in CODEC_OPS
        ),
        *(every(op) if op in done else "-" for op in CODEC_OPS),
    ]


def print_codec(settings: Settings, results: Results) -> None:
    n = max(settings.nodes)
    if results.get("codec.binary.decode.one", n) is None:
        return
    lines = [codec_cells(results, codec, n) for codec in ("columns", *CODECS)]
    print_table(
        f"2c. encoding the link costs of {n:,} nodes: one source ({n - 1:,} links, ms) and all "
        f"{n:,} sources ({n * (n - 1):,} links in {n:,} bodies); medians",
        ["encoding", "bytes/link", "build ms", "encode ms", "decode ms", "decode+apply ms",
         "all: build", "encode", "decode", "decode+apply"],
        lines,
    )  # fmt: skip
    note(
        "build: LinkBatch.from_costs, the columns either encoding starts from (what an agent "
        "does first); decode: decode_batch(body) (per link: decode(body) of each of the N-1 "
        "bodies); decode+apply: then NetworkState.apply_batch (per link: apply), for one "
        "source into a state that holds its links already, for all sources into a fresh "
        "state that grows to N nodes, as a late joiner's does. Per-link JSON over all links "
        "is extrapolated from one source (N x). Decoding against binary: "
        + (codec_ratios(results, n) or "-")
        + " (the measured reason for the binary encoding)."
    )


def codec_ratios(results: Results, n: int) -> str:
    parts = []
    for scope, unit in (("one", "one source"), ("all", "all links")):
        binary = results.get(f"codec.binary.decode.{scope}", n)
        for label, codec in (("batch JSON", "json"), ("per-link JSON", "links")):
            value = results.get(f"codec.{codec}.decode.{scope}", n)
            if binary and value:
                parts.append(f"{label} {value / binary:,.1f}x ({unit})")
    return ", ".join(parts)


def print_reads(settings: Settings, results: Results, summary: Summary) -> None:
    keys = ("read.plain.p50", "read.plain.p99", "read.all.p50", "read.all.p99")
    lines = []
    for n in settings.nodes:
        values = [results.get(key, n) for key in keys]
        aim = "-"
        if n == AIM_NODES:
            for label, value in (("()", values[0]), ("(nodes=[all])", values[2])):
                aim = summary.check(
                    f"get_network_data{label} at {n} nodes, p50 (us)",
                    value,
                    f"p50 < {READ_AIM_US:,.0f} us",
                    below(value, READ_AIM_US),
                )
        lines.append([str(n), *map(fmt, values), aim])
    print_table(
        "3. get_network_data() latency with the data present (us per call)",
        ["nodes", "plain p50", "p99", "nodes=[all] p50", "p99", "aim (both p50)"],
        lines,
    )
    note(
        "DESIGN asks for microseconds at 100 nodes: the aim is read as p50 < 1,000 us for the "
        "plain call and for nodes=[every node] (which checks N*(N-1) links are present)."
    )


def print_formats(settings: Settings, results: Results, summary: Summary) -> None:
    keys = ("heft_rows", "tgff_quadratic", "wave", "to_jupiter")
    lines = []
    for n in settings.nodes:
        values = [results.get(f"format.{key}", n) for key in keys]
        aim = "-"
        if n == AIM_NODES:
            met = [below(v, FORMAT_AIM_MS) for v in values]
            for key, value, ok in zip(keys, values, met, strict=True):
                summary.check(f"{key} at {n} nodes (ms)", value, f"< {FORMAT_AIM_MS:g} ms", ok)
            aim = f"each < {FORMAT_AIM_MS:g} ms: {verdict(all(met) if None not in met else None)}"
        lines.append([str(n), *map(fmt, values), aim])
    print_table(
        "4. Jupiter's formats from a snapshot (ms per call, median)",
        ["nodes", "heft_rows", "tgff_quadratic", "wave (1 source)", "to_jupiter()", "aim"],
        lines,
    )
    print("heft_rows/tgff_quadratic/wave: NetworkData; to_jupiter(): ResourceData (N nodes).")


def print_memory(settings: Settings, results: Results, summary: Summary) -> None:
    lines = []
    for n in settings.nodes:
        traced = results.get("memory.current", n)
        nbytes = results.get("memory.nbytes", n)
        aim = "-"
        if n == SCALE_NODES:
            worst = None if traced is None or nbytes is None else max(traced, nbytes)
            aim = summary.check(
                f"state memory at {n} nodes (MB)",
                worst,
                f"< {MEMORY_AIM_MB:g} MB",
                below(worst, MEMORY_AIM_MB),
            )
        links = results.get("memory.links", n)
        lines.append(
            [str(n), "-" if links is None else f"{links:,.0f}", fmt(nbytes), fmt(traced),
             fmt(results.get("memory.peak", n)), aim]
        )  # fmt: skip
    print_table(
        "5. state memory with every link held (MB = 10^6 bytes)",
        ["nodes", "links held", "NetworkState.nbytes", "tracemalloc", "peak", "aim"],
        lines,
    )
    note(
        "tracemalloc: bytes still traced after filling an empty NetworkState row by row with "
        "apply_many; peak: during the fill (the arrays double as nodes join)."
    )


def print_latency(
    settings: Settings, results: Results, summary: Summary, skipped: str | None
) -> None:
    heads = ["consumer", "p50 ms", "p99 ms", "max ms", "p50 / raw", "p99 / raw", "aim"]
    title = (
        f"6. update-to-facade latency on RabbitMQ ({settings.latency_samples} samples each, "
        "interleaved, one at a time)"
    )
    if skipped:
        summary.check("update-to-facade p99 (ms)", None, f"< {LATENCY_AIM_MS:g} ms", None)
        print_table(title, heads, [["(skipped)", skipped, *(["-"] * 5)]])
        return
    raw = [results.get(f"latency.raw.{q}", 0) for q in ("p50", "p99", "max")]
    lines = []
    for key, label in (("facade", "watch_network() yields it"), ("raw", "raw aio-pika callback")):
        p50, p99, top = (results.get(f"latency.{key}.{q}", 0) for q in ("p50", "p99", "max"))
        aim = "-"
        if key == "facade":
            aim = summary.check(
                "update-to-facade p99 on loopback RabbitMQ (ms)",
                p99,
                f"p99 < {LATENCY_AIM_MS:g} ms",
                below(p99, LATENCY_AIM_MS),
            )
        ratios = [f"{v / r:.2f}x" if v and r else "-" for v, r in ((p50, raw[0]), (p99, raw[1]))]
        lines.append([label, fmt(p50), fmt(p99), fmt(top), *ratios, aim])
    print_table(title, heads, lines)
    note(
        "From the start of a confirmed publish (jupiter_bus transport / aio-pika channel with "
        "confirms) to the consumer holding that update; each probe on its own link and connections."
    )


@dataclass(frozen=True, slots=True)
class LateJoin:
    """What the late-joiner section found: why it is unavailable, or which cells were skipped."""

    unavailable: str | None = None
    skipped: dict[tuple[str, int], str] = field(default_factory=dict)


LATE_BUSES: Final = {"memory": "memory bus", "amqp": "RabbitMQ"}
LATE_PARTS: Final = ("entered", "first", "applied")


def late_cell(results: Results, key: str, n: int) -> str:
    value = results.get(key, n)
    return "-" if value is None else fmt_s(value)


def late_breakdown(settings: Settings, results: Results) -> list[list[str]]:
    lines = []
    for n in settings.nodes:
        for bus, label in LATE_BUSES.items():
            if results.get(f"late.{bus}", n) is None:
                continue
            parts = [late_cell(results, f"late.{bus}.{part}", n) for part in LATE_PARTS]
            lines.append([f"{n}", label, *parts, late_cell(results, f"late.{bus}", n),
                          late_cell(results, f"late.{bus}.cpu", n),
                          late_cell(results, f"late.{bus}.rebuilt", n),
                          late_cell(results, f"late.{bus}.raw", n)])  # fmt: skip
    return lines


def late_setup_note(settings: Settings, results: Results) -> str:
    parts = []
    for n in settings.nodes:
        for bus, label in LATE_BUSES.items():
            start = results.get(f"late.{bus}.setup.start", n)
            if start is None or n < SCALE_NODES:
                continue
            build = results.get(f"late.{bus}.setup.build", n)
            seed = results.get(f"late.{bus}.setup.seed", n) or 0.0
            parts.append(
                f"{label}, {n:,} agents: "
                + ("" if build is None else f"links built in {fmt_s(build)}, ")
                + f"agents started in {fmt_s(start)}, every agent's publish_links in "
                + fmt_s(seed)
            )
    return "; ".join(parts)


def late_where(results: Results, bus: str, n: int) -> str:
    """Where the time of a late join went (medians, so the steps need not add up)."""

    def at(key: str) -> str:
        return late_cell(results, f"late.{bus}.{key}" if key else f"late.{bus}", n)

    text = (
        f"{LATE_BUSES[bus]}, {n:,} nodes: {at('')} until get_network_data returned; facade "
        f"open (connected, subscribed, request sent) at {at('entered')}, first answer applied "
        f"at {at('first')}, every link applied at {at('applied')}; this process used "
        f"{at('cpu')} of CPU. With every answer rebuilt: {at('rebuilt')}"
    )
    if results.get(f"late.{bus}.raw", n) is not None:
        text += f"; raw aio-pika asker (broker and agents only): {at('raw')}"
    return text + "."


def print_late_joiner(
    settings: Settings, results: Results, summary: Summary, found: LateJoin
) -> None:
    lines = []
    for n in settings.nodes:
        if found.unavailable:
            lines.append([str(n), "not available", "not available"])
            continue
        cells = [
            fmt_s(value) if (value := results.get(f"late.{bus}", n)) is not None
            else found.skipped.get((bus, n), "-")
            for bus in LATE_BUSES
        ]  # fmt: skip
        lines.append([str(n), *cells])
    print_table(
        "7. late joiner: a facade opened after the agents published, until "
        "get_network_data(nodes=[all]) returns (median)",
        ["nodes", "memory bus (agents here)", "RabbitMQ (agents in a child process)"],
        lines,
    )
    aim = f"< {LATE_JOIN_AIM_S:g} s"
    if found.unavailable:
        print(f"not available: {found.unavailable}.")
        summary.lines.append(f"  late joiner at {SCALE_NODES} nodes: not available, aim {aim}: -")
        return
    print_late_breakdown(settings, results)
    amqp = results.get("late.amqp", SCALE_NODES)
    reason = found.skipped.get(("amqp", SCALE_NODES))
    summary.check(
        f"late joiner at {SCALE_NODES} nodes on RabbitMQ (s)" + (f" [{reason}]" if reason else ""),
        amqp,
        aim,
        below(amqp, LATE_JOIN_AIM_S),
    )
    memory = results.get("late.memory", SCALE_NODES)
    if memory is not None:
        summary.lines.append(
            f"  late joiner at {SCALE_NODES} nodes on the memory bus (s, agents in this "
            f"process; for reference): {fmt(memory)}"
        )


def print_late_breakdown(settings: Settings, results: Results) -> None:
    print_table(
        "7b. where a late join's time goes (from opening the facade; medians)",
        ["nodes", "bus", "facade open", "first answer applied", "every link applied",
         "get_network_data returned", "CPU here", "answers rebuilt: returned",
         "raw aio-pika asker"],
        late_breakdown(settings, results),
    )  # fmt: skip
    note(
        "One agent (no providers) per node publishes its N-1 links once with "
        "NodeContext.publish_links (one binary network.batch, kept as its next snapshot "
        "answer). The facade asks on entering (snapshot.request, batch: true); each agent "
        "answers with one batch. 'facade open': connected, subscribed, request sent; 'first "
        "answer applied' and 'every link applied': seen by a task that watches the state's "
        "version and link_count (it holds no snapshot); 'CPU here': this process, during the "
        "join. 'answers rebuilt': the same join right after every agent published one link "
        "again (a probe round that changed some links), so each answer is built anew "
        "(LinkBatch.from_costs of N-1 links): on the memory bus in this process, over "
        "RabbitMQ in the child, the 1,000 agents one after another (on their own nodes they "
        "would build in parallel). 'raw aio-pika asker': a private queue, the same request, "
        "the answers of this run's agents counted without decoding: the broker's and the "
        "agents' share. Setup, untimed: " + (late_setup_note(settings, results) or "-") + "."
    )
    slow = [
        (bus, n)
        for n in settings.nodes
        for bus in LATE_BUSES
        if n >= SCALE_NODES and (value := results.get(f"late.{bus}", n)) and value >= 1.0
    ]
    for bus, n in slow:
        note("missed: " + late_where(results, bus, n))


def print_rounds(results: Results) -> None:
    print("\nper-round values (the tables show their median):")
    for (key, n), values in sorted(results.values.items()):
        if len(values) > 1:
            print(f"  {key} @{n}: " + " ".join(fmt(v) for v in values))


def print_report(
    settings: Settings,
    results: Results,
    amqp_skipped: dict[int, str],
    latency_skipped: str | None,
    found: LateJoin,
) -> None:
    summary = Summary()
    print_ingest(settings, results, summary)
    print_amqp_ingest(settings, results, amqp_skipped)
    print_amqp_batch_ingest(settings, results, amqp_skipped, summary)
    print_codec(settings, results)
    print_reads(settings, results, summary)
    print_formats(settings, results, summary)
    print_memory(settings, results, summary)
    print_latency(settings, results, summary, latency_skipped)
    print_late_joiner(settings, results, summary, found)
    print_rounds(results)
    print("\nsummary (DESIGN section 5 aims):")
    print("\n".join(summary.lines))


# -- the run ----------------------------------------------------------------------------


async def broker_version(url: str) -> str | None:
    """RabbitMQ's version, or ``None`` when it cannot be reached."""
    try:
        connection = await aio_pika.connect(url)
    except Exception:
        return None
    try:
        underlay = connection.transport
        properties = underlay.connection.server_properties if underlay else {}
        return str(properties.get("version", "?"))
    finally:
        await connection.close()


def print_header(settings: Settings, run_id: str, broker: str | None) -> None:
    versions = ", ".join(
        f"{name} {importlib.metadata.version(name)}"
        for name in ("jupiter-bus", "aio-pika", "numpy", "orjson")
    )
    mode = "quick" if settings.quick else "full"
    print(f"bench/facade.py run {run_id} ({mode}): Python {platform.python_version()}, {versions}")
    where = settings.url.split("@")[-1]
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    broker_text = f"RabbitMQ {broker} at {where}" if broker else f"no RabbitMQ at {where}"
    print(f"{broker_text}; {os.cpu_count()} CPUs, load average {load}")
    print(f"nodes {', '.join(map(str, settings.nodes))}; {settings.rounds} rounds", flush=True)


def step(what: str, started: float) -> None:
    print(f"  [{time.perf_counter() - started:6.1f} s] {what}", flush=True)


async def run_scale_figures(
    settings: Settings, topology: Topology, results: Results, began: float, late_join: bool
) -> str | None:
    """Figures 3-5, 2c and the memory-bus late joiner on one set of fabricated links;
    why the late joiner was skipped, if it was."""
    n = topology.n
    rows = fabricated_rows(topology)
    await measure_full_state(settings, topology, rows, results)
    step(f"memory, reads and formats, {n} nodes", began)
    skipped = None
    with frozen_gc():
        if n == max(settings.nodes):
            measure_codec(settings, topology, rows, results)
            step(f"network.batch encodings, {n} nodes", began)
        if not late_join:
            skipped = "not available"
        elif n > settings.late_join_max_nodes:
            skipped = f"not set up ({n:,} agents)"
        else:
            await late_join_memory(settings, topology, rows, results)
            step(f"late joiner on the memory bus, {n} nodes", began)
    del rows
    gc.collect()
    return skipped


async def run_in_process(
    settings: Settings, run_id: str, results: Results, began: float, late_join: bool
) -> dict[tuple[str, int], str]:
    """Everything on the memory bus; the late-joiner cells skipped, and why."""
    skipped: dict[tuple[str, int], str] = {}
    for n in settings.nodes:
        topology = Topology(run_id, n)
        measure_inproc(settings, topology, results)
        step(f"in-process ingest, {n} nodes", began)
        await measure_memory_bus(settings, topology, results)
        step(f"memory-bus ingest, {n} nodes", began)
        reason = await run_scale_figures(settings, topology, results, began, late_join)
        if reason:
            skipped[("memory", n)] = reason
    return skipped


async def run_amqp(
    settings: Settings, run_id: str, publisher: PublisherProcess, results: Results, began: float
) -> dict[int, str]:
    """RabbitMQ ingest and latency; the node counts skipped, and why."""
    skipped: dict[int, str] = {}
    for n in settings.nodes:
        if n > settings.amqp_max_nodes:
            skipped[n] = "skipped (--quick)" if settings.quick else "skipped"
            continue
        await measure_amqp_ingest(settings, Topology(run_id, n), publisher, results)
        step(f"RabbitMQ ingest, {n} nodes", began)
    await measure_latency(settings, run_id, results)
    step("RabbitMQ latency", began)
    return skipped


async def run_late_joiner(
    settings: Settings,
    run_id: str,
    publisher: PublisherProcess | None,
    results: Results,
    began: float,
) -> dict[tuple[str, int], str]:
    """The RabbitMQ late joiner; the cells skipped, and why."""
    skipped: dict[tuple[str, int], str] = {}
    for n in settings.nodes:
        if publisher is None:
            skipped[("amqp", n)] = "no broker"
        elif n > settings.late_join_amqp_max_nodes:
            skipped[("amqp", n)] = (
                f"skipped (--quick: {n:,} agents)" if settings.quick else "skipped"
            )
        else:
            await late_join_amqp(settings, Topology(run_id, n, label="l"), publisher, results)
            step(f"late joiner on RabbitMQ, {n} nodes", began)
    return skipped


async def run(settings: Settings) -> None:
    run_id = uuid.uuid4().hex[:8]
    check_synthetic(run_id)
    broker = await broker_version(settings.url)
    print_header(settings, run_id, broker)
    began = time.perf_counter()
    unavailable = await snapshot_support(run_id)
    step("late-joiner support probed", began)
    results = Results()
    skipped = await run_in_process(settings, run_id, results, began, unavailable is None)
    publisher = PublisherProcess(settings.url) if broker else None
    try:
        if publisher is None:
            amqp_skipped = {n: "no broker" for n in settings.nodes}
        else:
            amqp_skipped = await run_amqp(settings, run_id, publisher, results, began)
        if unavailable is None:
            skipped |= await run_late_joiner(settings, run_id, publisher, results, began)
    finally:
        if publisher is not None:
            publisher.close()
    step("done", began)
    found = LateJoin(unavailable, skipped)
    print_report(settings, results, amqp_skipped, None if broker else "no broker", found)


def parse_nodes(text: str) -> tuple[int, ...]:
    try:
        nodes = tuple(sorted({int(part) for part in text.split(",") if part.strip()}))
    except ValueError:
        nodes = ()
    if not nodes or min(nodes) < 2:
        raise argparse.ArgumentTypeError("node counts must be integers >= 2, e.g. 10,100,1000")
    return nodes


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--url", default=DEFAULT_URL, help=f"AMQP URL (default {DEFAULT_URL})")
    parser.add_argument("--quick", action="store_true", help="smaller samples: under 90 s")
    parser.add_argument(
        "--nodes", type=parse_nodes, default=(10, 100, 1000), help="node counts (10,100,1000)"
    )
    parser.add_argument("--rounds", type=int, help="rounds to take the median of (default 3)")
    parser.add_argument("--publisher-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    # Other users of a shared broker may publish malformed events (tests do); the facades
    # here dead-letter them with a warning each, which would bury the tables.
    logging.getLogger("jupiter_bus").setLevel(logging.ERROR)
    if args.publisher_child:
        asyncio.run(publisher_child(args.url))
        return
    if args.rounds is not None and args.rounds < 1:
        parser.error("--rounds must be at least 1")
    asyncio.run(run(settings_for(args.url, args.quick, args.nodes, args.rounds)))


if __name__ == "__main__":
    main()
