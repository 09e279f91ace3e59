"""Subscribe to live network-cost updates and print each link's cost as they arrive.

``bus.watch_network(src=..., dst=...)`` is an async iterator of
:class:`~jupiter_bus.messages.LinkCost` updates (``cost_ms = a*x^2 + b*x + c``, ``x`` in
Kbit). While the reader is behind, only the latest update per link is kept, so a slow
reader costs bounded memory and always reads current values (``coalesced`` counts what
it skipped). The example stops after ``--count`` updates or ``--duration`` seconds,
then prints the latest state for one size as a matrix, with the facade's vectorised
``NetworkData.cost_ms``.

Run it::

    python examples/watch_network.py                        # in-process bus and profiler
    python examples/watch_network.py --count 20 --sizes-kb 1,100,10000 --src node1
    python examples/watch_network.py --broker amqp://guest:guest@127.0.0.1:5672/ --with-agents
    python examples/watch_network.py --broker amqp://guest:guest@10.0.0.1/ --duration 600

In-process (and with ``--with-agents``) a synthetic profiler republishes every link's
cost, jittered, every ``--interval`` seconds. Otherwise the network profilers of the
running agents publish (DRUPE's pace: a link's cost is refit every few minutes, so give
``--duration`` room).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import tempfile
from collections.abc import Collection, Sequence
from pathlib import Path

import numpy as np
from _cluster import (
    LocalCluster,
    add_bus_arguments,
    configure_logging,
    exit_status,
    in_process,
    node_names,
    safe_url,
    say_who_serves,
)

from jupiter_bus import JupiterBusError, JupiterInterface, LinkCost, NetworkData
from jupiter_bus.interrupt import run_interruptible

MATRIX_NODES = 6
"""At most this many nodes in the closing matrix."""


def describe(cost: LinkCost, sizes_kb: Sequence[float]) -> str:
    """One line: the link, its predicted time for each size, and the fit's quality."""
    times = "  ".join(f"{kb:g} KB {cost.cost_ms(kb * 8.0):8.1f} ms" for kb in sizes_kb)
    model = f", {cost.model}" if cost.model else ""
    return (
        f"  {cost.src:>10} -> {cost.dst:<10} {times}  "
        f"(r2 {cost.r2:.3f}, {cost.samples} samples{model})"
    )


def cost_matrix(network: NetworkData, nodes: Sequence[str], size_kb: float) -> list[str]:
    """Rows of the ``src x dst`` cost in ms of one file size (``-`` where no cost)."""
    names = np.array(nodes)
    cost = np.asarray(network.cost_ms(names[:, None], names[None, :], size_kb * 8.0))
    width = max(10, *(len(n) + 1 for n in nodes))
    rows = [f"  {'src/dst':<{width}}" + "".join(f"{n:>{width}}" for n in nodes)]
    for i, src in enumerate(nodes):
        cells = ("-" if np.isnan(v) else f"{v:.1f}" for v in cost[i].tolist())
        rows.append(f"  {src:<{width}}" + "".join(f"{c:>{width}}" for c in cells))
    return rows


async def watch(
    bus: JupiterInterface, args: argparse.Namespace, only: Collection[str] | None
) -> int:
    """Print updates until ``--count`` of them or ``--duration`` seconds; return how many."""
    seen = 0
    async with bus.watch_network(src=args.src, dst=args.dst) as updates:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(args.duration):
                async for cost in updates:
                    if only is not None and not (cost.src in only and cost.dst in only):
                        continue  # a shared broker carries other deployments' links too
                    seen += 1
                    print(describe(cost, args.sizes_kb))
                    if seen >= args.count:
                        break
        reason = "count reached" if seen >= args.count else f"{args.duration:g} s passed"
        print(f"stopped after {seen} updates ({reason}; {updates.coalesced} coalesced)")
    return seen


async def run(args: argparse.Namespace) -> int:
    """Watch the feed, then show the latest state as one matrix."""
    nodes = node_names(args)
    say_who_serves(args, nodes)
    where = f"from {args.src or '*'} to {args.dst or '*'}"
    print(
        f"watching network costs {where} on {safe_url(args.broker)} "
        f"(stop after {args.count} updates or {args.duration:g} s)"
    )
    async with contextlib.AsyncExitStack() as stack:
        bus = await stack.enter_async_context(JupiterInterface(args.broker))
        only: Collection[str] | None = None
        if in_process(args):
            only = set(nodes)
            memory = str(args.broker).startswith("memory://")
            cluster = LocalCluster(
                args.broker,
                nodes,
                workdir=args.workdir,
                profile_interval=args.interval,
                delete_queues=not memory,
            )
            await stack.enter_async_context(cluster)
        if await watch(bus, args, only) == 0:
            print("error: no network-cost updates: is a network profiler publishing?")
            return 1
        network = await bus.get_network_data(timeout=0)
        shown = [n for n in network.nodes if only is None or n in only][:MATRIX_NODES]
        size = args.sizes_kb[-1]
        print(f"latest cost of {size:g} KB in ms (NetworkData.cost_ms, vectorised):")
        for row in cost_matrix(network, shown, size):
            print(row)
    return 0


def sizes(text: str) -> list[float]:
    """``"1,100,10000"`` -> sizes in KB."""
    try:
        values = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of sizes in KB: {text!r}") from None
    if not values or min(values) < 0:
        raise argparse.ArgumentTypeError("give one or more sizes in KB, none negative")
    return values


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    add_bus_arguments(parser, "watch", nodes=["node1", "node2", "node3"], timeout=False)
    parser.add_argument("--count", type=int, default=10, help="stop after this many updates")
    parser.add_argument("--duration", type=float, default=30.0, help="stop after this many s")
    parser.add_argument("--src", help="only links from this node")
    parser.add_argument("--dst", help="only links to this node")
    parser.add_argument(
        "--sizes-kb",
        type=sizes,
        default=[1.0, 100.0, 10_000.0],
        help="file sizes in KB to price each link at (default: 1,100,10000)",
    )
    parser.add_argument(
        "--interval", type=float, default=0.2, help="synthetic profiler period, s (in-process)"
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    configure_logging(args.verbose)
    try:
        with tempfile.TemporaryDirectory(prefix="jupiter-watch-") as scratch:
            args.workdir = Path(scratch)
            return run_interruptible(run(args))
    except JupiterBusError as exc:
        return exit_status(exc)


if __name__ == "__main__":
    sys.exit(main())
