"""Providers: the pluggable parts of a node agent, found by name through entry points.

A provider is an async component that a node agent runs: it publishes events
(resources, link costs) or serves work (transfers). Providers register under the
entry-point group ``jupiter_bus.providers``; a third-party distribution adds one by
declaring, in its own ``pyproject.toml``::

    [project.entry-points."jupiter_bus.providers"]
    gpu = "my_package.gpu:GpuProvider"

This is the real version of Jupiter's ``TRANSFER=0`` / ``PROFILER=0`` switches: an
agent runs the providers named in its configuration.

Example::

    class Heartbeat(Provider):
        name = "heartbeat"

        async def run(self, stopping: asyncio.Event) -> None:
            while not stopping.is_set():
                await self.context.publish_event(f"heartbeat.{self.context.node}", body)
                await wait_or_stop(stopping, 5.0)
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import dataclasses
import importlib.metadata
import logging
import os
import time
from collections.abc import Callable, Container, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from .batch import BATCH_CONTENT_TYPE
from .errors import ProviderError
from .messages import LinkCost, TransferResult
from .options import Options as OptionsBase
from .options import convert
from .snapshot import LastValues
from .topology import EVENTS_EXCHANGE, network_batch_key
from .transport import Transport

__all__ = [
    "ENTRY_POINT_GROUP",
    "Health",
    "NodeContext",
    "Provider",
    "SampleFeed",
    "TransferSample",
    "available_providers",
    "load_provider",
    "wait_or_stop",
]

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "jupiter_bus.providers"


@dataclass(frozen=True, slots=True)
class TransferSample:
    """One completed transfer, offered to the network profiler as a passive sample.

    ``src`` is the executing node; ``dst_host``/``dst_port`` are where the file went
    (the profiler maps them to a peer node); ``job_id`` is the request's
    idempotency key, so a profiler can tell its own probes from real traffic.
    """

    src: str
    dst_host: str
    dst_port: int
    size_bytes: int
    seconds: float
    engine: str
    ts: float
    job_id: str = ""


class SampleFeed:
    """In-process fan-out of :class:`TransferSample` from transfer workers to profilers.

    Listeners are plain callables; a listener that raises is logged and kept. The feed
    also knows which copies are on their way (:meth:`sending`), so that a profiler
    does not probe a link that real traffic is using (:meth:`busy`): such a probe
    would measure the contention, not the link.

    Example::

        with feed.sending("10.0.0.12", 22, job_id):
            await engine.copy(job)
        feed.busy("10.0.0.12", 22)   # False again
    """

    def __init__(self) -> None:
        self._listeners: list[Callable[[TransferSample], None]] = []
        self._sending: dict[str, tuple[str, int]] = {}

    @contextlib.contextmanager
    def sending(self, dst_host: str, dst_port: int, job_id: str) -> Iterator[None]:
        """Mark job ``job_id`` as copying to ``dst_host:dst_port`` while the block runs."""
        self._sending[job_id] = (dst_host, dst_port)
        try:
            yield
        finally:
            self._sending.pop(job_id, None)

    def busy(self, dst_host: str, dst_port: int, *, ignore: Container[str] = ()) -> bool:
        """Whether a copy to ``dst_host:dst_port`` is on its way, other than jobs in ``ignore``."""
        return any(
            where == (dst_host, dst_port) and job not in ignore
            for job, where in self._sending.items()
        )

    def listen(self, listener: Callable[[TransferSample], None]) -> Callable[[], None]:
        """Add ``listener``; return a function that removes it."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    def offer(self, sample: TransferSample) -> None:
        """Hand ``sample`` to every listener."""
        for listener in list(self._listeners):
            try:
                listener(sample)
            except Exception:
                log.exception("transfer-sample listener failed")


@dataclass(slots=True)
class NodeContext:
    """What a provider knows of the node it runs on, and how it publishes events.

    ``host`` and ``ssh_port`` say where other nodes reach this node (published with
    resource events so schedulers can map names to addresses).

    Providers publish their events with :meth:`publish_event` (one body per routing
    key) or, for many links at once, :meth:`publish_links` (one ``network.batch``).
    Both keep the latest value of each key: the agent answers ``snapshot.request``
    with those, so a scheduler that starts late has the whole picture at once instead
    of waiting for the next publication.

    Example::

        await context.publish_event(resource_key(context.node), encode(sample))
        context.last_events()   # {'resource.node1': b'{"v":1,"type":"resource",...}'}
    """

    node: str
    transport: Transport
    host: str | None = None
    ssh_port: int | None = None
    samples: SampleFeed = field(default_factory=SampleFeed)
    _values: LastValues = field(default_factory=LastValues, repr=False, init=False)
    _result_listeners: list[Callable[[TransferResult], None]] = field(
        default_factory=list, repr=False, init=False
    )
    _grants: dict[str, str] = field(default_factory=dict, repr=False, init=False)

    @contextlib.contextmanager
    def granting(self, job_id: str, source: str) -> Iterator[None]:
        """While inside, this node's transfer worker may send ``source`` for job ``job_id``
        even outside its ``allow_roots``.

        For a provider's own jobs only (the network profiler's probe files): the grant
        lives in this process, keyed by the job id the provider chose, so a request
        published by anyone else naming the same file is still held to ``allow_roots``.

        Example::

            with context.granting(job_id, "/var/lib/jupiter/probes/probe-4000.bin"):
                await context.transport.request(TRANSFERS_EXCHANGE, context.node, body, ...)
        """
        self._grants[job_id] = os.path.realpath(source)
        try:
            yield
        finally:
            self._grants.pop(job_id, None)

    def granted(self, job_id: str, source: str) -> bool:
        """Whether :meth:`granting` currently lets job ``job_id`` send ``source``."""
        held = self._grants.get(job_id)
        return held is not None and held == os.path.realpath(source)

    def owns_key(self, routing_key: str) -> bool:
        """Whether ``routing_key`` is one of this node's: its second word is the node.

        ``resource.<node>`` and ``network.<node>.<peer>`` are; ``network.<peer>.<node>``
        (another node's link) is not.
        """
        words = routing_key.split(".")
        return len(words) in (2, 3) and words[1] == self.node and all(words)

    async def publish_event(self, routing_key: str, body: bytes) -> None:
        """Publish ``body`` on ``jupiter.events`` and remember it as ``routing_key``'s latest.

        Only the node's own keys are taken (see :meth:`owns_key`), so the record holds
        at most one body per key the node owns: its resource key and its outgoing
        links. The body is remembered before it is published, so a snapshot request
        answered meanwhile already carries it; a failed publish raises
        :class:`~jupiter_bus.errors.TransportError` and the body stays remembered (it
        is still this node's latest value).
        """
        if not self.owns_key(routing_key):
            raise ProviderError(
                f"node {self.node} cannot publish {routing_key!r} as its own event: "
                f"its keys are '<kind>.{self.node}' or '<kind>.{self.node}.<peer>'"
            )
        body = bytes(body)
        self._values.remember(routing_key, body)
        await self.transport.publish(EVENTS_EXCHANGE, routing_key, body)

    async def publish_links(self, costs: Sequence[LinkCost]) -> None:
        """Publish several of this node's link costs as one ``network.batch``.

        The batch goes to ``network-batch.<node>`` (binary encoding); subscribers of
        ``network.*.*`` do not see it, the facade does. Each link is remembered as
        its key's latest, as with :meth:`publish_event`.

        Example::

            await context.publish_links([cost_to_n2, cost_to_n3])
        """
        foreign = [c for c in costs if c.src != self.node]
        if foreign:
            raise ProviderError(
                f"node {self.node} cannot publish links of {foreign[0].src!r} as its own"
            )
        if not costs:
            return
        body = self._values.remember_links(costs)
        await self.transport.publish(
            EVENTS_EXCHANGE,
            network_batch_key(self.node),
            body,
            content_type=BATCH_CONTENT_TYPE,
        )

    def listen_results(self, listener: Callable[[TransferResult], None]) -> Callable[[], None]:
        """Call ``listener`` with each result this node's transfer worker finishes; return a
        function that removes it.

        For in-process observers (the agent's metrics): a listener must be quick and
        must not block; one that raises is logged and kept, never seen by the worker.

        Example::

            forget = context.listen_results(lambda result: counts.update([result.ok]))
        """
        self._result_listeners.append(listener)
        return lambda: self._result_listeners.remove(listener)

    def offer_result(self, result: TransferResult) -> None:
        """Hand ``result`` to every :meth:`listen_results` listener (the worker calls this
        once per job it ran); never raises."""
        for listener in list(self._result_listeners):
            try:
                listener(result)
            except Exception:
                log.exception("transfer-result listener failed")

    def last_event(self, routing_key: str) -> bytes | None:
        """The latest body this node published as ``routing_key`` (``None``: none; links
        published only as a batch are in :meth:`last_links`)."""
        return self._values.get(routing_key)

    def last_links(self) -> dict[str, LinkCost]:
        """The latest cost of each of this node's links, by routing key (a copy)."""
        return self._values.links()

    def forget_event(self, routing_key: str) -> bool:
        """Stop offering ``routing_key`` to late joiners (e.g. a peer that left)."""
        return self._values.forget(routing_key)

    def last_events(self) -> dict[str, bytes]:
        """The latest body of each key this node published (a copy; links as JSON)."""
        return self._values.bodies()

    def snapshot_bodies(self, *, batch: bool) -> list[tuple[bytes, str]]:
        """``(body, content_type)`` of everything a snapshot answer carries.

        With ``batch``, the links travel as one binary ``network.batch`` (cached until a
        link changes) and every other key as its JSON body; without, one body per key.
        """
        return self._values.snapshot_bodies(batch=batch)


@dataclass(frozen=True, slots=True)
class Health:
    """A provider's own view of its health.

    Example::

        Health(ok=False, detail="broker unreachable since 12:01:03")
    """

    ok: bool
    detail: str = ""
    since: float = field(default_factory=time.time)


class Provider(abc.ABC):
    """Base class of every provider.

    Subclasses set ``name`` and implement :meth:`run`. ``options`` come from the
    agent's configuration (the provider's own table). A provider with typed options
    sets :attr:`Options` to its options dataclass (:mod:`jupiter_bus.options`): the
    table, or an instance, becomes :attr:`settings`, and a bad or unknown option is
    refused with a :class:`ProviderError` naming ``providers.<name>.<option>``. Without
    one, :meth:`take_options` reads the plain mapping and refuses unknown options.

    Example::

        class Heartbeat(Provider):
            name = "heartbeat"
            Options = HeartbeatOptions     # a frozen dataclass deriving from Options
            settings: HeartbeatOptions
    """

    name: ClassVar[str]
    Options: ClassVar[type[OptionsBase] | None] = None
    """The provider's options dataclass; ``None``: untyped options (see :meth:`take_options`)."""

    def __init__(
        self, context: NodeContext, options: Mapping[str, Any] | OptionsBase | None = None
    ) -> None:
        self.context = context
        self.settings: Any = self.parse_options(options)
        self.options = (
            {f.name: getattr(self.settings, f.name) for f in dataclasses.fields(self.settings)}
            if isinstance(self.settings, OptionsBase)
            else dict(self.settings)
        )
        self._health = Health(ok=True, detail="starting")

    @classmethod
    def parse_options(cls, options: Mapping[str, Any] | OptionsBase | None) -> Any:
        """``options`` as an instance of :attr:`Options` (a plain dict when it is ``None``).

        Raises :class:`ProviderError` naming the bad option's full path, so the agent can
        refuse a configuration before it connects or starts anything.
        """
        if cls.Options is None:
            if options is not None and not isinstance(options, Mapping):
                raise ProviderError(f"providers.{cls.name}: expected a table of options")
            return dict(options or {})
        return convert(
            cls.Options, options or {}, path=f"providers.{cls.name}", error=ProviderError
        )

    @abc.abstractmethod
    async def run(self, stopping: asyncio.Event) -> None:
        """Do the provider's work until ``stopping`` is set, then finish and return.

        Returning before ``stopping`` is set, or raising, counts as a crash: the agent
        restarts the provider with backoff.
        """

    def health(self) -> Health:
        """The provider's current health."""
        return self._health

    def set_health(self, ok: bool, detail: str = "") -> None:
        """Record a health change (kept until the next one)."""
        if ok != self._health.ok or detail != self._health.detail:
            self._health = Health(ok=ok, detail=detail)

    def take_options(self, **defaults: Any) -> dict[str, Any]:
        """Merge ``options`` over ``defaults``; refuse options the provider does not know."""
        unknown = sorted(set(self.options) - set(defaults))
        if unknown:
            raise ProviderError(
                f"provider {self.name!r} has no option {', '.join(map(repr, unknown))}; "
                f"known: {', '.join(sorted(defaults)) or 'none'}"
            )
        return {**defaults, **self.options}


async def wait_or_stop(stopping: asyncio.Event, seconds: float) -> bool:
    """Sleep ``seconds`` unless ``stopping`` is set first; return whether it was set."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stopping.wait(), seconds)
    return stopping.is_set()


def available_providers() -> dict[str, importlib.metadata.EntryPoint]:
    """Providers installed in this environment, by name."""
    return {ep.name: ep for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)}


def load_provider(name: str) -> type[Provider]:
    """Load the provider class registered as ``name``.

    Raises :class:`ProviderError` naming the installed providers when ``name`` is
    unknown or does not load to a :class:`Provider` subclass.
    """
    entry = available_providers().get(name)
    if entry is None:
        known = ", ".join(sorted(available_providers())) or "none"
        raise ProviderError(f"no provider named {name!r}; installed: {known}")
    try:
        loaded = entry.load()
    except Exception as exc:
        raise ProviderError(f"provider {name!r} ({entry.value}) failed to load: {exc}") from exc
    if not (isinstance(loaded, type) and issubclass(loaded, Provider)):
        raise ProviderError(f"provider {name!r} ({entry.value}) is not a Provider subclass")
    return loaded
