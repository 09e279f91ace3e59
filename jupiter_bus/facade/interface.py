"""The facade class itself: :class:`JupiterInterface` composes the facade's pieces.

It owns the transport (when it opened it), the order of opening and closing and the
state of the whole (new, open, failed, closed); the work is done by the pieces it wires
together: the event pump with its subscription (:mod:`.pump`), the waiting reads
(:mod:`.reads`), the transfer client and completion collector (:mod:`.transfers`) and the
live feeds (:mod:`.watch`).

Example::

    async with JupiterInterface("memory://demo", node="node1") as bus:
        data = await bus.get_network_data(timeout=5)
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Final, Self

from ..errors import InterfaceClosed, RequestTimeout, Unroutable
from ..messages import (
    LinkCost,
    ProfileRequest,
    ProfileResult,
    ResourceSample,
    TransferEngine,
    TransferProgress,
    TransferResult,
    decode,
    encode,
)
from ..state import NetworkData, NetworkState, ResourceData, ResourceState
from ..topology import EVENTS_EXCHANGE, check_node, profile_key
from ..transport import Transport, connect
from ..transport.base import QueueType, safe_url
from .pump import EventPump
from .reads import StateReads
from .transfers import (
    COMPLETION_PREFIX,
    DEFAULT_COMPLETION_EXPIRES,
    CompletionCollector,
    TransferClient,
    TransferJob,
    default_completion_queue_type,
)
from .watch import Watch, Watches

__all__ = ["JupiterInterface"]

log = logging.getLogger(__name__)

_CLOSE_TIMEOUT: Final = 10.0


class JupiterInterface:
    """Jupiter's view of the bus for a scheduler: live state, transfers and live feeds.

    ``url_or_transport`` is a bus URL (``memory://name``, ``amqp://...``; the interface
    connects and closes it) or a connected :class:`~jupiter_bus.transport.Transport`
    (left open on exit). ``node`` is the default executing node of transfers.
    ``completion_queue`` names the durable queue that results of
    :meth:`submit_transfer` go to; give the same name in another process to collect
    them there. Without one, ``jupiter.completions.<client_id>`` is used, made on the
    first submit and deleted on exit; should the process die first, the broker deletes it
    ``completion_expires`` seconds after its last consumer went (default an hour; ``None``:
    never). ``completion_queue_type`` (``classic`` or ``quorum``) is the completion queue's
    type; by default ``quorum`` when the URL names several brokers (a RabbitMQ cluster,
    where a classic queue's results are out of reach while its one node is down), else
    ``classic``; every process sharing a named queue must declare it alike.
    ``max_results`` bounds the results held (not yet
    collected, and recently collected). With ``seal_key``, passwords are sealed
    (:mod:`jupiter_bus.sealing`) before they are published. With ``snapshot`` (the
    default), entering asks the node agents for their latest events
    (:meth:`request_snapshot`). With ``follow`` (node names), the interface binds
    only those nodes' events (their resources, links out of them, their transfers'
    results and progress) and keeps only their snapshot answers: on a broker shared
    with other deployments it neither receives nor holds theirs.

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
        completion_expires: float | None = DEFAULT_COMPLETION_EXPIRES,
        follow: Iterable[str] | None = None,
        completion_queue_type: QueueType | None = None,
    ) -> None:
        if isinstance(url_or_transport, str):
            self._url: str | None = url_or_transport
            self._transport: Transport | None = None
        else:
            self._url = None
            self._transport = url_or_transport
        self._node = None if node is None else check_node(node)
        self._client_id = client_id or uuid.uuid4().hex[:12]
        if max_results < 1:
            raise ValueError("max_results must be at least 1")
        if completion_expires is not None and not 0.001 <= completion_expires < float("inf"):
            raise ValueError("completion_expires must be a finite number of seconds >= 0.001")
        self._snapshot_on_enter = snapshot
        self._connection_name = connection_name or f"jupiter-bus facade {self._client_id}"
        self._owns_transport = False
        self._network = NetworkState()
        self._resources = ResourceState()
        self._watches = Watches()
        self._completions = CompletionCollector(
            completion_queue or COMPLETION_PREFIX + self._client_id,
            named=completion_queue is not None,
            max_results=max_results,
            is_open=lambda: self._state == "open",
            owner=self._client_id,
            expires=None if completion_queue is not None else completion_expires,
        )
        if completion_queue_type not in (None, "classic", "quorum"):
            raise ValueError("completion_queue_type must be 'classic', 'quorum' or None")
        self._completion_queue_type = completion_queue_type
        self._transfers = TransferClient(self._completions, node=self._node, seal_key=seal_key)
        self._pump = EventPump(
            self._network,
            self._resources,
            self._watches,
            self._completions.on_done,
            owner=self._client_id,
            is_open=lambda: self._state == "open" and self._failure is None,
            on_failure=self._fail,
            follow=None if follow is None else frozenset(check_node(n) for n in follow),
        )
        self._reads = StateReads(self._network, self._resources, lambda: self._failure)
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
        return self._completions.queue

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
        return self._completions.held

    def on_transfer_result(self, listener: Callable[[TransferResult], None]) -> Callable[[], None]:
        """Call ``listener`` with each result a caller of this interface receives
        (:meth:`data_transfer`, :meth:`transfer_to`, :meth:`wait_transfer`, before a failed
        one is raised); return a function that removes it.

        For in-process observers such as :func:`jupiter_bus.metrics.serve_facade_metrics`:
        a listener must be quick; one that raises is logged and kept.

        Example::

            forget = bus.on_transfer_result(lambda result: print(result.ok))
        """
        return self._transfers.on_result(listener)

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
            self._completions.queue_type = self._completion_queue_type or (
                default_completion_queue_type(self._transport.url)
            )
            await self._pump.start(self._transport)
            if self._snapshot_on_enter:
                await self.request_snapshot()
                self._pump.resnapshot_on_reconnect()
            if self._completions.named:
                await self._completions.ensure(self._transport)
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

    def _fail(self, exc: Exception) -> None:
        """The event feed stopped with ``exc``: fail every read, wait and watch."""
        if self._state != "open":
            return
        log.exception("facade %s: event feed failed", self._client_id)
        self._failure = InterfaceClosed(f"the event feed failed: {exc}")
        self._end_everything(self._failure, watch_error=self._failure)

    async def _shutdown(self) -> None:
        self._state = "closed"
        tasks = [*self._pump.cancel(), *self._completions.cancel()]
        await asyncio.gather(*tasks, return_exceptions=True)
        self._end_everything(self._failure or InterfaceClosed("the JupiterInterface was closed"))
        transport = self._transport
        try:
            async with asyncio.timeout(_CLOSE_TIMEOUT):
                await self._completions.close()
                await self._pump.close()
        except TimeoutError:
            log.warning(
                "facade %s: closing its feeds took over %g s", self._client_id, _CLOSE_TIMEOUT
            )
        finally:
            if transport is not None and self._owns_transport:
                await transport.close()
        log.debug("facade %s closed", self._client_id)

    def _end_everything(
        self, error: InterfaceClosed, watch_error: BaseException | None = None
    ) -> None:
        """Fail every read and transfer waiter with ``error``; end every watch."""
        self._network.fail_waiters(error)
        self._resources.fail_waiters(error)
        self._completions.fail_waiters(error)
        self._watches.end_all(watch_error)

    def _check_open(self) -> Transport:
        if self._failure is not None:
            raise self._failure
        if self._state != "open" or self._transport is None:
            raise InterfaceClosed(
                "the JupiterInterface is not open: use 'async with JupiterInterface(...) as bus'"
            )
        return self._transport

    # -- snapshot --------------------------------------------------------------------------

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
        self._check_open()
        return await self._pump.request_snapshot()

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
        return await self._reads.network_data(
            max_age=max_age, timeout=timeout, nodes=nodes, links=links
        )

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
        return await self._reads.resource_data(max_age=max_age, timeout=timeout, nodes=nodes)

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
        return self._watches.watch_network(src=src, dst=dst, links=links)

    def watch_resources(self, *, node: str | Iterable[str] | None = None) -> Watch[ResourceSample]:
        """Live resource samples, optionally of one ``node`` or several; coalesced per node.

        Example::

            async for sample in bus.watch_resources(node="node1"):
                print(sample.cpu_percent)
        """
        self._check_open()
        return self._watches.watch_resources(node=node)

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
        return self._watches.watch_transfers(node=node, max_pending=max_pending)

    def watch_progress(
        self, *, node: str | None = None, max_pending: int = 10_000
    ) -> Watch[TransferProgress]:
        """Live progress of running transfers (``transfer.progress.*``), optionally of
        one executing ``node``.

        Workers send one event when a copy starts (``bytes_done`` 0) and then at most one
        every ``progress_interval`` seconds (a worker option) until the result, which
        :meth:`watch_transfers` or :meth:`wait_transfer` deliver. Coalesced per job while
        the reader is behind (the latest progress of each job is kept), at most
        ``max_pending`` jobs (the oldest dropped). Progress is best effort: use it to show
        how far a copy got, not to learn that it ended.

        Example::

            async with bus.watch_progress(node="node1") as progress:
                async for p in progress:
                    print(p.request_id, p.bytes_done, "of", p.bytes_total)
        """
        self._check_open()
        return self._watches.watch_progress(node=node, max_pending=max_pending)

    # -- on-demand measurement -------------------------------------------------------------

    async def profile_link(
        self,
        src: str,
        dst: str,
        *,
        sizes_kb: Iterable[int] | None = None,
        repeats: int = 1,
        timeout: float = 120.0,
    ) -> ProfileResult:
        """Have node ``src``'s network profiler measure its link to ``dst`` now.

        It sends ``sizes_kb`` (default: its own probe sizes) ``repeats`` times each
        through its transfer worker and answers with the points and their fit; the
        probes also feed the link's running fit. A ``src`` without a network profiler
        raises :class:`Unroutable` at once; no answer within ``timeout`` raises
        :class:`RequestTimeout`. A failed round is returned with ``ok`` false.

        Example::

            result = await bus.profile_link("node1", "node2", repeats=3)
            for size_kbit, ms in result.points:
                ...
        """
        transport = self._check_open()
        request = ProfileRequest(
            src=src,
            dst=dst,
            sizes_kb=None if sizes_kb is None else tuple(sizes_kb),
            repeats=repeats,
        )
        try:
            reply = await transport.request(
                EVENTS_EXCHANGE,
                profile_key(src),
                encode(request),
                timeout=timeout,
                persistent=False,
                expiration=timeout,
            )
        except Unroutable:
            raise Unroutable(
                f"no network profiler serves node {src!r} (is its agent running?)"
            ) from None
        except RequestTimeout:
            raise RequestTimeout(
                f"node {src!r}'s profiler did not answer within {timeout:g} s"
            ) from None
        return decode(reply.body, ProfileResult)

    # -- transfers -------------------------------------------------------------------------

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
        deadline: float | None = None,
    ) -> TransferResult:
        """Copy ``source`` (on the executing node) to ``destination`` on ``user@ip:port``.

        The request goes to node ``via`` (default: the interface's ``node``) and the
        call waits for its result (RabbitMQ direct reply-to on AMQP). Returns the
        :class:`~jupiter_bus.messages.TransferResult` when it succeeded; otherwise
        raises the :class:`TransferFailed` subclass of its error kind (carrying the
        result). A node without a transfer worker fails at once with
        :class:`Unreachable`; no answer within ``timeout`` raises :class:`NoReply`.
        A reply lost with a broker connection is not: the result comes from the job's
        ``transfer.done`` event or, once reconnected, from asking the worker again (the
        same job: it answers from its job store, never copies twice).
        ``pword`` (``None`` or empty: the worker's keys) is never logged or shown.

        The job carries a ``deadline`` (UTC epoch seconds; default: ``timeout`` from
        now): a job nobody took by then expires in its queue (its message TTL) and a
        worker refuses it (``timeout``) or stops it there, so a job to a stopped node
        never runs later unannounced. Give a later ``deadline`` to let a copy outlast
        the wait.

        Example::

            result = await bus.data_transfer("10.0.0.12", "jupiter", "s3cret",
                                             "/data/out/a.bin", "/data/in/a.bin",
                                             via="node1", timeout=120)
            print(result.bytes, result.seconds)
        """
        job = TransferJob(
            ip,
            user,
            pword,
            source,
            destination,
            via,
            port,
            engine,
            idempotency_key,
            create_dirs,
            deadline,
        )
        return await self._transfers.send(self._check_open(), job, timeout=timeout)

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
        deadline: float | None = None,
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
        self._check_open()
        host, port = await self._reads.address(node, timeout=timeout)
        job = TransferJob(
            host,
            user,
            pword,
            source,
            destination,
            via,
            port,
            engine,
            idempotency_key,
            create_dirs,
            deadline,
        )
        left = max(0.001, timeout - (time.monotonic() - started))
        return await self._transfers.send(self._check_open(), job, timeout=left)

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
        deadline: float | None = None,
    ) -> str:
        """Publish a transfer job without waiting for it; return its job id.

        The job is persistent and its result goes to this interface's durable
        :attr:`completion_queue` (and to ``transfer.done.<node>``); collect it with
        :meth:`wait_transfer`, here or in another process opened with the same
        ``completion_queue``. A node without a transfer worker raises
        :class:`Unreachable` at once. With ``deadline`` (UTC epoch seconds) the job
        expires in its queue if no worker took it by then (dead-lettered to
        ``jupiter.dead``, no result) and a worker refuses or stops it after it;
        without one it waits for a worker however long that takes.

        Example::

            jobs = [await bus.submit_transfer(ip, user, None, f"/out/{n}", f"/in/{n}")
                    for n in names]
            results = [await bus.wait_transfer(job, timeout=300) for job in jobs]
        """
        job = TransferJob(
            ip,
            user,
            pword,
            source,
            destination,
            via,
            port,
            engine,
            idempotency_key,
            create_dirs,
            deadline,
        )
        return await self._transfers.submit(self._check_open(), job)

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
        return await self._transfers.wait(job_id, timeout=timeout, check=check)
