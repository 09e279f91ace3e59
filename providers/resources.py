"""Resource provider: publishes this node's CPU and memory (psutil) as ``resource.<node>``.

``cpu_percent`` is the whole machine's CPU use averaged over the publication interval,
from the provider's own successive ``cpu_times()`` readings (the first reading only
primes it, so it is made at start and never published).

Options: ``interval`` (seconds, default 5).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import psutil

from jupiter_bus.errors import TransportError
from jupiter_bus.messages import ResourceSample, encode
from jupiter_bus.options import Options, option
from jupiter_bus.plugins import NodeContext, Provider, wait_or_stop
from jupiter_bus.topology import resource_key

__all__ = [
    "ResourceOptions",
    "ResourceProvider",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ResourceOptions(Options):
    """Options of the ``resources`` provider (``[providers.resources]``)."""

    interval: float = option(5.0, doc="seconds between two resource events", unit="seconds", gt=0)


class ResourceProvider(Provider):
    """Publishes ``resource.<node>`` every ``interval`` seconds.

    Samples go out through :meth:`NodeContext.publish_event`, so the agent also
    hands the latest one to schedulers that start between two publications.

    Example (agent configuration)::

        [providers.resources]
        interval = 5
    """

    name = "resources"
    Options = ResourceOptions
    settings: ResourceOptions

    def __init__(
        self, context: NodeContext, options: Mapping[str, Any] | ResourceOptions | None = None
    ) -> None:
        super().__init__(context, options)
        self.interval = self.settings.interval
        self._cpu_times: tuple[float, float] | None = None

    def _cpu_percent(self) -> float:
        """Whole-machine CPU use since this provider's previous call.

        Computed from this provider's own ``cpu_times()`` readings: psutil's
        ``cpu_percent(None)`` keeps one previous reading per thread, so several
        providers (or a scheduler) in one event loop would steal each other's window.
        """
        times = psutil.cpu_times()
        # guest time is already counted in user time on Linux (psutil does the same)
        total = sum(times) - getattr(times, "guest", 0.0) - getattr(times, "guest_nice", 0.0)
        busy = total - times.idle - getattr(times, "iowait", 0.0)
        previous, self._cpu_times = self._cpu_times, (busy, total)
        if previous is None or total <= previous[1]:
            return 0.0
        return min(100.0, max(0.0, 100.0 * (busy - previous[0]) / (total - previous[1])))

    def sample(self) -> ResourceSample:
        """Measure now (CPU since the previous call)."""
        memory = psutil.virtual_memory()
        return ResourceSample(
            node=self.context.node,
            cpu_percent=self._cpu_percent(),
            cpu_count=psutil.cpu_count(logical=True) or 1,
            memory_percent=float(memory.percent),
            memory_total_bytes=int(memory.total),
            memory_available_bytes=int(memory.available),
            host=self.context.host,
            ssh_port=self.context.ssh_port,
        )

    async def run(self, stopping: asyncio.Event) -> None:
        """Publish one sample per interval until stopped."""
        self._cpu_percent()  # prime: the first reading has nothing to compare with
        key = resource_key(self.context.node)
        # The first sample goes out after a short measuring window, not a whole
        # interval, so a scheduler starting with the agent sees the node at once.
        wait = min(1.0, self.interval)
        while not await wait_or_stop(stopping, wait):
            wait = self.interval
            sample = self.sample()
            try:
                await self.context.publish_event(key, encode(sample))
                self.set_health(True, f"published at {sample.ts:.0f}")
            except TransportError as exc:
                self.set_health(False, f"publish failed: {exc}")
                log.warning("node %s: resource sample not published: %s", self.context.node, exc)
