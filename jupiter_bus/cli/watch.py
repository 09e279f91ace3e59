"""``jupiter-bus watch network|resources|transfers|progress``: print live updates from the bus,
one line each (``--json``: one JSON object per line), until ``--count`` updates,
``--duration`` seconds, or Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

from rich.live import Live

from ..errors import ConfigError
from ..facade import JupiterInterface
from ..messages import LinkCost, ResourceSample, TransferProgress, TransferResult, encode
from ..plots import link_heatmap
from .broker_url import add_broker_arguments, resolve_broker
from .console import command_parser, say
from .watch_table import LiveTable

__all__ = [
    "add",
    "describe",
    "run",
]

EXAMPLES = """\
examples:
  jupiter-bus watch network --src node1
  jupiter-bus watch resources --node node2 --json --count 10
  jupiter-bus watch transfers --duration 60
  jupiter-bus watch network --duration 10 --plot links.png --size-kb 1000
  jupiter-bus watch progress --node node1
"""


def add(commands: Any) -> None:
    """Add the ``watch`` sub-command."""
    parser = command_parser(
        commands,
        "watch",
        summary="print live link costs, resources, transfer results or transfer progress",
        doc=__doc__,
        examples=EXAMPLES,
    )
    parser.add_argument("what", choices=("network", "resources", "transfers", "progress"))
    add_broker_arguments(parser)
    parser.add_argument("--src", help="network: only links from this node")
    parser.add_argument("--dst", help="network: only links to this node")
    parser.add_argument("--node", help="resources/transfers/progress: only this node")
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    parser.add_argument(
        "--lines", action="store_true", help="one line per update even on a terminal (no table)"
    )
    parser.add_argument("--count", type=int, metavar="N", help="stop after N updates")
    parser.add_argument("--duration", type=float, metavar="S", help="stop after S seconds")
    parser.add_argument(
        "--plot",
        metavar="FILE.png",
        help="network: at the end, draw every known link's cost as a heatmap (matplotlib)",
    )
    parser.add_argument(
        "--size-kb",
        type=float,
        default=1000.0,
        metavar="KB",
        help="--plot: the file size whose cost is drawn, KB (default: %(default)g = 1 MB)",
    )
    parser.set_defaults(run=run, log_level=logging.WARNING)


def describe(update: object) -> str:
    """One readable line for a live update (what ``watch`` prints without ``--json``).

    Example::

        describe(cost)   # 'node1->node2 cost_ms = 1.2e-09 x^2 + 0.00125 x + 42 r2 0.997 ...'
    """
    match update:
        case LinkCost():
            return (
                f"{update.src}->{update.dst} cost_ms = {update.a:.3g} x^2 + {update.b:.3g} x + "
                f"{update.c:.3g} (x in Kbit) r2 {update.r2:.3f} samples {update.samples}"
            )
        case ResourceSample():
            return (
                f"{update.node} cpu {update.cpu_percent:.1f}% of {update.cpu_count} "
                f"memory {update.memory_percent:.1f}% of {update.memory_total_bytes >> 20} MiB"
            )
        case TransferResult():
            outcome = "ok" if update.ok or update.error is None else f"failed: {update.error.kind}"
            return (
                f"{update.request_id} {outcome} {update.bytes} bytes "
                f"in {update.seconds * 1000:.1f} ms"
            )
        case TransferProgress():
            total = update.bytes_total
            if total is None:
                return f"{update.request_id} on {update.node}: {update.bytes_done} bytes"
            share = 100.0 if total == 0 else 100.0 * update.bytes_done / total
            return (
                f"{update.request_id} on {update.node}: {update.bytes_done} of {total} bytes "
                f"({share:.0f}%)"
            )
    return repr(update)


def _feed(jupiter: JupiterInterface, args: argparse.Namespace) -> Any:
    if args.what == "network":
        return jupiter.watch_network(src=args.src, dst=args.dst)
    if args.what == "resources":
        return jupiter.watch_resources(node=args.node)
    if args.what == "progress":
        return jupiter.watch_progress(node=args.node)
    return jupiter.watch_transfers(node=args.node)


async def _updates(feed: AsyncIterator[Any], deadline: float | None) -> AsyncIterator[Any]:
    while True:
        left = None if deadline is None else deadline - time.monotonic()
        if left is not None and left <= 0:
            return
        try:
            yield await asyncio.wait_for(anext(feed), left)
        except (TimeoutError, StopAsyncIteration):
            return


async def _watch(args: argparse.Namespace) -> int:
    deadline = None if args.duration is None else time.monotonic() + args.duration
    seen = 0
    if args.plot and args.what != "network":
        raise ConfigError("--plot: only 'watch network' draws a picture")
    table = None
    if sys.stdout.isatty() and not args.json and not args.lines:
        table = LiveTable(args.what)
    shown: Any = (
        Live(get_renderable=table.render, refresh_per_second=4)
        if table is not None
        else contextlib.nullcontext()
    )
    async with (
        JupiterInterface(resolve_broker(args)) as jupiter,
        _feed(jupiter, args) as feed,
    ):
        try:
            with shown:
                async for update in _updates(feed, deadline):
                    if table is not None:
                        table.add(update)
                    elif args.json:
                        print(encode(update).decode(), flush=True)
                    else:
                        print(describe(update), flush=True)
                    seen += 1
                    if args.count is not None and seen >= args.count:
                        break
        finally:  # also after Ctrl-C: the picture of what was seen
            if args.plot:
                data = jupiter.network.snapshot()
                path = link_heatmap(data, args.plot, size_kbit=args.size_kb * 8)
                say(f"wrote {path}: {data.link_count} links, cost of {args.size_kb:g} KB")
    return 0


def run(args: argparse.Namespace) -> int:
    """Run ``jupiter-bus watch``."""
    try:
        return asyncio.run(_watch(args))
    except BrokenPipeError:  # `watch ... | head`: the reader went away, a normal end
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
