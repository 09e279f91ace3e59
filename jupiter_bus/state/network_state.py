"""The live network state: every link's cost model in numpy arrays, fed update by update.

Nodes get an index when first heard of; capacity doubles as nodes join; a node that
leaves is swapped out so indices stay dense. Readers take :class:`NetworkData`
snapshots, which cost microseconds: the state hands out its current arrays and copies
them before its next change only if a snapshot (or an array taken from one) is still
alive (copy-on-write by reference counts, see :mod:`jupiter_bus.state.tables`).

Example::

    >>> state = NetworkState()
    >>> state.apply(LinkCost(src="n1", dst="n2", a=0.0, b=0.002, c=40.0, samples=10,
    ...                      r2=0.99, min_kbit=8.0, max_kbit=80000.0), received_at=1.0)
    >>> state.snapshot().cost_ms("n1", "n2", 1000.0)
    42.0
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Mapping
from operator import itemgetter
from types import MappingProxyType
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from ..batch import LinkBatch
from ..messages import LinkCost
from ..topology import check_node
from .network_data import NetworkData
from .signal import VersionedState
from .tables import Tables, refcounts

__all__ = ["NetworkState"]

_INT32_MAX: Final = 2**31 - 1
_FLOAT32_MAX: Final = float(np.finfo(np.float32).max)
_MIN_CAPACITY: Final = 8
# Copy-on-write decides by reference counts whether a snapshot is still alive; elsewhere
# than CPython every change after a snapshot copies (always correct, just slower).
_REFCOUNT_COW: Final = sys.implementation.name == "cpython"
_WHERE_CACHE_MAX: Final = 64  # distinct node lists whose indexes a state remembers


class NetworkState(VersionedState):
    """Link costs of the whole network in numpy arrays, fed update by update.

    ``apply`` costs a dictionary lookup and a few array stores (hundreds of thousands of
    updates per second); ``snapshot`` costs microseconds. Array dtypes: parameters,
    times float64; ``samples`` int32 (saturating); ``r2``, ``min_kbit``, ``max_kbit``
    float32 (so 1,000 nodes fit in about 60 MB). The latest update received for a link
    wins.

    Example::

        state = NetworkState()
        state.apply(cost)                    # received now (time.monotonic())
        data = state.snapshot()              # immutable view of this version
        version = await state.wait_changed(data.version, timeout=5.0)
    """

    def __init__(self, capacity: int = _MIN_CAPACITY) -> None:
        self._names: list[str] = []
        self._index: dict[str, int] = {}
        self._where_cache: dict[tuple[str, ...], npt.NDArray[np.intp]] = {}
        self._links = 0
        self._shared = False
        self._names_view: tuple[tuple[str, ...], Mapping[str, int]] | None = None
        super().__init__()
        self._set_tables(Tables(max(_MIN_CAPACITY, int(capacity))))

    def _set_tables(self, tables: Tables) -> None:
        self._t = tables
        self._cap = tables.cap
        self._views = tables.flat_views()
        del tables
        self._shared = False
        # References the state itself holds: anything above these is a live snapshot.
        self._baseline = self._measure()

    def _measure(self) -> tuple[int, ...]:
        return refcounts(self._t)

    def _unshare(self) -> None:
        """Before a change: copy the arrays if a snapshot of this version is still alive."""
        if _REFCOUNT_COW and self._measure() == self._baseline:
            self._shared = False
            return
        self._set_tables(self._t.copy(len(self._names)))

    # -- properties ----------------------------------------------------------------------

    @property
    def nodes(self) -> tuple[str, ...]:
        """Names of the nodes, in index order."""
        return tuple(self._names)

    @property
    def node_count(self) -> int:
        """Number of nodes known."""
        return len(self._names)

    @property
    def link_count(self) -> int:
        """Number of links with a cost."""
        return self._links

    @property
    def capacity(self) -> int:
        """Nodes the arrays hold before they grow (doubling)."""
        return self._cap

    @property
    def nbytes(self) -> int:
        """Bytes held by the arrays of the current version."""
        return self._t.nbytes

    # -- nodes -----------------------------------------------------------------------------

    def add_node(self, name: str) -> int:
        """Give ``name`` an index (if it has none) and return it."""
        index = self._index.get(name)
        if index is None:
            index = self._join(check_node(name))
            self._signal.bump()
        return index

    def _join(self, name: str) -> int:
        n = len(self._names)
        if n == self._cap:
            self._set_tables(self._t.copy(n, self._cap * 2))
        self._names.append(name)
        self._index[name] = n
        self._names_view = None
        return n

    def remove_node(self, name: str) -> bool:
        """Forget a node that left, with every link from or to it; False if unknown.

        The last node takes the removed node's index, so indices stay dense (indices are
        only meaningful within one snapshot). A later update naming the node adds it again.
        """
        i = self._index.get(name)
        if i is None:
            return False
        if self._shared:
            self._unshare()
        n = len(self._names)
        last = n - 1
        valid = self._t.valid
        self._links -= int(
            np.count_nonzero(valid[i, :n]) + np.count_nonzero(valid[:n, i]) - valid[i, i]
        )
        for array in self._t.arrays():
            if i != last:
                array[i, :n] = array[last, :n]
                array[:n, i] = array[:n, last]
            array[last, :n] = 0
            array[:n, last] = 0
        moved = self._names.pop()
        del self._index[name]
        self._where_cache.clear()  # indexes moved
        if i != last:
            self._names[i] = moved
            self._index[moved] = i
        self._names_view = None
        self._signal.bump()
        return True

    # -- updates ---------------------------------------------------------------------------

    def apply(self, cost: LinkCost, received_at: float | None = None) -> None:
        """Store ``cost`` as its link's latest, received at ``received_at`` (monotonic
        seconds; default now)."""
        self._store(cost, time.monotonic() if received_at is None else received_at)
        self._signal.bump()

    def _store(self, cost: LinkCost, received_at: float) -> None:
        index = self._index
        i = index.get(cost.src)
        if i is None:
            i = self._join(cost.src)
        j = index.get(cost.dst)
        if j is None:
            j = self._join(cost.dst)
        if self._shared:
            self._unshare()
        f = i * self._cap + j
        params, received, ts, samples, r2, min_kbit, max_kbit, valid = self._views
        fit, low, high = cost.r2, cost.min_kbit, cost.max_kbit
        if not (-_FLOAT32_MAX <= fit <= _FLOAT32_MAX and high <= _FLOAT32_MAX):
            fit, low, high = _clamp32(fit), _clamp32(low), _clamp32(high)  # saturate
        r2[f] = fit
        min_kbit[f] = low
        max_kbit[f] = high
        g = 3 * f
        params[g] = cost.a
        params[g + 1] = cost.b
        params[g + 2] = cost.c
        received[f] = received_at
        ts[f] = cost.ts
        count = cost.samples
        samples[f] = count if count < _INT32_MAX else _INT32_MAX
        if not valid[f]:
            valid[f] = True
            self._links += 1

    def apply_many(self, costs: Iterable[LinkCost], received_at: float | None = None) -> int:
        """Apply a batch (one version change); later entries for a link win. Returns its size."""
        batch = costs if isinstance(costs, list | tuple) else list(costs)
        if not batch:
            return 0
        # Stored one by one: building columns from objects costs more (measured at 8 to
        # 999 links: about 1 us per link here, 1.6-13 us through LinkBatch.from_costs).
        store, now = self._store, time.monotonic() if received_at is None else received_at
        for cost in batch:
            store(cost, now)
        self._signal.bump()
        return len(batch)

    def apply_batch(
        self, batch: LinkBatch, received_at: float | None = None, *, newer_only: bool = False
    ) -> int:
        """Apply a :class:`~jupiter_bus.batch.LinkBatch` column-wise, as one version change.

        Later entries for a link win. With ``newer_only``, a link whose held value is at
        least as new (producer's ``link_ts``) keeps it: a snapshot answer must not undo a
        live update. Returns the number of links stored.
        """
        if not len(batch):
            return 0
        known = len(self._names)
        where = self._where(batch.nodes)
        flat = where[batch.src] * self._cap + where[batch.dst]
        keep: npt.NDArray[np.intp] | slice = slice(None)
        if len(flat) > 1:
            # Keep the last update of each link (numpy leaves repeated assignment unordered).
            _, first_from_end = np.unique(flat[::-1], return_index=True)
            if len(first_from_end) != len(flat):
                keep = np.sort(len(flat) - 1 - first_from_end)
                flat = flat[keep]
        if newer_only:
            held = self._t.valid.reshape(-1)[flat] & (
                self._t.ts.reshape(-1)[flat] >= batch.link_ts[keep]
            )
            if held.any():
                wanted = np.flatnonzero(~held)
                keep = wanted if isinstance(keep, slice) else keep[wanted]
                flat = flat[wanted]
            if not len(flat):
                if len(self._names) != known:
                    self._signal.bump()  # the nodes joined all the same
                return 0
        if self._shared:
            self._unshare()  # holding no reference to the tables: they count
        t = self._t
        params = t.params.reshape(-1, 3)
        params[flat, 0] = batch.a[keep]
        params[flat, 1] = batch.b[keep]
        params[flat, 2] = batch.c[keep]
        t.received_at.reshape(-1)[flat] = time.monotonic() if received_at is None else received_at
        t.ts.reshape(-1)[flat] = batch.link_ts[keep]
        t.samples.reshape(-1)[flat] = np.minimum(batch.samples[keep], _INT32_MAX)
        t.r2.reshape(-1)[flat] = batch.r2[keep]
        t.min_kbit.reshape(-1)[flat] = batch.min_kbit[keep]
        t.max_kbit.reshape(-1)[flat] = batch.max_kbit[keep]
        valid = t.valid.reshape(-1)
        self._links += int(len(flat) - np.count_nonzero(valid[flat]))
        valid[flat] = True
        self._signal.bump()
        return len(flat)

    def _where(self, names: tuple[str, ...]) -> npt.NDArray[np.intp]:
        """Indexes of ``names`` (joining new ones); remembered per list, since every
        batch of a node repeats its list (until a node leaves and indexes move)."""
        where = self._where_cache.get(names)
        if where is not None:
            return where
        try:
            found: Any = itemgetter(*names)(self._index)  # one C call for all names
            if len(names) == 1:
                found = (found,)
        except KeyError:
            get, join = self._index.get, self._join
            found = [i if (i := get(name)) is not None else join(name) for name in names]
        where = np.array(found, dtype=np.intp)
        where.flags.writeable = False
        if len(self._where_cache) >= _WHERE_CACHE_MAX:
            self._where_cache.clear()
        self._where_cache[names] = where
        return where

    def held_ts(self, src: str, dst: str) -> float | None:
        """The producer's ``ts`` of the value held for ``src -> dst`` (``None``: none held)."""
        i, j = self._index.get(src), self._index.get(dst)
        if i is None or j is None:
            return None
        f = i * self._cap + j
        _, _, ts, _, _, _, _, valid = self._views
        return float(ts[f]) if valid[f] else None

    # -- reading ---------------------------------------------------------------------------

    def snapshot(self, *, max_age: float | None = None, now: float | None = None) -> NetworkData:
        """The current version as an immutable :class:`NetworkData`.

        With ``max_age`` (seconds), the snapshot's :attr:`NetworkData.stale` lists the
        links received longer ago than that (as of ``now``, default: now).
        """
        view = self._names_view
        if view is None:
            view = self._names_view = (tuple(self._names), MappingProxyType(dict(self._index)))
        self._shared = True
        return NetworkData(
            self._t,
            view[0],
            view[1],
            version=self._signal.version,
            link_count=self._links,
            max_age=max_age,
            taken_at=time.monotonic() if now is None else now,
        )


def _clamp32(value: float) -> float:
    return max(-_FLOAT32_MAX, min(_FLOAT32_MAX, value))
