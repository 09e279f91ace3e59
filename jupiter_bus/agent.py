"""The node agent: runs a node's providers with one lifecycle.

- providers are found by name (:mod:`jupiter_bus.plugins`) and configured from a
  mapping (the ``[providers.<name>]`` tables of the agent's TOML file);
- :meth:`Agent.stop` (SIGTERM/SIGINT from the CLI) asks every provider to finish
  and return; one that has not finished within ``grace`` seconds is cancelled
  (transfer workers hand unfinished jobs back to the queue, never lose them);
- a provider that crashes is restarted with exponential backoff and jitter, logged,
  and its health says so; the agent itself keeps running;
- the agent answers ``snapshot.request`` events (:mod:`jupiter_bus.snapshot`): it sends
  the latest body of every key its providers published through
  :meth:`NodeContext.publish_event` to the request's ``reply_to``, so a scheduler that
  starts late has the whole picture at once, not after the next publication.

Example::

    agent = Agent("node1", "amqp://guest:guest@127.0.0.1/", {"resources": {"interval": 5}})
    await agent.run()          # until agent.stop()
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .plugins import Health, NodeContext, Provider, load_provider

# The snapshot protocol lives in jupiter_bus.snapshot; its names stay importable from here.
from .snapshot import SNAPSHOT_REQUEST_KEY as SNAPSHOT_REQUEST_KEY
from .snapshot import SNAPSHOT_REQUEST_TYPE as SNAPSHOT_REQUEST_TYPE
from .snapshot import SnapshotRequest as SnapshotRequest
from .snapshot import SnapshotResponder
from .topology import check_node
from .transport import Transport, connect

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RestartPolicy:
    """Backoff between restarts of a crashed provider: ``initial * 2**n``, capped, jittered."""

    initial_seconds: float = 0.5
    max_seconds: float = 30.0
    healthy_after_seconds: float = 60.0
    """A provider that ran this long before crashing starts its backoff afresh."""

    def delay(self, failures: int) -> float:
        """Seconds to wait before the restart that follows ``failures`` crashes in a row."""
        base = min(self.max_seconds, self.initial_seconds * 2.0 ** max(0, failures - 1))
        return base * random.uniform(0.5, 1.0)


@dataclass(slots=True)
class ProviderStatus:
    """What the agent knows of one provider: its health and its crash record."""

    name: str
    running: bool = False
    restarts: int = 0
    last_error: str | None = None
    health: Health | None = None


class Agent:
    """Runs the providers of one node against one bus.

    ``providers`` maps provider names to their options. ``host`` and ``ssh_port`` say
    where other nodes reach this one (published with resource events).
    """

    def __init__(
        self,
        node: str,
        broker: str | Transport,
        providers: Mapping[str, Mapping[str, Any]],
        *,
        host: str | None = None,
        ssh_port: int | None = None,
        grace: float = 30.0,
        restart: RestartPolicy | None = None,
    ) -> None:
        self.node = check_node(node)
        self._broker = broker
        self._config = {name: dict(options) for name, options in providers.items()}
        self._host = host
        self._ssh_port = ssh_port
        self.grace = grace
        self.restart = restart or RestartPolicy()
        self._stopping = asyncio.Event()
        self._started = asyncio.Event()
        self._providers: dict[str, Provider] = {}
        self._status: dict[str, ProviderStatus] = {}
        self.context: NodeContext | None = None

    def stop(self) -> None:
        """Ask the agent to stop: providers finish their work, then :meth:`run` returns."""
        self._stopping.set()

    async def started(self) -> None:
        """Wait until every provider has been started once."""
        await self._started.wait()

    def status(self) -> dict[str, ProviderStatus]:
        """Each provider's status, with its current health."""
        for name, provider in self._providers.items():
            self._status[name].health = provider.health()
        return dict(self._status)

    def provider(self, name: str) -> Provider:
        """The running instance of provider ``name``."""
        return self._providers[name]

    async def run(self) -> None:
        """Connect, start every provider, supervise them until :meth:`stop`, then clean up."""
        owns_transport = not isinstance(self._broker, Transport)
        transport = (
            await connect(self._broker, connection_name=f"jupiter-bus agent {self.node}")
            if isinstance(self._broker, str)
            else self._broker
        )
        responder: SnapshotResponder | None = None
        try:
            context = self.context = NodeContext(
                node=self.node, transport=transport, host=self._host, ssh_port=self._ssh_port
            )
            for name, options in self._config.items():
                self._providers[name] = load_provider(name)(context, options)
                self._status[name] = ProviderStatus(name)
            # Bound before started() fires: a request sent after it is answered.
            responder = SnapshotResponder(transport, context, name=f"agent {self.node}")
            await responder.start()
            tasks = [
                asyncio.create_task(self._supervise(name, provider), name=f"provider {name}")
                for name, provider in self._providers.items()
            ]
            log.info("agent %s running providers: %s", self.node, ", ".join(self._providers))
            self._started.set()
            try:
                await self._stopping.wait()
            finally:
                self._stopping.set()
                await self._finish(tasks)
        finally:
            if responder is not None:
                await responder.close()
            if owns_transport:
                await transport.close()
            log.info("agent %s stopped", self.node)

    async def _finish(self, tasks: list[asyncio.Task[None]]) -> None:
        if not tasks:
            return
        _, pending = await asyncio.wait(tasks, timeout=self.grace)
        for task in pending:
            log.warning(
                "agent %s: %s did not stop within %g s; cancelling",
                self.node,
                task.get_name(),
                self.grace,
            )
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _supervise(self, name: str, provider: Provider) -> None:
        status = self._status[name]
        failures = 0
        while not self._stopping.is_set():
            started = time.monotonic()
            status.running = True
            try:
                await provider.run(self._stopping)
                if self._stopping.is_set():
                    return
                raise RuntimeError("returned before the agent asked it to stop")
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                status.running = False
                status.restarts += 1
                status.last_error = f"{type(exc).__name__}: {exc}"
                if time.monotonic() - started > self.restart.healthy_after_seconds:
                    failures = 0
                failures += 1
                delay = self.restart.delay(failures)
                provider.set_health(
                    False, f"crashed ({status.last_error}); restarting in {delay:.1f} s"
                )
                log.error(
                    "agent %s: provider %s crashed (%s); restart %d in %.1f s",
                    self.node,
                    name,
                    status.last_error,
                    status.restarts,
                    delay,
                    exc_info=exc,
                )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), delay)
            finally:
                status.running = False
