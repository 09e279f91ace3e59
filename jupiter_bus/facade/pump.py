"""The facade's event pump: one subscription's events into live state, watches and waiters.

The pump owns the interface's subscription to ``jupiter.events`` and the task that reads
it, and asks for snapshots into it (the answers are sent to that subscription's queue).
Events (``resource``, ``network.cost``, ``network.batch``, ``transfer.result``,
``transfer.progress``) are decoded (bad ones dead-lettered) and applied to
:class:`~jupiter_bus.state.NetworkState` and :class:`~jupiter_bus.state.ResourceState`,
offered to the interface's watches, and transfer results handed to whoever waits for
them; progress events only go to the progress watches, if any. Snapshot answers come
through the same feed (sent straight to its queue, by the default exchange) and are
applied the same way, except that an answer older than what a live update already
brought is skipped (:func:`jupiter_bus.snapshot.superseded`).

Example::

    pump = EventPump(network, resources, watches, completions.on_done,
                     owner="c1", is_open=lambda: True, on_failure=print)
    await pump.start(transport)
    await pump.request_snapshot()
    ...
    await asyncio.gather(*pump.cancel(), return_exceptions=True)
    await pump.close()
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Final, NoReturn

from ..batch import LinkBatch
from ..errors import InterfaceClosed, TransportError
from ..messages import LinkCost, ResourceSample, TransferProgress, TransferResult
from ..receive import decoded_events_and_batches
from ..snapshot import ask, superseded
from ..state import NetworkState, ResourceState
from ..topology import DEFAULT_EXCHANGE
from ..transport import Subscription, Transport
from .watch import Watches

__all__ = ["EVENT_PATTERNS", "EventPump"]

log = logging.getLogger(__name__)

EVENT_PATTERNS: Final = (
    "resource.*",
    "network.*.*",
    "network-batch.*",
    "transfer.done.*",
    "transfer.progress.*",
)
"""What the facade follows on ``jupiter.events``."""
_YIELD_EVERY: Final = 256  # events handled before the pump lets other tasks run


class EventPump:
    """Feeds the events of one subscription into the states, the watches and the
    transfer waiters (``on_done``), skipping snapshot answers older than what is held.

    It owns the subscription and two tasks at most (the pump, and a snapshot request
    after a reconnect). ``is_open`` says whether the owning interface is open (a closed
    one asks nothing); ``on_failure`` is called, inside the handler, with what stopped
    the feed; ``owner`` (the interface's client id) goes in task names and log lines.

    Example::

        pump = EventPump(NetworkState(), ResourceState(), Watches(), lambda result: None,
                         owner="c1", is_open=lambda: True, on_failure=print)
        await pump.start(transport)
    """

    def __init__(
        self,
        network: NetworkState,
        resources: ResourceState,
        watches: Watches,
        on_done: Callable[[TransferResult], None],
        *,
        owner: str,
        is_open: Callable[[], bool],
        on_failure: Callable[[Exception], None],
        follow: frozenset[str] | None = None,
    ) -> None:
        self._follow_nodes = follow
        self._network = network
        self._resources = resources
        self._watches = watches
        self._on_done = on_done
        self._owner = owner
        self._is_open = is_open
        self._on_failure = on_failure
        self._transport: Transport | None = None
        self._subscription: Subscription | None = None
        self._task: asyncio.Task[None] | None = None
        self._resnapshot: asyncio.Task[None] | None = None
        self._forget_reconnect: Callable[[], None] = lambda: None

    def patterns(self) -> list[str]:
        """What to bind: :data:`EVENT_PATTERNS`, or each followed node's own keys.

        Example::

            EventPump(..., follow=frozenset({"n1"})).patterns()
            # ['resource.n1', 'network.n1.*', 'network-batch.n1', 'transfer.done.n1', ...]
        """
        if self._follow_nodes is None:
            return list(EVENT_PATTERNS)
        return [
            key
            for node in sorted(self._follow_nodes)
            for key in (
                f"resource.{node}",
                f"network.{node}.*",
                f"network-batch.{node}",
                f"transfer.done.{node}",
                f"transfer.progress.{node}",
            )
        ]

    def _foreign(self, message: object) -> bool:
        """Whether a snapshot answer comes from a node this pump does not follow."""
        follow = self._follow_nodes
        if follow is None:
            return False
        if isinstance(message, LinkBatch):
            return any(message.nodes[i] not in follow for i in set(message.src.tolist()))
        if isinstance(message, LinkCost):
            return message.src not in follow
        if isinstance(message, ResourceSample):
            return message.node not in follow
        return False

    async def start(self, transport: Transport) -> None:
        """Subscribe to :meth:`patterns` and start the task that applies them."""
        self._transport = transport
        subscription = self._subscription = transport.subscribe(self.patterns())
        await subscription.start()
        self._task = asyncio.create_task(
            self._follow(transport, subscription), name=f"jupiter-bus events {self._owner}"
        )

    async def request_snapshot(self) -> str:
        """Ask every node agent for its latest events, answered into this feed; the id."""
        transport, subscription = self._transport, self._subscription
        if transport is None or subscription is None or not self._is_open():
            raise InterfaceClosed("the event feed is not open")
        request_id = await ask(transport, subscription.name, batch=True)
        log.debug("facade %s: snapshot %s requested", self._owner, request_id)
        return request_id

    def resnapshot_on_reconnect(self) -> None:
        """Ask again each time a lost connection is back: what was published while it
        was down never reaches us."""
        if self._transport is not None:
            self._forget_reconnect = self._transport.on_reconnect(self._snapshot_soon)

    def _snapshot_soon(self) -> None:
        """After a reconnect: ask for a snapshot (one request at a time, owned by us)."""
        if not self._is_open() or (self._resnapshot is not None and not self._resnapshot.done()):
            return

        async def again() -> None:
            try:
                await self.request_snapshot()
            except Exception as exc:  # the next reconnect asks again
                log.warning("facade %s: snapshot after reconnect failed: %s", self._owner, exc)

        self._resnapshot = asyncio.create_task(
            again(), name=f"jupiter-bus resnapshot {self._owner}"
        )

    def cancel(self) -> list[asyncio.Task[None]]:
        """Stop asking after reconnects; cancel the tasks and return them, to be awaited."""
        self._forget_reconnect()
        tasks = [t for t in (self._task, self._resnapshot) if t is not None]
        for task in tasks:
            task.cancel()
        return tasks

    async def close(self) -> None:
        """Close the subscription (after :meth:`cancel`). Idempotent."""
        if self._subscription is not None:
            await self._subscription.close()

    async def _follow(self, transport: Transport, subscription: Subscription) -> None:
        try:
            await self.run(transport, subscription)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._on_failure(exc)

    def holds_newer(self, message: object) -> bool:
        """Whether the state holds a value for ``message``'s node or link at least as new
        (producer's ``ts``): a snapshot answer must not undo a live update."""
        if isinstance(message, LinkCost):
            held = self._network.held_ts(message.src, message.dst)
        elif isinstance(message, ResourceSample):
            held = self._resources.held_ts(message.node)
        else:
            return False
        return superseded(held, message.ts)

    async def run(self, transport: Transport, subscription: Subscription) -> NoReturn:
        """Apply every event of ``subscription`` until cancelled.

        Raises :class:`~jupiter_bus.errors.TransportError` when the subscription ends,
        or what reading it raised.
        """
        # Locals, not attributes: this loop runs once per event (100k+ a second).
        network, resources, on_done = self._network, self._resources, self._on_done
        holds_newer = self.holds_newer
        network_watches = self._watches.network
        resource_watches = self._watches.resources
        transfer_watches = self._watches.transfers
        progress_watches = self._watches.progress
        handled = 0
        async for envelope, message in decoded_events_and_batches(transport, subscription):
            handled += 1
            if handled % _YIELD_EVERY == 0:
                await asyncio.sleep(0)  # a burst must not starve the callers' tasks
            answer = envelope.exchange == DEFAULT_EXCHANGE
            if answer and self._follow_nodes is not None and self._foreign(message):
                continue  # every agent answers a snapshot request: keep the followed ones
            if isinstance(message, LinkBatch):
                watched = (
                    [c for c in message.costs() if not (answer and holds_newer(c))]
                    if network_watches
                    else ()
                )
                # An answer's link older than a live update already applied is skipped.
                network.apply_batch(message, time.monotonic(), newer_only=answer)
                for cost in watched:
                    for network_watch in network_watches:
                        network_watch.offer(cost)
                await asyncio.sleep(0)  # a batch is worth many events
                continue
            if answer and holds_newer(message):
                continue  # a snapshot answer older than a live update already applied
            if isinstance(message, LinkCost):
                network.apply(message, time.monotonic())
                if network_watches:
                    for network_watch in network_watches:
                        network_watch.offer(message)
            elif isinstance(message, ResourceSample):
                resources.apply(message, time.monotonic())
                if resource_watches:
                    for resource_watch in resource_watches:
                        resource_watch.offer(message)
            elif isinstance(message, TransferResult):
                on_done(message)
                if transfer_watches:
                    for transfer_watch in transfer_watches:
                        transfer_watch.offer(message)
            elif isinstance(message, TransferProgress):
                for progress_watch in progress_watches:
                    progress_watch.offer(message)
        raise TransportError("the event subscription ended")
