"""Live feeds of the facade: :class:`Watch`, and :class:`Watches`, an interface's feeds by kind.

A watch costs no task: the event pump (:mod:`jupiter_bus.facade.pump`) offers each update
to the watches registered for its kind, and a watch keeps only the latest update per key
while its reader is behind.

Example::

    watches = Watches()
    async with watches.watch_network(src="node1") as updates:
        async for cost in updates:
            ...
"""

from __future__ import annotations

import asyncio
import weakref
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable
from types import TracebackType
from typing import Any, Generic, Self, TypeVar

from ..messages import LinkCost, ResourceSample, TransferProgress, TransferResult

__all__ = ["Watch", "Watches"]

T = TypeVar("T")


class Watch(Generic[T]):
    """A live feed of updates: an async iterator, best used as an async context manager.

    While the consumer is behind, only the latest update per key is kept (per link for
    network costs, per node for resources, per job for transfer results and progress;
    transfer feeds also hold at most ``max_pending`` jobs, dropping the oldest), so a slow
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


class Watches:
    """One interface's live feeds, by kind: what the event pump offers each update to.

    ``network``, ``resources``, ``transfers`` and ``progress`` are weak sets (a dropped
    watch leaves on its own); the ``watch_*`` methods make a registered :class:`Watch`
    with its filter.

    Example::

        watches = Watches()
        feed = watches.watch_resources(node="node1")
        for watch in watches.resources:
            watch.offer(sample)
    """

    __slots__ = ("network", "progress", "resources", "transfers")

    def __init__(self) -> None:
        self.network: weakref.WeakSet[Watch[LinkCost]] = weakref.WeakSet()
        self.resources: weakref.WeakSet[Watch[ResourceSample]] = weakref.WeakSet()
        self.transfers: weakref.WeakSet[Watch[TransferResult]] = weakref.WeakSet()
        self.progress: weakref.WeakSet[Watch[TransferProgress]] = weakref.WeakSet()

    def watch_network(
        self,
        *,
        src: str | Iterable[str] | None = None,
        dst: str | Iterable[str] | None = None,
        links: Iterable[tuple[str, str]] | None = None,
    ) -> Watch[LinkCost]:
        """A feed of link costs from ``src``, to ``dst`` and among ``links`` (each optional)."""
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

        return Watch(self.network, _link_key, accept)

    def watch_resources(self, *, node: str | Iterable[str] | None = None) -> Watch[ResourceSample]:
        """A feed of resource samples of ``node`` (one name or several; ``None``: all)."""
        nodes = _name_set(node)
        accept = None if nodes is None else (lambda m: m.node in nodes)
        return Watch(self.resources, _node_key, accept)

    def watch_transfers(
        self, *, node: str | None = None, max_pending: int = 10_000
    ) -> Watch[TransferResult]:
        """A feed of transfer results executed by ``node`` (``None``: all), bounded."""
        accept = None if node is None else (lambda m: m.node == node)
        return Watch(self.transfers, _job_key, accept, max_pending)

    def watch_progress(
        self, *, node: str | None = None, max_pending: int = 10_000
    ) -> Watch[TransferProgress]:
        """A feed of the progress of transfers run by ``node`` (``None``: all), latest per
        job, bounded."""
        accept = None if node is None else (lambda m: m.node == node)
        return Watch(self.progress, _progress_key, accept, max_pending)

    def end_all(self, error: BaseException | None) -> None:
        """End every feed (raising ``error`` once drained, when given)."""
        registries: tuple[weakref.WeakSet[Any], ...] = (
            self.network,
            self.resources,
            self.transfers,
            self.progress,
        )
        for registry in registries:
            for watch in list(registry):
                watch.end(error)


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


def _progress_key(progress: TransferProgress) -> Hashable:
    return progress.request_id
