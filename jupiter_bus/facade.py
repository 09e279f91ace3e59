"""The async facade: :class:`JupiterInterface`, what a scheduler embeds.

One object, used as an async context manager, that

- follows ``resource.*``, ``network.*.*`` and ``transfer.done.*`` on ``jupiter.events``
  into live state (:mod:`jupiter_bus.state`), so reads come from memory;
- on entering, asks every node agent for its latest events (``snapshot.request``), so a
  scheduler that starts after the agents has the whole picture at once instead of
  waiting for their next publication;
- answers ``await get_network_data()`` / ``await get_resource_data()`` with a
  consistent snapshot, waiting (with a timeout) for the first state or for the nodes
  and links asked for;
- runs transfers on a node's worker: ``await data_transfer(...)`` waits for the result,
  ``submit_transfer(...)`` / ``wait_transfer(job_id)`` split the two through a durable
  completion queue that another process can also collect from;
- offers live feeds (``watch_network``, ``watch_resources``, ``watch_transfers``).

It starts no thread. It owns two tasks at most (the event pump and the completion-queue
collector), both cancelled and awaited on exit; every other wait happens in the caller's
task, has a timeout, and leaves nothing behind when cancelled.

Example::

    async with JupiterInterface("amqp://guest:guest@127.0.0.1/", node="node1") as bus:
        network = await bus.get_network_data(nodes=["node1", "node2"], timeout=30)
        print(network.cost_ms("node1", "node2", 8000.0))
        result = await bus.data_transfer("10.0.0.12", "jupiter", None,
                                         "/data/out/a.bin", "/data/in/a.bin")
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
import weakref
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable
from types import TracebackType
from typing import Any, Final, Generic, Self, TypeVar

from . import sealing
from .batch import LinkBatch
from .errors import (
    AuthError,
    InterfaceClosed,
    InvalidRequest,
    JupiterBusError,
    MessageError,
    NoReply,
    NotFound,
    PermissionDenied,
    RemoteError,
    RequestTimeout,
    StaleState,
    StateUnavailable,
    TransferFailed,
    TransferTimeout,
    TransportError,
    Unreachable,
    Unroutable,
    transfer_error,
)
from .messages import (
    LinkCost,
    ResourceSample,
    TransferEngine,
    TransferRequest,
    TransferResult,
    decode,
    encode,
)
from .receive import decode_delivery, decoded_events_and_batches
from .snapshot import ask, superseded
from .state import (
    Coverage,
    NetworkData,
    NetworkState,
    ResourceData,
    ResourceState,
)
from .topology import (
    DEFAULT_EXCHANGE,
    TRANSFERS_EXCHANGE,
    check_node,
    work_queue,
)
from .transport import Consumer, Delivery, Subscription, Transport, connect
from .transport.base import safe_url

__all__ = [
    "AuthError",
    "InterfaceClosed",
    "InvalidRequest",
    "JupiterInterface",
    "NoReply",
    "NotFound",
    "PermissionDenied",
    "RemoteError",
    "TransferFailed",
    "TransferTimeout",
    "Unreachable",
    "Watch",
]

log = logging.getLogger(__name__)

EVENT_PATTERNS: Final = ("resource.*", "network.*.*", "network-batch.*", "transfer.done.*")
"""What the facade follows on ``jupiter.events``."""
COMPLETION_PREFIX: Final = "jupiter.completions."
_YIELD_EVERY: Final = 256  # events handled before the pump lets other tasks run
_CLOSE_TIMEOUT: Final = 10.0


# -- live feeds -----------------------------------------------------------------------------

T = TypeVar("T")
D = TypeVar("D", NetworkData, ResourceData)


class Watch(Generic[T]):
    """A live feed of updates: an async iterator, best used as an async context manager.

    While the consumer is behind, only the latest update per key is kept (per link for
    network costs, per node for resources, per job for transfer results; transfer
    feeds also hold at most ``max_pending`` jobs, dropping the oldest), so a slow
    consumer costs bounded memory and always reads current values. ``coalesced`` and
    ``dropped`` count what it skipped. The feed ends when the interface closes.

    A watch costs no task: the interface's event pump hands it updates. Leaving the
    ``async with`` block (or :meth:`close`, or dropping the object) unregisters it.

    Example::

        async with bus.watch_network(src="node1") as updates:
            async for cost in updates:
                print(cost.dst, cost.cost_ms(8000.0))
    """

    def __init__(
        self,
        registry: weakref.WeakSet[Watch[T]],
        key: Callable[[T], Hashable],
        accept: Callable[[T], bool] | None = None,
        max_pending: int | None = None,
    ) -> None:
        self._registry = registry
        self._key = key
        self._accept = accept
        self._max_pending = max_pending
        self._pending: OrderedDict[Hashable, T] = OrderedDict()
        self._waiter: asyncio.Future[None] | None = None
        self._closed = False
        self._error: BaseException | None = None
        self.coalesced = 0
        """Updates replaced by a newer one for the same key before being read."""
        self.dropped = 0
        """Keys dropped because ``max_pending`` were already waiting."""
        registry.add(self)

    @property
    def pending(self) -> int:
        """Updates waiting to be read."""
        return len(self._pending)

    def offer(self, item: T) -> None:
        """Hand the watch an update (the interface does; tests and adapters may too)."""
        if self._closed or (self._accept is not None and not self._accept(item)):
            return
        key = self._key(item)
        pending = self._pending
        if key in pending:
            pending[key] = item  # keeps its place in line: a busy key cannot starve others
            self.coalesced += 1
        else:
            if self._max_pending is not None and len(pending) >= self._max_pending:
                pending.popitem(last=False)
                self.dropped += 1
            pending[key] = item
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def end(self, error: BaseException | None = None) -> None:
        """End the feed: once drained it stops (or raises ``error``)."""
        self._error = error
        self._closed = True
        self._registry.discard(self)
        self._wake()

    def close(self) -> None:
        """Stop at once: unregister and forget pending updates. Idempotent."""
        self.end()
        self._pending.clear()

    async def aclose(self) -> None:
        """Same as :meth:`close` (for ``contextlib.aclosing``)."""
        self.close()

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> T:
        while True:
            if self._pending:
                return self._pending.popitem(last=False)[1]
            if self._closed:
                if self._error is not None:
                    raise self._error
                raise StopAsyncIteration
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiter = waiter
            try:
                await waiter
            finally:
                self._waiter = None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


# -- the facade -----------------------------------------------------------------------------


def _listing(examples: Iterable[str], total: int) -> str:
    shown = list(examples)
    more = total - len(shown)
    return ", ".join(shown) + (f" and {more} more" if more > 0 else "")


class JupiterInterface:
    """Jupiter's view of the bus for a scheduler: live state, transfers and live feeds.

    ``url_or_transport`` is a bus URL (``memory://name``, ``amqp://...``; the interface
    connects and closes it) or a connected :class:`~jupiter_bus.transport.Transport`
    (left open on exit). ``node`` is the default executing node of transfers.
    ``completion_queue`` names the durable queue that results of
    :meth:`submit_transfer` go to; give the same name in another process to collect
    them there. Without one, ``jupiter.completions.<client_id>`` is used, made on the
    first submit and deleted on exit. ``max_results`` bounds the results held (not yet
    collected, and recently collected). With ``seal_key``, passwords are sealed
    (:mod:`jupiter_bus.sealing`) before they are published. With ``snapshot`` (the
    default), entering asks the node agents for their latest events
    (:meth:`request_snapshot`).

    Example::

        async with JupiterInterface("memory://demo", node="node1") as bus:
            resources = await bus.get_resource_data(nodes=["node1"], timeout=5)
            job = await bus.submit_transfer("10.0.0.2", "jupiter", None, "/a", "/b")
            result = await bus.wait_transfer(job, timeout=60)
    """

    def __init__(
        self,
        url_or_transport: str | Transport,
        *,
        node: str | None = None,
        completion_queue: str | None = None,
        client_id: str | None = None,
        max_results: int = 10_000,
        seal_key: bytes | None = None,
        connection_name: str | None = None,
        snapshot: bool = True,
    ) -> None:
        if isinstance(url_or_transport, str):
            self._url: str | None = url_or_transport
            self._transport: Transport | None = None
        else:
            self._url = None
            self._transport = url_or_transport
        self._node = None if node is None else check_node(node)
        self._client_id = client_id or uuid.uuid4().hex[:12]
        self._explicit_queue = completion_queue is not None
        self._queue_name = completion_queue or COMPLETION_PREFIX + self._client_id
        if max_results < 1:
            raise ValueError("max_results must be at least 1")
        self._max_results = max_results
        self._seal_key = seal_key
        self._snapshot_on_enter = snapshot
        self._connection_name = connection_name or f"jupiter-bus facade {self._client_id}"
        self._owns_transport = False
        self._network = NetworkState()
        self._resources = ResourceState()
        self._subscription: Subscription | None = None
        self._pump_task: asyncio.Task[None] | None = None
        self._consumer: Consumer | None = None
        self._collector: asyncio.Task[None] | None = None
        self._queue_declared = False
        self._completions_lock = asyncio.Lock()
        self._held: OrderedDict[str, tuple[TransferResult, Delivery]] = OrderedDict()
        self._collected: OrderedDict[str, TransferResult] = OrderedDict()
        self._done: OrderedDict[str, TransferResult] = OrderedDict()
        self._waiters: dict[str, list[asyncio.Future[TransferResult]]] = {}
        self._network_watches: weakref.WeakSet[Watch[LinkCost]] = weakref.WeakSet()
        self._resource_watches: weakref.WeakSet[Watch[ResourceSample]] = weakref.WeakSet()
        self._transfer_watches: weakref.WeakSet[Watch[TransferResult]] = weakref.WeakSet()
        self._forget_reconnect: Callable[[], None] = lambda: None
        self._resnapshot: asyncio.Task[None] | None = None
        self._state = "new"  # new -> open -> closed
        self._failure: InterfaceClosed | None = None

    def __repr__(self) -> str:
        where = safe_url(self._url or str(getattr(self._transport, "url", "?")))
        return f"<JupiterInterface {where} node={self._node!r} {self._state}>"

    # -- properties ------------------------------------------------------------------------

    @property
    def transport(self) -> Transport:
        """The transport in use (available once entered, or when one was given)."""
        if self._transport is None:
            raise InterfaceClosed("not connected: use 'async with JupiterInterface(...)'")
        return self._transport

    @property
    def node(self) -> str | None:
        """The default executing node of transfers."""
        return self._node

    @property
    def client_id(self) -> str:
        """This interface's id (in its connection name and default completion queue)."""
        return self._client_id

    @property
    def completion_queue(self) -> str:
        """Name of the durable queue that results of :meth:`submit_transfer` go to."""
        return self._queue_name

    @property
    def network(self) -> NetworkState:
        """The live network state this interface feeds."""
        return self._network

    @property
    def resources(self) -> ResourceState:
        """The live resource state this interface feeds."""
        return self._resources

    @property
    def held_results(self) -> int:
        """Results taken from the completion queue and not yet collected."""
        return len(self._held)

    # -- lifecycle -------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        if self._state != "new":
            raise InterfaceClosed("a JupiterInterface can be entered once; make a new one")
        self._state = "open"
        try:
            if self._transport is None:
                assert self._url is not None
                self._transport = await connect(self._url, connection_name=self._connection_name)
                self._owns_transport = True
            subscription = self._transport.subscribe(list(EVENT_PATTERNS))
            self._subscription = subscription
            await subscription.start()
            self._pump_task = asyncio.create_task(
                self._pump(subscription), name=f"jupiter-bus events {self._client_id}"
            )
            if self._snapshot_on_enter:
                await self.request_snapshot()
                # What was published while a lost connection was down never reaches
                # us: ask again each time it comes back.
                self._forget_reconnect = self._transport.on_reconnect(self._snapshot_soon)
            if self._explicit_queue:
                await self._ensure_completions()
        except BaseException:
            await self._shutdown()
            raise
        log.debug("facade %s open (node %s)", self._client_id, self._node)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Stop the feeds, cancel and await the owned tasks, release what was opened.

        Results held but not collected go back to the completion queue (a named queue
        keeps them for a later collector; the default one is deleted).
        """
        if self._state == "closed":
            return
        await self._shutdown()

    def _snapshot_soon(self) -> None:
        """After a reconnect: ask for a snapshot (one request at a time, owned by us)."""
        if self._state != "open" or (self._resnapshot is not None and not self._resnapshot.done()):
            return

        async def ask() -> None:
            try:
                await self.request_snapshot()
            except Exception as exc:  # the next reconnect asks again
                log.warning("facade %s: snapshot after reconnect failed: %s", self._client_id, exc)

        self._resnapshot = asyncio.create_task(
            ask(), name=f"jupiter-bus resnapshot {self._client_id}"
        )

    async def _shutdown(self) -> None:
        self._state = "closed"
        self._forget_reconnect()
        tasks = [t for t in (self._pump_task, self._collector, self._resnapshot) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        closed = self._failure or InterfaceClosed("the JupiterInterface was closed")
        self._end_everything(closed, watch_error=None)
        transport = self._transport
        try:
            async with asyncio.timeout(_CLOSE_TIMEOUT):
                if self._consumer is not None:
                    await self._consumer.close()
                if self._subscription is not None:
                    await self._subscription.close()
                if transport is not None and self._queue_declared and not self._explicit_queue:
                    with contextlib.suppress(TransportError):
                        await transport.delete_queue(self._queue_name)
        except TimeoutError:
            log.warning(
                "facade %s: closing its feeds took over %g s", self._client_id, _CLOSE_TIMEOUT
            )
        finally:
            self._held.clear()
            if transport is not None and self._owns_transport:
                await transport.close()
        log.debug("facade %s closed", self._client_id)

    def _end_everything(self, error: InterfaceClosed, watch_error: BaseException | None) -> None:
        self._network.fail_waiters(error)
        self._resources.fail_waiters(error)
        waiters, self._waiters = self._waiters, {}
        for futures in waiters.values():
            for future in futures:
                if not future.done():
                    future.set_exception(error)
        registries: tuple[weakref.WeakSet[Any], ...] = (
            self._network_watches,
            self._resource_watches,
            self._transfer_watches,
        )
        for registry in registries:
            for watch in list(registry):
                watch.end(watch_error)

    def _check_open(self) -> Transport:
        if self._failure is not None:
            raise self._failure
        if self._state != "open" or self._transport is None:
            raise InterfaceClosed(
                "the JupiterInterface is not open: use 'async with JupiterInterface(...) as bus'"
            )
        return self._transport

    # -- the event pump --------------------------------------------------------------------

    async def request_snapshot(self) -> str:
        """Ask every node agent for its latest events; return the request's id.

        Entering does this once (unless ``snapshot=False``): a scheduler that starts
        after the agents then has the current resources and link costs within moments
        instead of after the next publication (resources every few seconds, link costs
        only when they change). The answers arrive in this interface's event feed and
        are applied like live events, except that an answer older (by the producer's
        ``ts``) than what a live update already brought for the same node or link is
        skipped. Staleness of an answer counts from when it was received here.
        Call it again to refresh everything at once (e.g. after a long disconnection).

        Example::

            await bus.request_snapshot()
            data = await bus.get_network_data(nodes=["n1", "n2"], timeout=1.0)
        """
        transport = self._check_open()
        subscription = self._subscription
        if subscription is None:
            raise InterfaceClosed("the event feed is not open")
        request_id = await ask(transport, subscription.name, batch=True)
        log.debug("facade %s: snapshot %s requested", self._client_id, request_id)
        return request_id

    def _holds_newer(self, message: object) -> bool:
        """Whether the state holds a value for ``message``'s node or link at least as new
        (producer's ``ts``): a snapshot answer must not undo a live update."""
        if isinstance(message, LinkCost):
            held = self._network.held_ts(message.src, message.dst)
        elif isinstance(message, ResourceSample):
            held = self._resources.held_ts(message.node)
        else:
            return False
        return superseded(held, message.ts)

    async def _pump(self, subscription: Subscription) -> None:
        """Feed events into the states, the watches and the transfer waiters.

        Snapshot answers come through the same feed (sent straight to its queue, by
        the default exchange) and are applied the same way unless they are older.
        """
        assert self._transport is not None
        network, resources = self._network, self._resources
        handled = 0
        try:
            async for envelope, message in decoded_events_and_batches(
                self._transport, subscription
            ):
                handled += 1
                if handled % _YIELD_EVERY == 0:
                    await asyncio.sleep(0)  # a burst must not starve the callers' tasks
                answer = envelope.exchange == DEFAULT_EXCHANGE
                if isinstance(message, LinkBatch):
                    watched = (
                        [c for c in message.costs() if not (answer and self._holds_newer(c))]
                        if self._network_watches
                        else ()
                    )
                    # An answer's link older than a live update already applied is skipped.
                    network.apply_batch(message, time.monotonic(), newer_only=answer)
                    for cost in watched:
                        for network_watch in self._network_watches:
                            network_watch.offer(cost)
                    await asyncio.sleep(0)  # a batch is worth many events
                    continue
                if answer and self._holds_newer(message):
                    continue  # a snapshot answer older than a live update already applied
                if isinstance(message, LinkCost):
                    network.apply(message, time.monotonic())
                    if self._network_watches:
                        for network_watch in self._network_watches:
                            network_watch.offer(message)
                elif isinstance(message, ResourceSample):
                    resources.apply(message, time.monotonic())
                    if self._resource_watches:
                        for resource_watch in self._resource_watches:
                            resource_watch.offer(message)
                elif isinstance(message, TransferResult):
                    self._on_done(message)
            raise TransportError("the event subscription ended")
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if self._state != "open":
                return
            log.exception("facade %s: event feed failed", self._client_id)
            self._failure = InterfaceClosed(f"the event feed failed: {exc}")
            self._end_everything(self._failure, watch_error=self._failure)

    # -- state reads -----------------------------------------------------------------------

    async def get_network_data(
        self,
        *,
        max_age: float | None = None,
        timeout: float = 10.0,
        nodes: Iterable[str] | None = None,
        links: Iterable[tuple[str, str]] | None = None,
    ) -> NetworkData:
        """The latest link costs, as a consistent snapshot (:class:`NetworkData`).

        Returns at once when the state holds what is asked: with ``nodes``, every
        ordered link between two of them; with ``links``, those ``(src, dst)`` pairs;
        with neither, at least one link. Otherwise waits for it (no polling) up to
        ``timeout`` seconds, then raises :class:`~jupiter_bus.state.StateUnavailable`
        naming what is missing.

        Staleness (``max_age`` seconds, judged by when this process received each
        link): links older than that are listed in the result's ``.stale``, never
        hidden. If *every* requested link is stale, the call waits for a fresh one and
        at the timeout raises :class:`~jupiter_bus.state.StaleState` naming them (its
        ``.data`` still holds the snapshot).

        Example::

            data = await bus.get_network_data(nodes=["n1", "n2", "n3"], max_age=600)
            if data.stale:
                log.warning("old link costs: %s", data.stale)
        """
        self._check_open()
        wanted_nodes = None if nodes is None else list(nodes)
        wanted_links = None if links is None else list(links)

        def judge(data: NetworkData, now: float) -> Coverage:
            return data.coverage(nodes=wanted_nodes, links=wanted_links, max_age=max_age, now=now)

        listed = wanted_nodes is not None or wanted_links is not None
        # What any satisfied answer needs: every node of a requested link known, and at
        # least as many links held as requested (a node alone, or a self-link, asks nothing).
        listed_nodes = set(wanted_nodes or ())
        pairs = {(src, dst) for src, dst in wanted_links or () if src != dst}
        names = {x for pair in pairs for x in pair} | (
            listed_nodes if len(listed_nodes) > 1 else set()
        )
        least = max(len(listed_nodes) * (len(listed_nodes) - 1), len(pairs))

        def possible(data: NetworkData) -> bool:
            return data.link_count >= least and all(x in data for x in names)

        ok, data, coverage = await self._await_state(
            self._network, judge, listed, max_age, timeout, possible
        )
        if ok:
            return data
        raise _state_error("network", "links", data, coverage, max_age, timeout)

    async def get_resource_data(
        self,
        *,
        max_age: float | None = None,
        timeout: float = 10.0,
        nodes: Iterable[str] | None = None,
    ) -> ResourceData:
        """The latest resource sample per node, as a consistent snapshot (:class:`ResourceData`).

        Returns at once when every node in ``nodes`` (or, without it, at least one
        node) has a sample; otherwise waits up to ``timeout`` seconds, then raises
        :class:`~jupiter_bus.state.StateUnavailable` naming the missing nodes.
        ``max_age`` works as in :meth:`get_network_data` (``.stale`` lists old nodes;
        all requested stale: :class:`~jupiter_bus.state.StaleState`).

        Example::

            data = await bus.get_resource_data(nodes=["n1", "n2"], max_age=30)
            jupiter_view = data.to_jupiter()
        """
        self._check_open()
        wanted = None if nodes is None else list(nodes)

        def judge(data: ResourceData, now: float) -> Coverage:
            return data.coverage(nodes=wanted, max_age=max_age, now=now)

        def possible(data: ResourceData) -> bool:
            return wanted is None or all(x in data for x in wanted)

        ok, data, coverage = await self._await_state(
            self._resources, judge, wanted is not None, max_age, timeout, possible
        )
        if ok:
            return data
        raise _state_error("resource", "nodes", data, coverage, max_age, timeout)

    async def _await_state(
        self,
        state: NetworkState | ResourceState,
        judge: Callable[[D, float], Coverage],
        listed: bool,
        max_age: float | None,
        timeout: float,
        possible: Callable[[D], bool],
    ) -> tuple[bool, D, Coverage]:
        """Snapshot until ``judge`` is satisfied or ``timeout`` passes; (ok, last, coverage).

        ``possible`` is a cheap necessary condition (counts, names known): while it does
        not hold, the full judgement (O(N²) for N requested nodes) is skipped, since a
        state filling with thousands of updates wakes this loop hundreds of times.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            now = time.monotonic()
            data: D = state.snapshot(max_age=max_age, now=now)  # type: ignore[assignment]
            remaining = deadline - loop.time()
            if remaining <= 0 or possible(data):
                coverage = judge(data, now)
                if _satisfied(coverage, listed, max_age):
                    return True, data, coverage
            if remaining <= 0:
                if self._failure is not None:
                    raise self._failure
                return False, data, coverage
            version = data.version
            # Not held while waiting: a live snapshot makes the next update copy the
            # arrays (60 MB at 1,000 nodes) instead of writing in place.
            del data
            with contextlib.suppress(TimeoutError):
                await state.wait_changed(version, remaining)

    # -- live feeds ------------------------------------------------------------------------

    def watch_network(
        self,
        *,
        src: str | Iterable[str] | None = None,
        dst: str | Iterable[str] | None = None,
        links: Iterable[tuple[str, str]] | None = None,
    ) -> Watch[LinkCost]:
        """Live link-cost updates, optionally only from ``src`` and/or to ``dst`` (a node
        or several), or only of the ``(src, dst)`` pairs in ``links``.

        Coalesced per link while the consumer is behind (see :class:`Watch`).

        Example::

            async with bus.watch_network(dst="node2") as updates:
                async for cost in updates:
                    ...
            bus.watch_network(links=[("node1", "node2"), ("node2", "node1")])
        """
        self._check_open()
        sources, destinations = _name_set(src), _name_set(dst)
        pairs = None if links is None else frozenset(links)
        accept: Callable[[LinkCost], bool] | None = None
        if sources is not None or destinations is not None or pairs is not None:

            def accept(m: LinkCost) -> bool:
                return (
                    (sources is None or m.src in sources)
                    and (destinations is None or m.dst in destinations)
                    and (pairs is None or (m.src, m.dst) in pairs)
                )

        return Watch(self._network_watches, _link_key, accept)

    def watch_resources(self, *, node: str | Iterable[str] | None = None) -> Watch[ResourceSample]:
        """Live resource samples, optionally of one ``node`` or several; coalesced per node.

        Example::

            async for sample in bus.watch_resources(node="node1"):
                print(sample.cpu_percent)
        """
        self._check_open()
        nodes = _name_set(node)
        accept = None if nodes is None else (lambda m: m.node in nodes)
        return Watch(self._resource_watches, _node_key, accept)

    def watch_transfers(
        self, *, node: str | None = None, max_pending: int = 10_000
    ) -> Watch[TransferResult]:
        """Live transfer results (``transfer.done.*``), optionally of one executing ``node``.

        A slow reader keeps at most ``max_pending`` results; beyond that the oldest
        are dropped (``Watch.dropped`` counts them): collect results that must not be
        lost with :meth:`wait_transfer`.

        Example::

            async with bus.watch_transfers(node="node1") as results:
                async for result in results:
                    print(result.request_id, result.ok)
        """
        self._check_open()
        accept = None if node is None else (lambda m: m.node == node)
        return Watch(self._transfer_watches, _job_key, accept, max_pending)

    # -- transfers -------------------------------------------------------------------------

    def _executing_node(self, via: str | None) -> str:
        node = via if via is not None else self._node
        if node is None:
            raise InvalidRequest(
                "no executing node: pass via='<node>' or JupiterInterface(..., node='<node>')"
            )
        try:
            return check_node(node, what="executing node")
        except JupiterBusError as exc:
            raise InvalidRequest(str(exc)) from None

    def _request(
        self,
        ip: str,
        user: str,
        pword: str | None,
        source: str,
        destination: str,
        *,
        port: int,
        engine: TransferEngine | None,
        idempotency_key: str | None,
        create_dirs: bool,
    ) -> TransferRequest:
        password = pword or None
        try:
            if password is not None and self._seal_key is not None:
                password = sealing.seal(password, self._seal_key)
            return TransferRequest(
                host=ip,
                port=port,
                user=user,
                password=password,
                source=source,
                destination=destination,
                engine=engine,
                idempotency_key=idempotency_key or "",
                create_dirs=create_dirs,
            )
        except MessageError as exc:  # its text never echoes a value
            raise InvalidRequest(f"transfer request refused before sending: {exc}") from None

    async def data_transfer(
        self,
        ip: str,
        user: str,
        pword: str | None,
        source: str,
        destination: str,
        *,
        via: str | None = None,
        port: int = 22,
        engine: TransferEngine | None = None,
        timeout: float = 60.0,
        idempotency_key: str | None = None,
        create_dirs: bool = False,
    ) -> TransferResult:
        """Copy ``source`` (on the executing node) to ``destination`` on ``user@ip:port``.

        The request goes to node ``via`` (default: the interface's ``node``) and the
        call waits for its result (RabbitMQ direct reply-to on AMQP). Returns the
        :class:`~jupiter_bus.messages.TransferResult` when it succeeded; otherwise
        raises the :class:`TransferFailed` subclass of its error kind (carrying the
        result). A node without a transfer worker fails at once with
        :class:`Unreachable`; no answer within ``timeout`` raises :class:`NoReply`.
        ``pword`` (``None`` or empty: the worker's keys) is never logged or shown.

        Example::

            result = await bus.data_transfer("10.0.0.12", "jupiter", "s3cret",
                                             "/data/out/a.bin", "/data/in/a.bin",
                                             via="node1", timeout=120)
            print(result.bytes, result.seconds)
        """
        transport = self._check_open()
        node = self._executing_node(via)
        request = self._request(
            ip,
            user,
            pword,
            source,
            destination,
            port=port,
            engine=engine,
            idempotency_key=idempotency_key,
            create_dirs=create_dirs,
        )
        log.info("job %s: transfer via node %s to %s:%d", request.id, node, ip, port)
        try:
            reply = await transport.request(
                TRANSFERS_EXCHANGE,
                node,
                encode(request),
                timeout=timeout,
                correlation_id=request.id,
            )
        except Unroutable:
            raise self._no_worker(node, request.id) from None
        except RequestTimeout:
            raise NoReply(
                f"no result for job {request.id} from node {node} within {timeout:g} s; "
                "the job may still run (its result will appear on transfer.done)",
                job_id=request.id,
                node=node,
            ) from None
        try:
            result = decode(reply.body, TransferResult)
        except MessageError as exc:
            raise RemoteError(
                f"job {request.id}: node {node} answered something unreadable: {exc}",
                job_id=request.id,
                node=node,
            ) from None
        return _checked(result, pword)

    async def transfer_to(
        self,
        node: str,
        user: str,
        pword: str | None,
        source: str,
        destination: str,
        *,
        via: str | None = None,
        engine: TransferEngine | None = None,
        timeout: float = 60.0,
        idempotency_key: str | None = None,
        create_dirs: bool = False,
    ) -> TransferResult:
        """:meth:`data_transfer` to a node by name: its host and SSH port come from its
        resource events (``host``, ``ssh_port``; port 22 when it gave none).

        Waits (within ``timeout``, which also bounds the transfer) for the node's first
        resource sample; a node that announced no host raises :class:`StateUnavailable`
        naming it. Errors of the transfer itself are those of :meth:`data_transfer`.

        Example::

            await bus.transfer_to("node2", "jupiter", None, "/out/a.bin", "/in/a.bin")
        """
        started = time.monotonic()
        resources = await self.get_resource_data(nodes=[node], timeout=timeout)
        host = resources.host(node)
        if host is None:
            raise StateUnavailable(
                f"node {node!r} announced no host in its resource events (its agent needs "
                "a host: 'jupiter-bus agent --host ...'); pass the address to data_transfer",
                missing=[node],
            )
        return await self.data_transfer(
            host,
            user,
            pword,
            source,
            destination,
            via=via,
            port=resources.ssh_port(node) or 22,
            engine=engine,
            timeout=max(0.001, timeout - (time.monotonic() - started)),
            idempotency_key=idempotency_key,
            create_dirs=create_dirs,
        )

    def _no_worker(self, node: str, job_id: str) -> Unreachable:
        return Unreachable(
            f"node {node!r} runs no transfer worker: nothing consumes {work_queue(node)} "
            "(start its agent with the transfer provider, or choose another node with via=)",
            job_id=job_id,
            node=node,
        )

    async def submit_transfer(
        self,
        ip: str,
        user: str,
        pword: str | None,
        source: str,
        destination: str,
        *,
        via: str | None = None,
        port: int = 22,
        engine: TransferEngine | None = None,
        idempotency_key: str | None = None,
        create_dirs: bool = False,
    ) -> str:
        """Publish a transfer job without waiting for it; return its job id.

        The job is persistent and its result goes to this interface's durable
        :attr:`completion_queue` (and to ``transfer.done.<node>``); collect it with
        :meth:`wait_transfer`, here or in another process opened with the same
        ``completion_queue``. A node without a transfer worker raises
        :class:`Unreachable` at once.

        Example::

            jobs = [await bus.submit_transfer(ip, user, None, f"/out/{n}", f"/in/{n}")
                    for n in names]
            results = [await bus.wait_transfer(job, timeout=300) for job in jobs]
        """
        transport = self._check_open()
        node = self._executing_node(via)
        request = self._request(
            ip,
            user,
            pword,
            source,
            destination,
            port=port,
            engine=engine,
            idempotency_key=idempotency_key,
            create_dirs=create_dirs,
        )
        queue = await self._ensure_completions()
        try:
            await transport.publish(
                TRANSFERS_EXCHANGE,
                node,
                encode(request),
                persistent=True,
                mandatory=True,
                reply_to=queue,
                correlation_id=request.id,
                message_id=request.id,
            )
        except Unroutable:
            raise self._no_worker(node, request.id) from None
        log.info("job %s: submitted via node %s, results to %s", request.id, node, queue)
        return request.id

    async def wait_transfer(
        self, job_id: str, *, timeout: float = 60.0, check: bool = True
    ) -> TransferResult:
        """Wait for the result of a submitted job (from the completion queue or
        ``transfer.done``); return it when it succeeded.

        With ``check`` (the default) a failed job raises its :class:`TransferFailed`
        subclass; with ``check=False`` the result is returned either way. No result
        within ``timeout`` raises :class:`NoReply`. Waiting again for a collected job
        returns the same result (while it is among the ``max_results`` recent ones).

        Example::

            result = await bus.wait_transfer(job_id, timeout=300, check=False)
            if not result.ok:
                print(result.error)
        """
        self._check_open()
        result = await self._ready_result(job_id)
        if result is None:
            waiter: asyncio.Future[TransferResult] = asyncio.get_running_loop().create_future()
            self._waiters.setdefault(job_id, []).append(waiter)
            try:
                async with asyncio.timeout(timeout):
                    result = await waiter
            except TimeoutError:
                held = len(self._held)
                raise NoReply(
                    f"no result for job {job_id} within {timeout:g} s; the job may still run"
                    + (
                        f" ({held} uncollected results are held: collect them with "
                        "wait_transfer, the rest wait in the queue)"
                        if held >= self._max_results
                        else ""
                    ),
                    job_id=job_id,
                ) from None
            finally:
                futures = self._waiters.get(job_id)
                if futures is not None and waiter in futures:
                    futures.remove(waiter)
                    if not futures:
                        del self._waiters[job_id]
        return _checked(result, None) if check else result

    async def _ready_result(self, job_id: str) -> TransferResult | None:
        """A result already here for ``job_id``, marked collected (its delivery acked)."""
        result = self._collected.get(job_id)
        if result is not None:
            self._collected.move_to_end(job_id)
            return result
        held = self._held.pop(job_id, None)
        if held is not None:
            result, delivery = held
            self._remember(job_id, result)
            await delivery.ack()
            return result
        result = self._done.get(job_id)
        if result is not None:
            self._remember(job_id, result)
        return result

    def _remember(self, job_id: str, result: TransferResult) -> None:
        self._collected[job_id] = result
        self._collected.move_to_end(job_id)
        while len(self._collected) > self._max_results:
            self._collected.popitem(last=False)

    def _resolve(self, job_id: str, result: TransferResult) -> bool:
        """Hand ``result`` to the callers waiting for it; whether there were any."""
        futures = self._waiters.pop(job_id, None)
        if not futures:
            return False
        for future in futures:
            if not future.done():
                future.set_result(result)
        self._remember(job_id, result)
        return True

    def _on_done(self, result: TransferResult) -> None:
        """A ``transfer.done`` event: remember it a while, wake its waiters, feed watches."""
        job_id = result.request_id
        self._done[job_id] = result
        while len(self._done) > self._max_results:
            self._done.popitem(last=False)
        self._resolve(job_id, result)
        if self._transfer_watches:
            for watch in self._transfer_watches:
                watch.offer(result)

    async def _ensure_completions(self) -> str:
        """Declare the completion queue and start collecting from it (once)."""
        if self._collector is not None:
            return self._queue_name
        transport = self._check_open()
        async with self._completions_lock:
            if self._collector is None:
                await transport.declare_queue(self._queue_name)
                self._queue_declared = True
                consumer = transport.consume(
                    self._queue_name, prefetch=min(self._max_results, 65_535)
                )
                try:
                    await consumer.start()
                    if self._state != "open":  # closed while this was starting
                        raise InterfaceClosed("the JupiterInterface was closed")
                except BaseException:
                    await consumer.close()
                    raise
                self._consumer = consumer
                self._collector = asyncio.create_task(
                    self._collect(consumer), name=f"jupiter-bus completions {self._queue_name}"
                )
        return self._queue_name

    async def _collect(self, consumer: Consumer) -> None:
        """Take results from the completion queue; ack each once a caller collected it."""
        try:
            async for delivery in consumer:
                result = await decode_delivery(delivery, TransferResult)
                if result is None:
                    continue  # dead-lettered with its reason
                job_id = delivery.envelope.correlation_id or result.request_id
                if job_id in self._collected or self._resolve(job_id, result):
                    await delivery.ack()
                else:
                    self._held[job_id] = (result, delivery)
        except asyncio.CancelledError:
            raise
        except Exception:
            if self._state == "open":
                log.exception(
                    "facade %s: completion queue %s failed", self._client_id, self._queue_name
                )


def _satisfied(coverage: Coverage, listed: bool, max_age: float | None) -> bool:
    """Whether a read can return: all requested present, and one fresh if ``max_age``.

    Asking for nothing (empty lists, one node's links among themselves) is satisfied at
    once; asking for nothing in particular needs at least one entry.
    """
    if coverage.missing:
        return False
    if coverage.requested == 0:
        return listed
    return max_age is None or coverage.fresh > 0


def _state_error(
    what: str,
    unit: str,
    data: NetworkData | ResourceData,
    coverage: Coverage,
    max_age: float | None,
    timeout: float,
) -> StateUnavailable | StaleState:
    """The error for a state read that timed out, naming what is missing or stale."""
    if coverage.requested == 0:
        return StateUnavailable(
            f"no {what} data within {timeout:g} s: nothing has been received yet "
            f"(is a {what} provider publishing on this bus?)"
        )
    if coverage.missing:
        unknown = ""
        if coverage.unknown_nodes and unit == "links":
            never = coverage.unknown_nodes
            unknown = f" (never heard of: {_listing(never[:20], len(never))})"
        return StateUnavailable(
            f"no {what} data within {timeout:g} s for {coverage.missing} of "
            f"{coverage.requested} requested {unit}: "
            f"{_listing(coverage.missing_examples, coverage.missing)}{unknown}",
            missing=coverage.missing_examples,
        )
    return StaleState(
        f"all {coverage.requested} requested {unit} are older than max_age={max_age:g} s "
        f"(by receipt time), and no fresh update came within {timeout:g} s: "
        f"{_listing(coverage.stale_examples, coverage.stale)}",
        stale=coverage.stale_examples,
        count=coverage.stale,
        data=data,
    )


def _name_set(names: str | Iterable[str] | None) -> frozenset[str] | None:
    """A watch filter's names: one name or several (``None``: no filter)."""
    if names is None:
        return None
    return frozenset((names,) if isinstance(names, str) else names)


def _link_key(cost: LinkCost) -> Hashable:
    return (cost.src, cost.dst)


def _node_key(sample: ResourceSample) -> Hashable:
    return sample.node


def _job_key(result: TransferResult) -> Hashable:
    return result.request_id


def _checked(result: TransferResult, password: str | None) -> TransferResult:
    """``result`` when it succeeded; otherwise raise the error of its kind."""
    if result.ok or result.error is None:
        return result
    kind = result.error.kind
    message = result.error.message
    if password:
        message = message.replace(password, "***")
    cls = transfer_error(kind)
    raise cls(
        f"transfer {result.request_id} via node {result.node} failed ({kind}): {message}",
        result=result,
    )
