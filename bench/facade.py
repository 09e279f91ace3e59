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

import argparse
import asyncio
import contextlib
import gc
import logging
import os
import platform
import time
import uuid
from collections.abc import Iterator, Sequence
from typing import Final

import aio_pika
from facade_parts.amqp_ingest import measure_amqp_ingest
from facade_parts.batch_codec import measure_codec
from facade_parts.full_state import measure_full_state
from facade_parts.inproc import measure_inproc, measure_memory_bus
from facade_parts.late_joiner import late_join_amqp, late_join_memory, snapshot_support
from facade_parts.late_report import LateJoin, print_late_joiner
from facade_parts.latency import measure_latency
from facade_parts.publisher import PublisherProcess, publisher_child
from facade_parts.report import (
    Summary,
    print_amqp_batch_ingest,
    print_amqp_ingest,
    print_codec,
    print_formats,
    print_ingest,
    print_latency,
    print_memory,
    print_reads,
    print_rounds,
)
from facade_parts.results import Results
from facade_parts.settings import Settings, settings_for
from facade_parts.synthetic import Topology, check_synthetic, fabricated_rows
from harness import broker
from harness.environment import load_average, versions
from harness.options import bench_parser

SCRIPT: Final = os.path.abspath(__file__)


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


async def broker_version(url: str) -> str | None:
    """RabbitMQ's version, or ``None`` when it cannot be reached."""
    try:
        connection = await aio_pika.connect(url)
    except Exception:
        return None
    try:
        return broker.server_version(connection)
    finally:
        await connection.close()


def print_header(settings: Settings, run_id: str, version: str | None) -> None:
    packages = versions("jupiter-bus", "aio-pika", "numpy", "orjson")
    mode = "quick" if settings.quick else "full"
    print(f"bench/facade.py run {run_id} ({mode}): Python {platform.python_version()}, {packages}")
    where = broker.address(settings.url)
    broker_text = f"RabbitMQ {version} at {where}" if version else f"no RabbitMQ at {where}"
    print(f"{broker_text}; {os.cpu_count()} CPUs, load average {load_average(' ')}")
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
    version = await broker_version(settings.url)
    print_header(settings, run_id, version)
    began = time.perf_counter()
    unavailable = await snapshot_support(run_id)
    step("late-joiner support probed", began)
    results = Results()
    skipped = await run_in_process(settings, run_id, results, began, unavailable is None)
    publisher = PublisherProcess(settings.url, SCRIPT) if version else None
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
    print_report(settings, results, amqp_skipped, None if version else "no broker", found)


def parse_nodes(text: str) -> tuple[int, ...]:
    try:
        nodes = tuple(sorted({int(part) for part in text.split(",") if part.strip()}))
    except ValueError:
        nodes = ()
    if not nodes or min(nodes) < 2:
        raise argparse.ArgumentTypeError("node counts must be integers >= 2, e.g. 10,100,1000")
    return nodes


def main(argv: Sequence[str] | None = None) -> None:
    rounds = "rounds to take the median of (default 3)"
    parser = bench_parser(__doc__, "smaller samples: under 90 s", rounds_help=rounds)
    parser.add_argument(
        "--nodes", type=parse_nodes, default=(10, 100, 1000), help="node counts (10,100,1000)"
    )
    parser.add_argument("--publisher-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    # Other users of a shared broker may publish malformed events (tests do); the facades
    # here dead-letter them with a warning each, which would bury the tables.
    logging.getLogger("jupiter_bus").setLevel(logging.ERROR)
    if args.publisher_child:
        asyncio.run(publisher_child(args.url))
        return
    asyncio.run(run(settings_for(args.url, args.quick, args.nodes, args.rounds)))


if __name__ == "__main__":
    main()
