"""``jupiter-bus status``: is the broker reachable, which nodes are alive, what waits where.

It connects, asks every agent for its latest events (the late-joiner snapshot), listens
for ``--settle`` seconds, then reports each node seen (or named with ``--node``): the
age of its latest resource sample (by the producer's clock), where its SSH server is,
its outgoing links with a cost and the newest one's age, and its transfer work queue
(jobs waiting, workers consuming); then the dead-letter queue's depth. A node whose
sample is older than ``--stale`` seconds, or that has no worker on its queue, is
flagged. Exit 0 when every node named with ``--node`` is seen, fresh and served;
otherwise 1 (the broker's own errors: 69 unreachable, 77 refused).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import time
from dataclasses import asdict, dataclass
from typing import Any

import orjson

from ..errors import TransportError
from ..facade import JupiterInterface
from ..topology import DEAD_QUEUE, work_queue
from ..transport import QueueStats
from ..transport.base import safe_url
from .broker_url import add_broker_arguments, resolve_broker
from .console import EXIT_FAILED, command_parser

__all__ = [
    "NodeStatus",
    "add",
    "run",
]

EXAMPLES = """\
examples:
  jupiter-bus status
  jupiter-bus status --node node1 --node node2     # exit 1 unless both are alive and served
  jupiter-bus status --json | jq '.nodes[] | select(.problems != [])'
"""


def add(commands: Any) -> None:
    """Add the ``status`` sub-command."""
    parser = command_parser(
        commands,
        "status",
        summary="broker, nodes (staleness, workers), queue depths, dead letters",
        doc=__doc__,
        examples=EXAMPLES,
    )
    add_broker_arguments(parser)
    parser.add_argument(
        "--node",
        action="append",
        default=[],
        metavar="NAME",
        help="a node that must be alive (repeat for several); exit 1 if one is not",
    )
    parser.add_argument(
        "--settle",
        type=float,
        default=2.0,
        metavar="S",
        help="seconds to listen for the agents' answers (default: %(default)s)",
    )
    parser.add_argument(
        "--stale",
        type=float,
        default=30.0,
        metavar="S",
        help="a node whose latest sample is older than this is stale (default: %(default)s)",
    )
    parser.add_argument("--json", action="store_true", help="one JSON document")
    parser.set_defaults(run=run, log_level=logging.WARNING)


@dataclass(frozen=True, slots=True)
class NodeStatus:
    """What ``status`` knows of one node."""

    node: str
    seen: bool
    age_seconds: float | None
    """Since its latest resource sample was made (the producer's clock), or None."""
    ssh: str | None
    links_out: int
    newest_link_age_seconds: float | None
    jobs_waiting: int | None
    """Ready messages on its work queue; None when the queue does not exist."""
    workers: int | None
    problems: tuple[str, ...]


async def _stats(jupiter: JupiterInterface, queue: str) -> QueueStats | None:
    try:
        return await jupiter.transport.queue_stats(queue)
    except TransportError:
        return None


async def _node(jupiter: JupiterInterface, node: str, stale: float) -> NodeStatus:
    resources = jupiter.resources.snapshot()
    network = jupiter.network.snapshot()
    sample = resources.get(node)
    now = time.time()
    age = None if sample is None else max(0.0, now - sample.ts)
    links = [entry for entry in network.links() if entry.src == node] if node in network else []
    newest = min((max(0.0, now - entry.ts) for entry in links), default=None)
    queue = await _stats(jupiter, work_queue(node))
    problems = []
    if sample is None:
        problems.append("no resource sample")
    elif age is not None and age > stale:
        problems.append(f"stale: latest sample {age:.0f} s old")
    if queue is None:
        problems.append("no work queue")
    elif queue.consumers == 0:
        problems.append("no transfer worker")
    ssh = None
    if sample is not None and sample.host:
        ssh = f"{sample.host}:{sample.ssh_port or 22}"
    return NodeStatus(
        node=node,
        seen=sample is not None,
        age_seconds=None if age is None else round(age, 3),
        ssh=ssh,
        links_out=len(links),
        newest_link_age_seconds=None if newest is None else round(newest, 3),
        jobs_waiting=None if queue is None else queue.messages,
        workers=None if queue is None else queue.consumers,
        problems=tuple(problems),
    )


def _text(url: str, nodes: list[NodeStatus], dead: QueueStats | None) -> str:
    lines = [f"broker: {safe_url(url)} reachable"]
    lines.append(f"nodes: {sum(n.seen for n in nodes)} seen")
    for n in nodes:
        age = "never" if n.age_seconds is None else f"{n.age_seconds:.1f} s ago"
        newest = n.newest_link_age_seconds
        link_age = "" if newest is None else f", newest {newest:.0f} s"
        queue = (
            "no work queue"
            if n.jobs_waiting is None
            else f"{n.jobs_waiting} jobs waiting, {n.workers} worker(s)"
        )
        flag = "ok" if not n.problems else "PROBLEM: " + "; ".join(n.problems)
        lines.append(
            f"  {n.node:<16} sample {age:<12} ssh {n.ssh or '-':<21} "
            f"links {n.links_out}{link_age}; {queue}; {flag}"
        )
    lines.append(
        "dead letters: "
        + ("no dead-letter queue" if dead is None else f"{dead.messages} in {DEAD_QUEUE}")
    )
    return "\n".join(lines)


async def _status(args: argparse.Namespace) -> int:
    url = resolve_broker(args)
    async with JupiterInterface(url) as jupiter:
        await asyncio.sleep(max(0.0, args.settle))
        names = sorted(set(jupiter.resources.nodes) | set(args.node))
        nodes = [await _node(jupiter, name, args.stale) for name in names]
        dead = await _stats(jupiter, DEAD_QUEUE)
    if args.json:
        document = {
            "broker": safe_url(url),
            "reachable": True,
            "nodes": [asdict(n) for n in nodes],
            "dead_letters": None if dead is None else dead.messages,
        }
        print(orjson.dumps(document).decode(), flush=True)
    else:
        print(_text(url, nodes, dead), flush=True)
    required = {n.node: n for n in nodes if n.node in set(args.node)}
    return EXIT_FAILED if any(n.problems for n in required.values()) else 0


def run(args: argparse.Namespace) -> int:
    """Run ``jupiter-bus status``."""
    return asyncio.run(_status(args))
