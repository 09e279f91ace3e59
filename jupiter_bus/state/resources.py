"""The live resource state: the latest :class:`~jupiter_bus.messages.ResourceSample` per node.

:class:`ResourceState` is fed sample by sample; readers take :class:`ResourceData`
snapshots (a read-only mapping node -> sample). Taking one copies nothing: the state
copies its dictionary before the next change while a snapshot may still read it.

Example::

    state = ResourceState()
    state.apply(sample)
    data = state.snapshot()
    data["n1"].cpu_percent, data.to_jupiter()
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Mapping

from .. import formats
from ..errors import UnknownNode
from ..messages import ResourceSample
from .coverage import EXAMPLES, Coverage, node_coverage
from .signal import VersionedState

__all__ = ["ResourceData", "ResourceState"]


class ResourceState(VersionedState):
    """The latest :class:`~jupiter_bus.messages.ResourceSample` of each node.

    Example::

        state = ResourceState()
        state.apply(sample)
        state.snapshot().to_jupiter()
    """

    def __init__(self) -> None:
        self._entries: dict[str, tuple[ResourceSample, float]] = {}
        self._shared = False
        super().__init__()

    @property
    def nodes(self) -> tuple[str, ...]:
        """Names of the nodes with a sample, in order of first arrival."""
        return tuple(self._entries)

    def apply(self, sample: ResourceSample, received_at: float | None = None) -> None:
        """Store ``sample`` as its node's latest, received at ``received_at`` (monotonic)."""
        if self._shared:
            self._entries = dict(self._entries)
            self._shared = False
        self._entries[sample.node] = (
            sample,
            time.monotonic() if received_at is None else received_at,
        )
        self._signal.bump()

    def remove_node(self, name: str) -> bool:
        """Forget a node that left; False if unknown."""
        if name not in self._entries:
            return False
        if self._shared:
            self._entries = dict(self._entries)
            self._shared = False
        del self._entries[name]
        self._signal.bump()
        return True

    def held_ts(self, node: str) -> float | None:
        """The producer's ``ts`` of the sample held for ``node`` (``None``: none held)."""
        entry = self._entries.get(node)
        return None if entry is None else entry[0].ts

    def snapshot(self, *, max_age: float | None = None, now: float | None = None) -> ResourceData:
        """The current version as an immutable :class:`ResourceData`."""
        self._shared = True
        return ResourceData(
            self._entries,
            version=self._signal.version,
            max_age=max_age,
            taken_at=time.monotonic() if now is None else now,
        )


class ResourceData(Mapping[str, ResourceSample]):
    """An immutable snapshot of the resource state: a mapping node -> latest sample.

    Example::

        data = await bus.get_resource_data()
        data["n1"].cpu_percent, data.age_seconds("n1")
        data.to_jupiter()   # {'n1': {'cpu': 37.5, 'memory': 41.2, 'last_update': '...'}}
        data.ips()          # {'n1': '10.0.0.11'} for nodes that announced a host
    """

    __slots__ = ("_entries", "_stale", "max_age", "taken_at", "version")

    def __init__(
        self,
        entries: dict[str, tuple[ResourceSample, float]],
        *,
        version: int,
        max_age: float | None,
        taken_at: float,
    ) -> None:
        self._entries = entries  # never changed again: the state copies before writing
        self._stale: tuple[str, ...] | None = None
        self.version = version
        self.max_age = max_age
        self.taken_at = taken_at

    def __repr__(self) -> str:
        return f"<ResourceData version={self.version} nodes={len(self._entries)}>"

    def __getitem__(self, node: str) -> ResourceSample:
        try:
            return self._entries[node][0]
        except KeyError:
            raise UnknownNode(f"no resource data for node {node!r}") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def nodes(self) -> tuple[str, ...]:
        """Node names, in order of first arrival."""
        return tuple(self._entries)

    def received_at(self, node: str) -> float:
        """When this process received ``node``'s sample (``time.monotonic()``)."""
        try:
            return self._entries[node][1]
        except KeyError:
            raise UnknownNode(f"no resource data for node {node!r}") from None

    def age_seconds(self, node: str, now: float | None = None) -> float:
        """Seconds since this process received ``node``'s sample."""
        return (time.monotonic() if now is None else now) - self.received_at(node)

    def stale_nodes(self, max_age: float, now: float | None = None) -> tuple[str, ...]:
        """Nodes whose sample was received more than ``max_age`` seconds ago."""
        limit = (time.monotonic() if now is None else now) - max_age
        return tuple(node for node, (_, at) in self._entries.items() if at < limit)

    @property
    def stale(self) -> tuple[str, ...]:
        """Nodes older than the snapshot's ``max_age`` when it was taken (empty without one)."""
        if self.max_age is None:
            return ()
        if self._stale is None:
            self._stale = self.stale_nodes(self.max_age, self.taken_at)
        return self._stale

    def coverage(
        self,
        *,
        nodes: Iterable[str] | None = None,
        max_age: float | None = None,
        now: float | None = None,
        limit: int = EXAMPLES,
    ) -> Coverage:
        """How much of the requested nodes (default: all held) this snapshot holds."""
        stale_before = None
        if max_age is not None:
            stale_before = (time.monotonic() if now is None else now) - max_age
        return node_coverage(self._entries, nodes=nodes, stale_before=stale_before, limit=limit)

    def host(self, node: str) -> str | None:
        """Where other nodes reach ``node`` (``None`` if it did not say)."""
        return self[node].host

    def ssh_port(self, node: str) -> int | None:
        """``node``'s SSH port (``None`` if it did not say)."""
        return self[node].ssh_port

    def ips(self) -> dict[str, str]:
        """``{node: host}`` for the nodes that announced a host (for Jupiter's formats)."""
        return {node: s.host for node, (s, _) in self._entries.items() if s.host is not None}

    def to_jupiter(self) -> dict[str, dict[str, float | str]]:
        """Jupiter's resource format: ``{node: {"cpu", "memory", "last_update"}}``.

        ``last_update`` is the producer's ``ts`` as ``%B %d %Y - %H:%M:%S`` (UTC).
        """
        return formats.jupiter_resources(s for s, _ in self._entries.values())
