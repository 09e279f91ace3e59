"""``jupiter-bus setup``: declare what a deployment's clients share, once, before they run.

Today that is the dead-letter queue: every client makes ``jupiter.dead`` as a classic
queue when it finds none, and keeps one that exists as it is. On a RabbitMQ cluster a
classic queue lives on one node, and dead letters sent while that node is down are
dropped; ``--dead-letters quorum`` (the default) makes it a replicated quorum queue
(docs/beyond-one-broker.md). An empty classic queue is replaced; one holding letters
is left as it is (exit 1: read or purge them first), and so is a quorum queue asked to
be classic (RabbitMQ cannot delete it only if empty). Run it again at any time: a
queue already of that type is kept.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
from typing import Any

from ..errors import ConfigError
from ..topology import DEAD_QUEUE
from ..transport.amqp import AmqpTransport
from ..transport.base import safe_url
from .broker_url import add_broker_arguments, resolve_broker
from .console import command_parser

__all__ = [
    "add",
    "run",
]

EXAMPLES = """\
examples:
  jupiter-bus setup --broker-file /etc/jupiter/broker.url   # amqp://admin:...@h1,h2,h3/
  JUPITER_BUS_URL=amqp://guest:guest@127.0.0.1/ jupiter-bus setup --dead-letters classic
"""


def add(commands: Any) -> None:
    """Add the ``setup`` sub-command."""
    parser = command_parser(
        commands,
        "setup",
        summary="declare the shared queues once (jupiter.dead as a quorum queue)",
        doc=__doc__,
        examples=EXAMPLES,
    )
    add_broker_arguments(parser)
    parser.add_argument(
        "--dead-letters",
        choices=("quorum", "classic"),
        default="quorum",
        help="the type of jupiter.dead (default: %(default)s)",
    )
    parser.set_defaults(run=run, log_level=logging.WARNING)


async def _setup(args: argparse.Namespace) -> int:
    url = resolve_broker(args)
    if not url.startswith(("amqp://", "amqps://")):
        raise ConfigError(f"setup needs a RabbitMQ URL (amqp:// or amqps://), not {safe_url(url)}")
    async with AmqpTransport(url, connection_name="jupiter-bus setup") as bus:
        await bus.connect()
        outcome = await bus.declare_dead_queue(args.dead_letters)
    print(f"{DEAD_QUEUE} on {safe_url(url)}: {outcome} as a {args.dead_letters} queue", flush=True)
    return 0


def run(args: argparse.Namespace) -> int:
    """Run ``jupiter-bus setup``."""
    return asyncio.run(_setup(args))
