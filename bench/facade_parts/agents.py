"""One agent per node, each holding its outgoing links: what a late joiner asks."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from facade_parts.settings import WAIT_S
from facade_parts.synthetic import Topology, fabricated_rows
from jupiter_bus.agent import Agent
from jupiter_bus.messages import LinkCost
from jupiter_bus.transport import Transport


@dataclass(slots=True)
class Agents:
    """One agent per node (no providers) on a shared transport, answering snapshot
    requests; agent ``i`` owns ``rows[i]``, its outgoing links."""

    transport: Transport
    rows: Sequence[list[LinkCost]]
    agents: list[Agent] = field(default_factory=list)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    @classmethod
    async def set_up(
        cls, transport: Transport, topology: Topology, rows: Sequence[list[LinkCost]] = ()
    ) -> tuple[Agents, dict[str, float]]:
        """Build the links (unless given), start the agents, publish the links once;
        the seconds each step took."""
        started = time.perf_counter()
        agents = cls(transport, rows or fabricated_rows(topology))
        built = time.perf_counter()
        timings = {} if rows else {"build": built - started}
        try:
            await agents.start(topology.names)
            ready = time.perf_counter()
            await agents.publish_links()
        except BaseException:
            await agents.stop()
            raise
        timings.update(start=ready - built, seed=time.perf_counter() - ready)
        return agents, timings

    async def start(self, names: Sequence[str]) -> None:
        for name in names:
            agent = Agent(name, self.transport, {}, grace=2.0)
            self.agents.append(agent)
            self.tasks.append(asyncio.create_task(agent.run(), name=f"bench agent {name}"))
        async with asyncio.timeout(WAIT_S):
            await asyncio.gather(*(agent.started() for agent in self.agents))

    async def publish_links(self, first: int | None = None) -> float:
        """Each agent publishes its row (or its ``first`` links) as one batch with
        ``NodeContext.publish_links``; seconds.

        A whole row is also the agent's next snapshot answer, ready-made; part of a row
        (a round of probes that changed some links) makes the next answer be built anew.
        """
        started = time.perf_counter()
        contexts = [agent.context for agent in self.agents]
        await asyncio.gather(
            *(
                context.publish_links(row[:first])
                for context, row in zip(contexts, self.rows, strict=True)
                if context is not None
            )
        )
        return time.perf_counter() - started

    async def stop(self) -> None:
        for agent in self.agents:
            agent.stop()
        await asyncio.gather(*self.tasks, return_exceptions=True)
