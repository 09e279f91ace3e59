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
import getpass
import logging
import socket
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Final
from urllib.parse import urlsplit

from .backoff import Backoff
from .errors import BrokerUnreachable, ConfigError, ProviderError
from .host_address import default_host, is_loopback
from .metrics import AgentMetrics, MetricsServer, require_prometheus
from .options import HOST, NODE_NAME, Options, convert, option, summarize
from .plugins import Health, NodeContext, Provider, load_provider

# The snapshot protocol lives in jupiter_bus.snapshot; its names stay importable from here.
from .snapshot import SNAPSHOT_REQUEST_KEY as SNAPSHOT_REQUEST_KEY
from .snapshot import SNAPSHOT_REQUEST_TYPE as SNAPSHOT_REQUEST_TYPE
from .snapshot import SnapshotRequest as SnapshotRequest
from .snapshot import SnapshotResponder
from .transport import Transport, create
from .transport.base import safe_url

__all__ = [
    "Agent",
    "AgentOptions",
    "ProviderStatus",
    "RestartPolicy",
    "running",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RestartPolicy:
    """Backoff between restarts of a crashed provider: ``initial * 2**n``, capped, jittered."""

    initial_seconds: float = 0.5
    max_seconds: float = 30.0
    healthy_after_seconds: float = 60.0
    """A provider that ran this long before crashing starts its backoff afresh."""
    jitter: float = 0.5
    """Each delay is shortened at random by up to this fraction (see :class:`Backoff`)."""

    @property
    def backoff(self) -> Backoff:
        """The delays, as the :class:`~jupiter_bus.backoff.Backoff` shared by all retries."""
        return Backoff(self.initial_seconds, self.max_seconds, self.jitter)

    def delay(self, failures: int) -> float:
        """Seconds to wait before the restart that follows ``failures`` crashes in a row."""
        return self.backoff.delay(failures)


_ATTEMPT_SECONDS: Final = 10.0
"""At most this long for one connection attempt (a host that drops packets)."""
_CONNECT_BACKOFF: Final = Backoff(initial_seconds=0.5, max_seconds=10.0, jitter=0.2)
"""Delays between attempts to reach the broker at start."""

_BUS_SCHEMES: Final = ("memory", "amqp", "amqps")
"""URL schemes :func:`jupiter_bus.transport.connect` understands."""


def _is_bus_url(url: str) -> bool:
    return urlsplit(url).scheme in _BUS_SCHEMES


def _provider_tables(tables: object, path: str) -> Mapping[str, Mapping[str, Any] | Options]:
    """The ``[providers.<name>]`` tables, each converted by its provider's own options."""
    if not isinstance(tables, Mapping):
        raise ConfigError(f"{path}: expected a table of provider tables ([{path}.<name>])")
    converted: dict[str, Mapping[str, Any] | Options] = {}
    for name, table in tables.items():
        try:
            provider = load_provider(name)
        except ProviderError as exc:
            raise ProviderError(f"{path}.{name}: {exc}") from None
        converted[name] = provider.parse_options(table)
    return MappingProxyType(converted)


def _default_providers() -> Mapping[str, Mapping[str, Any]]:
    """What an agent runs when its configuration names no provider."""
    return MappingProxyType(
        {"resources": {}, "transfer": {}, "network": {"default_user": getpass.getuser()}}
    )


@dataclass(frozen=True, slots=True)
class AgentOptions(Options):
    """What a node agent runs and where (the top level of the agent's TOML file).

    Converted with :func:`jupiter_bus.options.convert`: a bad value, or an unknown key,
    is refused with a :class:`ConfigError` naming it, before anything connects.

    Example::

        options = convert(AgentOptions, tomllib.load(file))
        await Agent.from_options(options).run()
    """

    node: str = option(doc="this node's name", **NODE_NAME)
    broker: str | None = option(
        None,
        doc="bus URL: memory://NAME, amqp://user:pass@host/vhost or amqps://... "
        "(none: the program hands the agent a connected transport)",
        check=_is_bus_url,
        expect="a bus URL (memory://..., amqp://... or amqps://...)",
        secret=True,
    )
    host: str | None = option(
        None,
        doc="where other nodes reach this node (sent with resource events)",
        **HOST,
    )
    ssh_port: int | None = option(
        None, doc="SSH port other nodes reach this node at", ge=1, le=65535
    )
    grace: float = option(
        30.0,
        doc="seconds providers get to finish when the agent stops, before they are cancelled",
        unit="seconds",
        ge=0,
    )
    connect_timeout: float = option(
        60.0,
        doc="seconds the agent waits for the broker at start, retrying with backoff "
        "(0: one attempt); then it gives up",
        unit="seconds",
        ge=0,
    )
    providers: Mapping[str, Mapping[str, Any] | Options] = option(
        factory=_default_providers,
        doc="the providers to run, each with its options table ([providers.<name>]); "
        "without any: resources, transfer and network, the profiler learning its peers "
        "from their resource events and logging in to them as this agent's own user",
        convert=_provider_tables,
        expect="a table of provider tables",
    )
    metrics_port: int | None = option(
        None,
        doc="port of this agent's Prometheus endpoint, http://metrics_host:PORT/metrics "
        "(none: no endpoint; needs pip install 'jupiter-bus[metrics]'; see docs/metrics.md)",
        ge=1,
        le=65535,
    )
    metrics_host: str = option(
        "127.0.0.1",
        doc="address the metrics endpoint listens on (it has no authentication: "
        "0.0.0.0 only on a trusted network)",
        **HOST,
    )
    link_metrics: bool = option(
        False,
        doc="also export the cost of each of this node's links (jupiter_link_*, one series "
        "per peer and parameter: 1,000 nodes make about 10^6 series in all)",
    )


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

    ``providers`` maps provider names to their options (tables or options objects).
    ``host`` and ``ssh_port`` say where other nodes reach this one (published with
    resource events). Every option is checked here (:class:`AgentOptions`), so a bad
    one raises :class:`~jupiter_bus.errors.ConfigError` before anything runs.

    With ``metrics_port`` (or ``metrics_socket``, a bound socket the agent then owns,
    e.g. one on port 0 in tests), :meth:`run` serves Prometheus metrics
    (:mod:`jupiter_bus.metrics`) at :attr:`metrics_url` while it runs.
    """

    def __init__(
        self,
        node: str,
        broker: str | Transport,
        providers: Mapping[str, Any],
        *,
        host: str | None = None,
        ssh_port: int | None = None,
        grace: float = 30.0,
        connect_timeout: float = 60.0,
        restart: RestartPolicy | None = None,
        metrics_port: int | None = None,
        metrics_host: str = "127.0.0.1",
        link_metrics: bool = False,
        metrics_socket: socket.socket | None = None,
    ) -> None:
        self.options = convert(
            AgentOptions,
            {
                "node": node,
                "broker": broker if isinstance(broker, str) else None,
                "host": host,
                "ssh_port": ssh_port,
                "grace": grace,
                "connect_timeout": connect_timeout,
                "providers": providers,
                "metrics_port": metrics_port,
                "metrics_host": metrics_host,
                "link_metrics": link_metrics,
            },
        )
        self._metrics_socket = metrics_socket
        if self.metrics_enabled:
            require_prometheus()  # refused here, before anything connects
        self._metrics_server: MetricsServer | None = None
        self.node = self.options.node
        self._broker = broker
        self.grace = self.options.grace
        self.restart = restart or RestartPolicy()
        self._stopping = asyncio.Event()
        self._started = asyncio.Event()
        self._providers: dict[str, Provider] = {}
        self._status: dict[str, ProviderStatus] = {}
        self.context: NodeContext | None = None

    @classmethod
    def from_options(
        cls,
        options: AgentOptions,
        *,
        transport: Transport | None = None,
        restart: RestartPolicy | None = None,
    ) -> Agent:
        """An agent for ``options`` (on ``transport`` if given, else on ``options.broker``)."""
        broker = transport if transport is not None else options.broker
        if broker is None:
            raise ConfigError("broker: required: expected a bus URL (or pass a transport)")
        return cls(
            options.node,
            broker,
            options.providers,
            host=options.host,
            ssh_port=options.ssh_port,
            grace=options.grace,
            connect_timeout=options.connect_timeout,
            restart=restart,
            metrics_port=options.metrics_port,
            metrics_host=options.metrics_host,
            link_metrics=options.link_metrics,
        )

    @property
    def metrics_enabled(self) -> bool:
        """Whether :meth:`run` serves metrics (``metrics_port`` or ``metrics_socket`` given)."""
        return self.options.metrics_port is not None or self._metrics_socket is not None

    @property
    def metrics_url(self) -> str | None:
        """Where the metrics are served while the agent runs (``None``: not serving)."""
        return None if self._metrics_server is None else self._metrics_server.url

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
            create(
                self._broker,
                connection_name=f"jupiter-bus agent {self.node}",
                connect_timeout=min(_ATTEMPT_SECONDS, max(1.0, self.options.connect_timeout)),
            )
            if isinstance(self._broker, str)
            else self._broker
        )
        context = self.context = NodeContext(
            node=self.node,
            transport=transport,
            host=self.options.host or await self._default_host(),
            ssh_port=self.options.ssh_port,
        )
        metrics: AgentMetrics | None = None
        try:
            # Before connecting: a provider refusing its setup stops the agent untouched.
            self._build_providers(context)
            # Listening before connecting: a taken port is refused at once, and a scrape
            # while the broker is awaited answers (jupiter_provider_up 0).
            metrics = await self._start_metrics(context)
        except BaseException:
            if owns_transport:
                await transport.close()
            raise
        responder: SnapshotResponder | None = None
        try:
            if owns_transport and not await self._connect(transport):
                return  # asked to stop while waiting for the broker
            if metrics is not None:
                metrics.watch(transport)
            # Bound before started() fires: a request sent after it is answered.
            responder = SnapshotResponder(transport, context, name=f"agent {self.node}")
            await responder.start()
            async with asyncio.TaskGroup() as supervisors:
                tasks = [
                    supervisors.create_task(
                        self._supervise(name, provider), name=f"provider {name}"
                    )
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
            if metrics is not None:
                await self._stop_metrics(metrics)
            if owns_transport:
                await transport.close()
            log.info("agent %s stopped", self.node)

    async def _start_metrics(self, context: NodeContext) -> AgentMetrics | None:
        """Serve the agent's metrics when asked to (``metrics_port``, ``metrics_socket``)."""
        if not self.metrics_enabled:
            return None
        options = self.options
        metrics = AgentMetrics(
            context,
            link_metrics=options.link_metrics,
            status=self.status,
            providers=self._providers,
        )
        server = MetricsServer(
            metrics.registry,
            host=options.metrics_host,
            port=options.metrics_port or 0,
            sock=self._metrics_socket,
        )
        try:
            await server.start()
        except BaseException:
            metrics.close()
            raise
        self._metrics_server = server
        log.info(
            "agent %s: metrics at %s%s",
            self.node,
            server.url,
            " (with link costs)" if options.link_metrics else "",
        )
        return metrics

    async def _stop_metrics(self, metrics: AgentMetrics) -> None:
        metrics.close()
        server, self._metrics_server = self._metrics_server, None
        if server is not None:
            await server.close()

    async def _connect(self, transport: Transport) -> bool:
        """Connect, retrying an unreachable broker for up to ``connect_timeout`` seconds.

        A broker that refuses us (credentials, vhost, TLS) is not retried. Returns
        ``False`` when :meth:`stop` was called before the broker answered.
        """
        wait, where = self.options.connect_timeout, safe_url(transport.url)
        deadline = time.monotonic() + wait
        log.info("agent %s: connecting to %s (waiting up to %g s)", self.node, where, wait)
        attempt = 0
        while True:
            attempt += 1
            try:
                await transport.connect()
            except BrokerUnreachable as exc:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise BrokerUnreachable(
                        f"{exc}; gave up after {attempt} attempt{'s' * (attempt > 1)} "
                        f"in {wait:g} s (agent option connect_timeout, --wait)",
                        reason=exc.reason,
                    ) from None
                delay = min(_CONNECT_BACKOFF.delay(attempt), remaining)
                log.warning(
                    "agent %s: broker not reachable (attempt %d): %s; retrying in %.1f s",
                    self.node,
                    attempt,
                    exc.reason,
                    delay,
                )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), delay)
                if self._stopping.is_set():
                    return False
            else:
                log.info("agent %s: connected to %s", self.node, where)
                return True

    async def _default_host(self) -> str:
        """The address announced when ``host`` is not configured (:mod:`host_address`)."""
        broker = self._broker if isinstance(self._broker, str) else self._broker.url
        host = await asyncio.to_thread(default_host, broker)
        log.info(
            "agent %s: announcing host %s (the local address towards the broker; set --host "
            "to choose another)",
            self.node,
            host,
        )
        remote = sorted(
            peer.host
            for options in self.options.providers.values()
            for peer in getattr(options, "peers", ())
            if not is_loopback(peer.host)
        )
        if is_loopback(host) and remote:
            log.warning(
                "agent %s: announcing loopback %s, but peers are remote (%s): they cannot "
                "reach this node; set --host",
                self.node,
                host,
                ", ".join(remote[:3]),
            )
        return host

    def _build_providers(self, context: NodeContext) -> None:
        for name, options in self.options.providers.items():
            self._providers[name] = load_provider(name)(context, options)
            self._status[name] = ProviderStatus(name)
            log.info("agent %s: provider %s: %s", self.node, name, summarize(options))

    async def _finish(self, tasks: list[asyncio.Task[None]]) -> None:
        """Give the providers ``grace`` seconds, then cancel the rest (their group awaits)."""
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


@contextlib.asynccontextmanager
async def running(
    agents: Sequence[Agent], *, start_timeout: float = 30.0, stop_timeout: float = 30.0
) -> AsyncIterator[Sequence[Agent]]:
    """Run ``agents`` in this event loop for the block: started on entry, stopped on exit.

    On entry every agent has started each of its providers once; an agent that ends
    before that raises its error (``ProviderError`` if it ended quietly), after the
    others were stopped. On exit each is asked to stop and waited for up to
    ``stop_timeout`` (then cancelled); what an agent ended with is logged.

    Example::

        agents = [Agent(n, "memory://demo", {"resources": {}}) for n in ("n1", "n2")]
        async with running(agents):
            ...   # both publish their resources
    """
    tasks = [asyncio.create_task(agent.run(), name=f"agent {agent.node}") for agent in agents]
    try:
        async with asyncio.timeout(start_timeout):
            for agent, task in zip(agents, tasks, strict=True):
                started = asyncio.ensure_future(agent.started())
                await asyncio.wait({started, task}, return_when=asyncio.FIRST_COMPLETED)
                if not started.done():
                    started.cancel()
                    task.result()  # its error, if it failed
                    raise ProviderError(f"agent {agent.node} ended before it started")
        yield agents
    finally:
        for agent in agents:
            agent.stop()
        if tasks:
            _, late = await asyncio.wait(tasks, timeout=stop_timeout)
            for task in late:
                log.warning(
                    "%s did not stop within %.0f s; cancelled", task.get_name(), stop_timeout
                )
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for task in tasks:
                if not task.cancelled() and task.exception() is not None:
                    log.warning("%s ended with %r", task.get_name(), task.exception())
