"""``jupiter-bus demo``: the bus at work, with no setup (in-process bus by default)."""

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
  jupiter-bus demo --broker amqp://guest:guest@127.0.0.1/
"""


def add(commands: Any) -> None:
    """Add the ``demo`` sub-command."""
    parser = command_parser(
        commands, "demo", summary="show the bus at work", doc=__doc__, examples=EXAMPLES
    )
    parser.add_argument(
        "--broker", default="memory://demo", help="bus URL (default: memory://demo, no broker)"
    )
    parser.set_defaults(run=run, log_level=logging.WARNING)


def run(args: argparse.Namespace) -> int:
    """Run ``jupiter-bus demo``."""
    return run_interruptible(demo(args.broker), name="jupiter-bus")
