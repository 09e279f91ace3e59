"""Prometheus metrics of a node agent and of a facade, served at ``/metrics``.

Opt-in, and needs the ``metrics`` extra (``pip install 'jupiter-bus[metrics]'``, the
well-kept ``prometheus-client`` library): this module imports without it, and asking for
metrics without it raises :class:`~jupiter_bus.errors.ConfigError` saying what to install.

- :class:`AgentMetrics`: what one node agent does (its resources, the transfers its
  worker ran, its probes, dead letters and reconnects; its link costs only with
  ``link_metrics``), every series labelled ``node``;
- :class:`FacadeMetrics`: what one :class:`~jupiter_bus.JupiterInterface` sees (nodes and
  links known, their ages, the transfers it waited for), served by
  :func:`serve_facade_metrics`;
- :class:`MetricsServer`: the HTTP endpoint (``GET /metrics`` in the text exposition
  format; asyncio streams on the event loop, no thread).

Each has a :class:`prometheus_client.CollectorRegistry` of its own, never the library's
global one: several agents and facades may run in one process (tests, ``jupiter-bus
demo``). Values the agent or facade already keeps (the latest resource sample and link
costs, the profiler's probe counters, the state's ages) are read when Prometheus scrapes,
so they cost nothing between scrapes; events (transfer results, dead letters,
reconnects) are counted through listeners that exist only while metrics are on.
docs/metrics.md lists every metric.

Example::

    agent = Agent("node1", url, {"resources": {}, "transfer": {}}, metrics_port=9464)
    await agent.run()        # curl http://127.0.0.1:9464/metrics

    async with JupiterInterface(url) as jupiter:
        async with serve_facade_metrics(jupiter, port=9465) as server:
            ...              # server.url == "http://127.0.0.1:9465/metrics"
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Final, Protocol, runtime_checkable

from .errors import ConfigError, MessageError
from .messages import ResourceSample, TransferResult, decode
from .topology import resource_key
from .transport import Envelope, Transport

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry
    from prometheus_client.metrics_core import Metric

    from .agent import ProviderStatus
    from .facade import JupiterInterface
    from .plugins import NodeContext, Provider

__all__ = [
    "DURATION_BUCKETS",
    "INSTALL_HINT",
    "AgentMetrics",
    "FacadeMetrics",
    "MetricsServer",
    "ProbeCounters",
    "require_prometheus",
    "serve_facade_metrics",
]

log = logging.getLogger(__name__)

INSTALL_HINT: Final = "pip install 'jupiter-bus[metrics]'"
"""What to install for metrics (the ``prometheus-client`` library)."""

DURATION_BUCKETS: Final = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    120.0,
    300.0,
    600.0,
)
"""Buckets of ``jupiter_transfer_duration_seconds``: 1 ms (a small local copy) to 10 min."""

_REQUEST_TIMEOUT: Final = 10.0
"""Seconds a client may take to send its request head."""
_CLOSE_TIMEOUT: Final = 5.0


def require_prometheus() -> None:
    """Check that ``prometheus-client`` can be imported; else raise :class:`ConfigError`.

    Example::

        require_prometheus()   # ConfigError: ... pip install 'jupiter-bus[metrics]'
    """
    try:
        import prometheus_client  # noqa: F401
    except ImportError:
        raise ConfigError(
            f"metrics need the prometheus-client library, which is not installed: {INSTALL_HINT}"
        ) from None


class _Collector:
    """A collector whose :meth:`collect` is a function (values read at scrape time)."""

    def __init__(self, collect: Callable[[], Iterable[Metric]]) -> None:
        self._collect = collect

    def collect(self) -> Iterable[Metric]:
        return self._collect()


@runtime_checkable
class ProbeCounters(Protocol):
    """A provider that counts its probes (the network profiler): read at scrape time.

    Each is a running total since the provider was made, warm-up probes included.

    Example::

        isinstance(agent.provider("network"), ProbeCounters)   # True
    """

    probes_ok: int
    probe_failures: int
    probe_bytes_sent: int


class AgentMetrics:
    """The metrics of one node agent, in a registry of its own (``registry``).

    ``context`` is the agent's :class:`~jupiter_bus.plugins.NodeContext`: its latest
    resource sample and link costs are read at each scrape, and the results its transfer
    worker offers are counted. ``status`` (the agent's :meth:`~jupiter_bus.agent.Agent.status`)
    and ``providers`` (its running providers, for :class:`ProbeCounters`) are read at
    scrape time too. With ``link_metrics``, the cost of each of the node's links is
    exported as well: one series per peer and parameter (off by default: 1,000 nodes make
    about 10^6 series across a deployment).

    :meth:`watch` adds the transport's dead letters and reconnects; :meth:`close` removes
    every listener. Raises :class:`ConfigError` when ``prometheus-client`` is missing.

    Example::

        metrics = AgentMetrics(context, status=agent.status, providers={"network": profiler})
        metrics.watch(transport)
        body = prometheus_client.generate_latest(metrics.registry)
        metrics.close()
    """

    def __init__(
        self,
        context: NodeContext,
        *,
        link_metrics: bool = False,
        status: Callable[[], Mapping[str, ProviderStatus]] | None = None,
        providers: Mapping[str, Provider] | None = None,
    ) -> None:
        require_prometheus()
        from prometheus_client import CollectorRegistry, Counter, Histogram

        self.node = context.node
        self.link_metrics = link_metrics
        self._context = context
        self._status = status
        self._providers = providers if providers is not None else {}
        self.registry: CollectorRegistry = CollectorRegistry(auto_describe=False)
        node = self.node
        registry = self.registry
        self._transfers = Counter(
            "jupiter_transfers",
            "Transfers this node's worker ran, by result (ok or the error kind)",
            ["node", "result"],
            registry=registry,
        )
        self._transfers.labels(node, "ok")
        self._transfer_bytes = Counter(
            "jupiter_transfer_bytes",
            "Bytes this node's worker copied in transfers that succeeded",
            ["node"],
            registry=registry,
        ).labels(node)
        self._transfer_seconds = Histogram(
            "jupiter_transfer_duration_seconds",
            "Time from a job's start on this node's worker to its result, retries included",
            ["node"],
            buckets=DURATION_BUCKETS,
            registry=registry,
        ).labels(node)
        self._dead_letters = Counter(
            "jupiter_dead_letters",
            "Messages this agent dead-lettered (refused bodies, jobs redelivered too often)",
            ["node"],
            registry=registry,
        ).labels(node)
        self._reconnects = Counter(
            "jupiter_bus_reconnects",
            "Times this agent's lost broker connection came back",
            ["node"],
            registry=registry,
        ).labels(node)
        registry.register(_Collector(self._collect))
        self._forget: list[Callable[[], None]] = [context.listen_results(self._transfer_done)]

    def watch(self, transport: Transport) -> None:
        """Count ``transport``'s dead letters and reconnects (call it once connected)."""
        self._forget.append(transport.on_dead_letter(self._dead_lettered))
        self._forget.append(transport.on_reconnect(self._reconnects.inc))

    def close(self) -> None:
        """Remove every listener this object added. Idempotent."""
        while self._forget:
            self._forget.pop()()

    # -- events ----------------------------------------------------------------------------

    def _transfer_done(self, result: TransferResult) -> None:
        kind = "ok" if result.ok or result.error is None else result.error.kind
        self._transfers.labels(self.node, kind).inc()
        if kind == "ok":
            self._transfer_bytes.inc(result.bytes)
        self._transfer_seconds.observe(result.seconds)

    def _dead_lettered(self, envelope: Envelope, reason: str) -> None:
        self._dead_letters.inc()

    # -- read at scrape time ---------------------------------------------------------------

    def _collect(self) -> Iterator[Metric]:
        yield from self._resources()
        if self.link_metrics:
            yield from self._links()
        yield from self._probes()
        yield from self._provider_health()

    def _resources(self) -> Iterator[Metric]:
        from prometheus_client.core import GaugeMetricFamily

        body = self._context.last_event(resource_key(self.node))
        if body is None:
            return
        try:
            sample = decode(body, ResourceSample)
        except MessageError:
            return
        node = [self.node]
        for name, doc, value in (
            ("cpu_ratio", "Whole-machine CPU use, 0-1, over the last interval", sample.cpu_percent),
            ("memory_used_ratio", "Memory in use, 0-1", sample.memory_percent),
        ):
            family = GaugeMetricFamily(f"jupiter_node_{name}", doc, labels=["node"])
            family.add_metric(node, value / 100.0)
            yield family
        for name, doc, count in (
            ("memory_total_bytes", "Memory of the machine", sample.memory_total_bytes),
            ("memory_available_bytes", "Memory available", sample.memory_available_bytes),
            ("cpu_count", "Logical CPUs", sample.cpu_count),
        ):
            family = GaugeMetricFamily(f"jupiter_node_{name}", doc, labels=["node"])
            family.add_metric(node, float(count))
            yield family

    def _links(self) -> Iterator[Metric]:
        from prometheus_client.core import GaugeMetricFamily

        labels = ["node", "src", "dst"]
        families = {
            "a": GaugeMetricFamily(
                "jupiter_link_cost_a",
                "Quadratic term of a link's cost, ms per Kbit^2",
                labels=labels,
            ),
            "b": GaugeMetricFamily(
                "jupiter_link_cost_b", "Linear term of a link's cost, ms per Kbit", labels=labels
            ),
            "c": GaugeMetricFamily(
                "jupiter_link_cost_c", "Constant term of a link's cost, ms", labels=labels
            ),
            "r2": GaugeMetricFamily("jupiter_link_r2", "R^2 of a link's cost fit", labels=labels),
        }
        for cost in self._context.last_links().values():
            values = [self.node, cost.src, cost.dst]
            families["a"].add_metric(values, cost.a)
            families["b"].add_metric(values, cost.b)
            families["c"].add_metric(values, cost.c)
            families["r2"].add_metric(values, cost.r2)
        yield from families.values()

    def _probes(self) -> Iterator[Metric]:
        from prometheus_client.core import CounterMetricFamily

        counters = [p for p in self._providers.values() if isinstance(p, ProbeCounters)]
        if not counters:
            return
        probes = CounterMetricFamily(
            "jupiter_probes",
            "Probe transfers the network profiler sent, warm-ups included, by result",
            labels=["node", "result"],
        )
        probes.add_metric([self.node, "ok"], sum(p.probes_ok for p in counters))
        probes.add_metric([self.node, "failed"], sum(p.probe_failures for p in counters))
        sent = CounterMetricFamily(
            "jupiter_probe_bytes",
            "Payload bytes of the probes the network profiler sent, warm-ups included",
            labels=["node"],
        )
        sent.add_metric([self.node], sum(p.probe_bytes_sent for p in counters))
        yield probes
        yield sent

    def _provider_health(self) -> Iterator[Metric]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        if self._status is None:
            return
        up = GaugeMetricFamily(
            "jupiter_provider_up",
            "1 while a provider runs and reports itself healthy, else 0",
            labels=["node", "provider"],
        )
        restarts = CounterMetricFamily(
            "jupiter_provider_restarts",
            "Times a crashed provider was restarted",
            labels=["node", "provider"],
        )
        for name, status in self._status().items():
            healthy = status.running and (status.health is None or status.health.ok)
            up.add_metric([self.node, name], 1.0 if healthy else 0.0)
            restarts.add_metric([self.node, name], status.restarts)
        yield up
        yield restarts


class FacadeMetrics:
    """The metrics of one :class:`~jupiter_bus.JupiterInterface`, in a registry of its own.

    Read at scrape time from the interface's live state: nodes and links known, the age
    of the newest and oldest link, the age of each node's resource sample (judged by when
    this process received them, as the interface does). Counted as they happen: results of
    the transfers the interface waited for, and reconnects of its transport. ``jupiter``
    must be open (entered); :meth:`close` removes the listeners.

    Example::

        metrics = FacadeMetrics(jupiter)
        body = prometheus_client.generate_latest(metrics.registry)
        metrics.close()
    """

    def __init__(self, jupiter: JupiterInterface) -> None:
        require_prometheus()
        from prometheus_client import CollectorRegistry, Counter

        self._jupiter = jupiter
        self.registry: CollectorRegistry = CollectorRegistry(auto_describe=False)
        self._transfers = Counter(
            "jupiter_facade_transfers",
            "Results of the transfers this facade waited for, by result (ok or the error kind)",
            ["result"],
            registry=self.registry,
        )
        self._transfers.labels("ok")
        self._reconnects = Counter(
            "jupiter_bus_reconnects",
            "Times this facade's lost broker connection came back",
            registry=self.registry,
        )
        self.registry.register(_Collector(self._collect))
        self._forget = [
            jupiter.on_transfer_result(self._transfer_done),
            jupiter.transport.on_reconnect(self._reconnects.inc),
        ]

    def close(self) -> None:
        """Remove the listeners this object added. Idempotent."""
        while self._forget:
            self._forget.pop()()

    def _transfer_done(self, result: TransferResult) -> None:
        kind = "ok" if result.ok or result.error is None else result.error.kind
        self._transfers.labels(kind).inc()

    def _collect(self) -> Iterator[Metric]:
        from prometheus_client.core import GaugeMetricFamily

        now = time.monotonic()
        network = self._jupiter.network.snapshot(now=now)
        resources = self._jupiter.resources.snapshot(now=now)
        nodes = GaugeMetricFamily(
            "jupiter_facade_nodes", "Nodes known (with link costs or a resource sample)"
        )
        nodes.add_metric([], float(len(set(network.nodes) | set(resources.nodes))))
        links = GaugeMetricFamily("jupiter_facade_links", "Links with a cost")
        links.add_metric([], float(network.link_count))
        yield nodes
        yield links
        received = network.received_at[network.valid]
        if received.size:
            for end, moment in (("newest", float(received.max())), ("oldest", received.min())):
                age = GaugeMetricFamily(
                    f"jupiter_facade_{end}_link_age_seconds",
                    f"Seconds since the {end} link cost was received",
                )
                age.add_metric([], now - float(moment))
                yield age
        ages = GaugeMetricFamily(
            "jupiter_facade_resource_age_seconds",
            "Seconds since each node's resource sample was received",
            labels=["node"],
        )
        for node in resources.nodes:
            ages.add_metric([node], resources.age_seconds(node, now))
        yield ages


class MetricsServer:
    """Serves a registry at ``GET /metrics`` (HTTP/1.1, text exposition format).

    Runs on the event loop with asyncio streams (no thread, not prometheus-client's
    ``start_http_server``); one request per connection. Other paths answer 404, other
    methods 405. Listens on ``host:port`` (port 0: any free port; read :attr:`port`), or
    on ``sock``, an already bound socket (which it then owns). The endpoint has no
    authentication: keep it on loopback or a private network.

    Example::

        async with MetricsServer(metrics.registry, host="127.0.0.1", port=9464) as server:
            print(server.url)     # http://127.0.0.1:9464/metrics
    """

    def __init__(
        self,
        registry: CollectorRegistry,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        sock: socket.socket | None = None,
    ) -> None:
        require_prometheus()
        self.registry = registry
        self.host = host
        self._port = port
        self._sock = sock
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()

    @property
    def port(self) -> int:
        """The port listened on (the one chosen when asked for port 0)."""
        return self._port

    @property
    def url(self) -> str:
        """``http://host:port/metrics``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self._port}/metrics"

    async def start(self) -> None:
        """Listen; raise :class:`ConfigError` when the address cannot be bound."""
        try:
            if self._sock is not None:
                self._server = await asyncio.start_server(self._serve, sock=self._sock)
            else:
                self._server = await asyncio.start_server(self._serve, self.host, self._port)
        except OSError as exc:
            raise ConfigError(
                f"cannot serve metrics on {self.host}:{self._port}: {exc.strerror or exc}"
            ) from None
        bound = self._server.sockets[0].getsockname()
        self.host, self._port = str(bound[0]), int(bound[1])

    async def close(self) -> None:
        """Stop listening, end the requests being answered. Idempotent."""
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        for task in list(self._handlers):
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(_CLOSE_TIMEOUT):
                await server.wait_closed()

    async def __aenter__(self) -> MetricsServer:
        await self.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            async with asyncio.timeout(_REQUEST_TIMEOUT):
                head = await reader.readuntil(b"\r\n\r\n")
            writer.write(self._answer(head))
            await writer.drain()
        except (
            TimeoutError,
            ConnectionError,
            asyncio.IncompleteReadError,  # went away before the end of its request head
            asyncio.LimitOverrunError,  # a request head over 64 KiB
        ):
            pass  # nothing to answer
        finally:
            self._handlers.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    def _answer(self, head: bytes) -> bytes:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        words = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ")
        method, target = (words[0], words[1]) if len(words) == 3 else ("", "")
        path = target.split("?", 1)[0]
        if path != "/metrics":
            return _response(404, "Not Found", b"not found: try /metrics\n")
        if method not in ("GET", "HEAD"):
            return _response(405, "Method Not Allowed", b"GET /metrics only\n", "Allow: GET, HEAD")
        try:
            body = generate_latest(self.registry)
        except Exception:
            log.exception("metrics: collecting failed")
            return _response(500, "Internal Server Error", b"collecting failed\n")
        return _response(200, "OK", body, content_type=CONTENT_TYPE_LATEST, head=method == "HEAD")


def _response(
    code: int,
    reason: str,
    body: bytes,
    extra: str = "",
    *,
    content_type: str = "text/plain; charset=utf-8",
    head: bool = False,
) -> bytes:
    lines = [
        f"HTTP/1.1 {code} {reason}",
        f"Content-Type: {content_type}",
        f"Content-Length: {len(body)}",
        "Connection: close",
        *([extra] if extra else []),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (b"" if head else body)


@contextlib.asynccontextmanager
async def serve_facade_metrics(
    jupiter: JupiterInterface,
    *,
    port: int,
    host: str = "127.0.0.1",
    sock: socket.socket | None = None,
) -> AsyncIterator[MetricsServer]:
    """Serve the metrics of an open ``jupiter`` (:class:`FacadeMetrics`) while inside.

    ``port`` 0 takes any free port (read it from the server); ``sock``, a bound socket,
    is used instead of ``host``/``port``. Raises :class:`ConfigError` when
    ``prometheus-client`` is missing or the address cannot be bound.

    Example::

        async with JupiterInterface(url) as jupiter:
            async with serve_facade_metrics(jupiter, port=9465) as server:
                log.info("metrics at %s", server.url)
                await run_scheduler(jupiter)
    """
    metrics = FacadeMetrics(jupiter)
    try:
        async with MetricsServer(metrics.registry, host=host, port=port, sock=sock) as server:
            log.info("facade %s: metrics at %s", jupiter.client_id, server.url)
            yield server
    finally:
        metrics.close()
