"""Embed the async facade in a scheduler: the README's first code block, as a program.

:func:`schedule` is exactly the block the README shows (a test keeps the two equal): it
reads the live link costs and resources, runs a transfer on node1's worker, sends a file
to node2 by name, and follows live cost updates.

Run it::

    python examples/embed_facade.py                     # in-process bus and agents
    python examples/embed_facade.py --broker amqp://guest:guest@127.0.0.1:5672/ --with-agents

In-process (and with ``--with-agents``) the nodes are throwaway agents whose transfer
workers copy on this host (``local`` engine) under a scratch folder, and a synthetic
profiler publishes the link costs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from _cluster import (
    LocalCluster,
    add_bus_arguments,
    configure_logging,
    exit_status,
    in_process,
    node_names,
    say_who_serves,
)

from jupiter_bus import JupiterBusError, JupiterInterface, TransferFailed
from jupiter_bus.interrupt import run_interruptible


async def schedule(url: str, node1: str, node2: str, data: Path) -> None:
    async with JupiterInterface(url, node=node1) as jupiter:
        costs = await jupiter.get_network_data(nodes=[node1, node2], timeout=10)
        ms = costs.cost_ms(node1, node2, 8 * 4096)  # a 4 MB file, x in Kbit
        names = np.array(costs.nodes)
        grid = costs.cost_ms(names[:, None], names, 8 * 4096, same_node=0.0)  # N x N at once
        cpu = (await jupiter.get_resource_data(nodes=[node2]))[node2].cpu_percent
        print(
            f"{node1} -> {node2}: 4 MB in {ms:.1f} ms; {grid.shape} grid; {node2} CPU {cpu:.0f} %"
        )
        try:  # node1's transfer worker copies it to 127.0.0.1 (here: its local engine)
            result = await jupiter.data_transfer(
                "127.0.0.1", "jupiter", None, str(data / "a.bin"), str(data / "in" / "a.bin")
            )
            print(f"copied {result.bytes} bytes in {result.seconds:.3f} s")
        except TransferFailed as exc:  # AuthError, NotFound, ...
            print(exc.kind, exc)
        await jupiter.transfer_to(  # host and SSH port from node2's resource events
            node2, "jupiter", None, str(data / "b.bin"), str(data / "in" / "b.bin")
        )
        async with jupiter.watch_network(src=node1) as updates:
            async for update in updates:
                print(f"live: {update.src} -> {update.dst} {update.cost_ms(8 * 4096):.1f} ms")
                break


async def run(args: argparse.Namespace) -> int:
    """Start the stand-in nodes when needed, write the files, run :func:`schedule`."""
    nodes = node_names(args)
    say_who_serves(args, nodes)
    if len(nodes) < 2:
        raise SystemExit("--nodes: give at least two node names")
    data: Path = args.workdir
    (data / "in").mkdir()
    for name in ("a.bin", "b.bin"):
        (data / name).write_bytes(b"x" * 4096)
    async with contextlib.AsyncExitStack() as stack:
        if in_process(args):
            await stack.enter_async_context(
                LocalCluster(
                    args.broker, nodes, workdir=data, profile_interval=0.5, delete_queues=True
                )
            )
        async with asyncio.timeout(args.timeout):
            await schedule(args.broker, nodes[0], nodes[1], data)
    print("done")
    return 0


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The example's options (the bus options every example shares)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    add_bus_arguments(parser, "embed-facade", nodes=("node1", "node2", "node3"))
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the example; the exit status says how it went (130 after Ctrl-C)."""
    args = parse_args(argv)
    configure_logging(args.verbose)
    try:
        with tempfile.TemporaryDirectory(prefix="jupiter-embed-") as scratch:
            args.workdir = Path(scratch)
            return run_interruptible(run(args))
    except (JupiterBusError, TimeoutError) as exc:
        return exit_status(exc)


if __name__ == "__main__":
    sys.exit(main())
