"""Jupiter's own call style, blocking, through ``jupiter_bus.legacy``: the README's
"Coming from Jupiter" block, as a program.

:func:`jupiter_style` is exactly the block the README shows (a test keeps the two equal):
it selects the transfer and profiler implementations as Jupiter's mapping functions do,
copies a file through node1's worker, and reads the network and resource data in
Jupiter's formats. The calls block, as Jupiter's threaded code expects, so the example
runs them in a thread while the stand-in nodes run on the event loop.

Run it (RabbitMQ: the legacy layer runs its own event loop in a thread, and a
``memory://`` bus lives on one event loop, so the stand-in nodes here cannot share it)::

    python examples/jupiter_legacy.py --broker amqp://guest:guest@127.0.0.1:5672/ --with-agents
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from _cluster import (
    LocalCluster,
    add_bus_arguments,
    configure_logging,
    exit_status,
    in_process,
    node_names,
    say_who_serves,
)

from jupiter_bus import JupiterBusError, legacy
from jupiter_bus.interrupt import run_interruptible


def jupiter_style(url: str, node1: str, node2: str, data: str) -> None:
    legacy.configure(url, node=node1, nodes=[node1, node2])
    transfer = legacy.transfer_mapping_decorator(0)  # TRANSFER = 0 (SCP): node1's worker
    result = transfer("127.0.0.1", "jupiter", None, f"{data}/a.bin", f"{data}/in/a.bin")
    network = legacy.get_network_data_mapping(0)()  # PROFILER = 0 (DRUPE)
    resources = legacy.get_resource_data_mapping(0)()
    print(f"copied {result.bytes} bytes; {node1} -> {node2}: {network[node2]}")
    print(f"{node2}: cpu {resources[node2]['cpu']} %, memory {resources[node2]['memory']} %")
    legacy.shutdown()


async def run(args: argparse.Namespace) -> int:
    """Start the stand-in nodes when needed, write the file, run :func:`jupiter_style`."""
    if str(args.broker).startswith("memory://"):
        print(
            "this example needs RabbitMQ (a memory:// bus lives on one event loop; the "
            "legacy calls block in their own): --broker amqp://guest:guest@127.0.0.1:5672/ "
            "--with-agents",
            file=sys.stderr,
        )
        return 2
    nodes = node_names(args)
    say_who_serves(args, nodes)
    if len(nodes) < 2:
        raise SystemExit("--nodes: give at least two node names")
    data: Path = args.workdir
    (data / "in").mkdir()
    (data / "a.bin").write_bytes(b"x" * 4096)
    async with contextlib.AsyncExitStack() as stack:
        if in_process(args):
            await stack.enter_async_context(
                LocalCluster(
                    args.broker, nodes, workdir=data, profile_interval=0.5, delete_queues=True
                )
            )
        async with asyncio.timeout(args.timeout):
            await asyncio.to_thread(jupiter_style, args.broker, nodes[0], nodes[1], str(data))
    print("done")
    return 0


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The example's options (the bus options every example shares)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    add_bus_arguments(parser, "jupiter-legacy", nodes=("node1", "node2"))
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the example; the exit status says how it went (130 after Ctrl-C)."""
    args = parse_args(argv)
    configure_logging(args.verbose)
    try:
        with tempfile.TemporaryDirectory(prefix="jupiter-legacy-") as scratch:
            args.workdir = Path(scratch)
            return run_interruptible(run(args))
    except (JupiterBusError, TimeoutError) as exc:
        return exit_status(exc)


if __name__ == "__main__":
    sys.exit(main())
