"""Stand-ins for a Jupiter deployment, started in-process by the examples.

Not an example itself: the examples import it so that each runs with no setup. It
starts, on one bus,

- a node agent per node with the ``resources`` provider and a ``transfer`` worker using
  the ``local`` engine (copies on this host; the files stay under a scratch folder);
- a synthetic network profiler: one :class:`~jupiter_bus.messages.LinkCost` per ordered
  link, with made-up but plausible latency and bandwidth, republished with a little
  jitter every ``profile_interval`` seconds (the real profiler probes links over SSH).

On ``memory://`` it is always needed (nothing else shares an in-process bus); on
``amqp://`` only with ``--with-agents``. There the nodes get a per-run suffix
(``node1-3f2a``) so they never share a work queue with real agents or other runs, and
their work queues are deleted on exit.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import random
import sys
import uuid
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Final, Self

from jupiter_bus import JupiterBusError, LinkCost, StateUnavailable, Unroutable
from jupiter_bus.agent import Agent, running
from jupiter_bus.messages import encode
from jupiter_bus.topology import EVENTS_EXCHANGE, network_key, work_queue
from jupiter_bus.transport import Transport, connect

DEFAULT_NODES: Final = ("node1", "node2", "node3", "node4")
LOCAL_HOST: Final = "127.0.0.1"
_STOP_SECONDS: Final = 15.0


def add_bus_arguments(
    parser: argparse.ArgumentParser,
    name: str,
    nodes: Sequence[str] = DEFAULT_NODES,
    *,
    timeout: bool = True,
) -> None:
    """The options every example shares: where the bus is and who runs the nodes."""
    parser.add_argument(
        "--broker",
        default=os.environ.get("JUPITER_BUS_URL") or f"memory://{name}",
        help=(
            f"bus URL (default: $JUPITER_BUS_URL, else memory://{name}, in-process, which "
            "starts its own agents); prefer the variable: a password in argv shows in ps"
        ),
    )
    parser.add_argument(
        "--with-agents",
        action="store_true",
        help="on amqp://, start throwaway agents and a synthetic profiler in this process",
    )
    parser.add_argument(
        "--nodes",
        default=",".join(nodes),
        help="comma-separated node names (default: %(default)s)",
    )
    if timeout:
        parser.add_argument(
            "--timeout", type=float, default=15.0, help="seconds to wait for state and results"
        )
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")


def in_process(args: argparse.Namespace) -> bool:
    """Whether this process starts the agents and the profiler itself."""
    return str(args.broker).startswith("memory://") or bool(args.with_agents)


def node_names(args: argparse.Namespace) -> list[str]:
    """The nodes the example works with; throwaway agents on a real broker get a suffix."""
    names = [n.strip() for n in str(args.nodes).split(",") if n.strip()]
    if not names:
        raise SystemExit("--nodes: give at least one node name")
    if args.with_agents and not str(args.broker).startswith("memory://"):
        run = uuid.uuid4().hex[:4]
        names = [f"{n}-{run}" for n in names]
    return names


def say_who_serves(args: argparse.Namespace, nodes: Sequence[str]) -> None:
    """On a real broker without ``--with-agents``, say at once what the run relies on."""
    if not in_process(args):
        print(
            f"note: no agents start here: nodes {', '.join(nodes)} must be served by agents "
            f"already running on {safe_url(str(args.broker))} (or pass --with-agents)",
            file=sys.stderr,
            flush=True,
        )


def safe_url(url: str) -> str:
    """``url`` without credentials, for printing."""
    scheme, sep, rest = url.partition("://")
    return scheme + sep + rest.rpartition("@")[2]


def configure_logging(verbose: bool) -> None:
    """Library warnings to stderr; ``--verbose`` shows the INFO lines (job ids, nodes)."""
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )


def exit_status(error: JupiterBusError | TimeoutError) -> int:
    """Say on stderr what went wrong and what to do about it; return exit status 2."""
    hint = ""
    if isinstance(error, StateUnavailable):
        hint = " (are the nodes' agents and profilers running? or pass --with-agents)"
    elif isinstance(error, Unroutable):
        hint = " (no agent with a transfer worker serves that node; or pass --with-agents)"
    print(f"error: {error}{hint}", file=sys.stderr)
    return 2


def synthetic_costs(
    nodes: Sequence[str], rng: random.Random, jitter: float = 0.0
) -> list[LinkCost]:
    """One plausible cost model per ordered link: latency 2-30 ms, 20-200 Mbit/s.

    ``cost_ms = a*x^2 + b*x + c`` with ``x`` in Kbit: ``b = 1/bandwidth`` (1 Kbit at
    1 Mbit/s takes 1 ms), ``c`` the latency and a small ``a`` for congestion on large
    files. ``jitter`` scales every parameter by a factor in ``1 +- jitter``.
    """
    costs = []
    for src in nodes:
        for dst in nodes:
            if src == dst:
                continue
            # Seeded by the link's name: the same link keeps its character across updates.
            link = random.Random(f"{src}->{dst}")
            mbit_per_s = link.uniform(20.0, 200.0)
            factor = [1.0 + rng.uniform(-jitter, jitter) for _ in range(3)]
            costs.append(
                LinkCost(
                    src=src,
                    dst=dst,
                    a=link.uniform(1e-9, 2e-8) * factor[0],
                    b=1.0 / mbit_per_s * factor[1],
                    c=link.uniform(2.0, 30.0) * factor[2],
                    samples=12,
                    r2=round(link.uniform(0.95, 0.999), 3),
                    min_kbit=8.0,
                    max_kbit=80_000.0,
                    model="quadratic",
                )
            )
    return costs


async def publish_costs(transport: Transport, costs: Sequence[LinkCost]) -> None:
    """Publish link costs as a network profiler would (``network.<src>.<dst>``)."""
    for cost in costs:
        await transport.publish(EVENTS_EXCHANGE, network_key(cost.src, cost.dst), encode(cost))


class LocalCluster:
    """Agents for ``nodes`` and a synthetic profiler on the bus at ``url``.

    Use it as an async context manager; on entry every node's work queue exists (so a
    transfer sent at once waits in the queue rather than failing ``unreachable``) and
    every link has a cost. With ``profile_interval``, costs are republished (jittered,
    in random order) that often until exit. ``workdir`` holds the transfer workers'
    job stores; transfers are allowed to read only under it.

    Example::

        async with LocalCluster("memory://x", ["node1", "node2"], workdir=tmp):
            ...   # resource events, link costs and transfer workers are live
    """

    def __init__(
        self,
        url: str,
        nodes: Sequence[str],
        *,
        workdir: Path,
        profile_interval: float | None = None,
        seed: int = 7,
        delete_queues: bool = False,
    ) -> None:
        self.url = url
        self.nodes = list(nodes)
        self.workdir = workdir
        self.profile_interval = profile_interval
        self.delete_queues = delete_queues
        self._rng = random.Random(seed)
        self._transport: Transport | None = None
        self._agents: list[Agent] = []
        self._agents_running = contextlib.AsyncExitStack()
        self._profiler: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Self:
        self._transport = await connect(self.url, connection_name="jupiter-bus example cluster")
        try:
            for node in self.nodes:
                await self._transport.declare_work_queue(node)
                agent = Agent(node, self.url, self._providers(node), host=LOCAL_HOST, grace=5.0)
                self._agents.append(agent)
            await self._agents_running.enter_async_context(
                running(self._agents, stop_timeout=_STOP_SECONDS)
            )
            await publish_costs(self._transport, synthetic_costs(self.nodes, self._rng))
            if self.profile_interval is not None:
                self._profiler = asyncio.create_task(
                    self._profile(self._transport, self.profile_interval), name="profiler"
                )
        except BaseException:
            await self._shutdown()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._shutdown()

    def _providers(self, node: str) -> dict[str, dict[str, object]]:
        return {
            "resources": {"interval": 0.5},
            "transfer": {
                "engine": "local",
                "allow_roots": [str(self.workdir)],
                "state_dir": str(self.workdir / "state" / node),
            },
        }

    async def _profile(self, transport: Transport, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            costs = synthetic_costs(self.nodes, self._rng, jitter=0.15)
            self._rng.shuffle(costs)
            await publish_costs(transport, costs)

    async def _shutdown(self) -> None:
        if self._profiler is not None:
            self._profiler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._profiler
        await self._agents_running.aclose()
        transport, self._transport = self._transport, None
        if transport is not None:
            try:
                if self.delete_queues:
                    for node in self.nodes:
                        await transport.delete_queue(work_queue(node))
            finally:
                await transport.close()
