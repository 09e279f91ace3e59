"""``jupiter-bus demo``: three real nodes in this process (agents, SSH servers with shaped
links, the network profiler, SFTP transfers) and a HEFT scheduler on their live state.

The live view shows each node's resources, each link's fitted cost (rate, latency, r2,
age) next to the rate its link is shaped to, the transfers of each scheduling round
with progress bars, and the latest schedule. Off a terminal (or with --plain) the same
events are plain lines. It ends after --duration seconds or at Ctrl-C with the final
schedule and a one-line verdict (exit 0 when OK, 1 when not, 130 after Ctrl-C).
"""

from __future__ import annotations

import argparse
import logging
from typing import Any

from ..demo import demo
from ..interrupt import run_interruptible
from .console import command_parser

__all__ = [
    "add",
    "run",
]

EXAMPLES = """\
examples:
  jupiter-bus demo
  jupiter-bus demo --duration 0 --nodes 4     # until Ctrl-C
  jupiter-bus demo --plain > demo.log
  jupiter-bus demo --broker amqp://guest:guest@127.0.0.1/
"""


def _duration(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected seconds >= 0, got {text}")
    return value


def _nodes(text: str) -> int:
    value = int(text)
    if not 2 <= value <= 12:
        raise argparse.ArgumentTypeError(f"expected 2 to 12 nodes, got {text}")
    return value


def add(commands: Any) -> None:
    """Add the ``demo`` sub-command."""
    parser = command_parser(
        commands, "demo", summary="show real nodes at work", doc=__doc__, examples=EXAMPLES
    )
    parser.add_argument(
        "--broker", default="memory://demo", help="bus URL (default: memory://demo, no broker)"
    )
    parser.add_argument(
        "--duration",
        type=_duration,
        default=30.0,
        help="seconds to run, 0 = until Ctrl-C (default: %(default)s)",
    )
    parser.add_argument(
        "--nodes", type=_nodes, default=3, help="how many nodes, 2-12 (default: %(default)s)"
    )
    parser.add_argument(
        "--plain", action="store_true", help="plain lines even on a terminal (no live view)"
    )
    parser.set_defaults(run=run, log_level=logging.WARNING)


def run(args: argparse.Namespace) -> int:
    """Run ``jupiter-bus demo``."""
    duration = args.duration or None
    live = False if args.plain else None
    return run_interruptible(
        demo(args.broker, nodes=args.nodes, duration=duration, live=live), name="jupiter-bus"
    )
