"""Live state: the latest link costs and resource samples, held for scale and read as snapshots.

- :class:`NetworkState` keeps every link's cost model in numpy arrays indexed by node
  (``N x N x 3`` parameters ``a, b, c`` plus receipt time, producer ``ts``, samples, R²,
  fitted range and a valid mask). Nodes get an index when first heard of; capacity
  doubles as nodes join; a node that leaves is swapped out so indices stay dense.
- :class:`ResourceState` keeps the latest :class:`~jupiter_bus.messages.ResourceSample`
  per node.
- Readers take snapshots (:class:`NetworkData`, :class:`ResourceData`): immutable views of
  one version, never a half-applied update. Taking one costs microseconds: the state hands
  out its current arrays and copies them before its next change only if a snapshot (or an
  array taken from one) is still alive (copy-on-write).
- Staleness is judged by when *this process* received a value (``time.monotonic()``),
  never by the producer's clock; the producer's ``ts`` is kept alongside.
- Each state counts its changes (``version``); ``await state.wait_changed(version)`` wakes
  when data arrives (no polling).

Example::

    >>> state = NetworkState()
    >>> state.apply(LinkCost(src="n1", dst="n2", a=0.0, b=0.002, c=40.0, samples=10,
    ...                      r2=0.99, min_kbit=8.0, max_kbit=80000.0), received_at=1.0)
    >>> data = state.snapshot()
    >>> data.nodes, data.cost_ms("n1", "n2", 1000.0)
    (('n1', 'n2'), 42.0)
    >>> data.heft_rows(ips={"n1": "10.0.0.1", "n2": "10.0.0.2"})
    [['n1', '10.0.0.1', 'n2', '10.0.0.2', '0.0 0.002 40.0']]
"""

from __future__ import annotations

import asyncio
import itertools
import sys
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from operator import itemgetter
from types import MappingProxyType
from typing import Any, Final, TypeAlias, overload

import numpy as np
import numpy.typing as npt
import orjson

from .batch import LinkBatch
from .errors import StaleState, StateError, StateUnavailable, UnknownLink, UnknownNode
from .messages import LinkCost, ResourceSample
from .topology import check_node

__all__ = [
    "ChangeSignal",
    "Coverage",
    "LinkEntry",
    "NetworkData",
    "NetworkState",
    "NodeArray",
    "NodeRef",
    "ResourceData",
    "ResourceState",
    "StaleState",
    "StateError",
    "StateUnavailable",
    "UnknownLink",
    "UnknownNode",
    "format_abc",
    "format_last_update",
]

NodeRef: TypeAlias = str | int
"""A node by name, or by its index in one snapshot."""
NodeArray: TypeAlias = npt.NDArray[Any] | Sequence[int] | list[str] | tuple[str, ...]
"""Several nodes: an array or sequence of names or of indices."""

_INT32_MAX: Final = 2**31 - 1
_FLOAT32_MAX: Final = float(np.finfo(np.float32).max)
_MIN_CAPACITY: Final = 8
_EXAMPLES: Final = 20
# Copy-on-write decides by reference counts whether a snapshot is still alive; elsewhere
# than CPython every change after a snapshot copies (always correct, just slower).
_REFCOUNT_COW: Final = sys.implementation.name == "cpython"


# -- change notification -------------------------------------------------------------------


class ChangeSignal:
    """Counts changes and wakes coroutines waiting for the next one: an ``asyncio.Event``
    that remembers how often it fired, so a waiter never misses a change.

    Example::

        seen = signal.version
        ...                                    # read the state
        seen = await signal.wait_changed(seen, timeout=5.0)
    """

    __slots__ = ("_failure", "_waiters", "version")

    def __init__(self) -> None:
        self.version = 0
        self._waiters: list[asyncio.Future[int]] = []
        self._failure: BaseException | None = None

    def bump(self) -> None:
        """Record one change and wake the waiters."""
        self.version += 1
        if self._waiters:
            waiters, self._waiters = self._waiters, []
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(self.version)

    def fail(self, error: BaseException) -> None:
        """Make current and future waits raise ``error`` (the feed behind the state is gone)."""
        self._failure = error
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_exception(error)

    async def wait_changed(self, since: int, timeout: float | None = None) -> int:
        """Return the current version once it differs from ``since``.

        Returns at once when a change happened already; raises :class:`TimeoutError`
        after ``timeout`` seconds without one.
        """
        if self._failure is not None:
            raise self._failure
        if self.version != since:
            return self.version
        waiter: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            async with asyncio.timeout(timeout):
                return await waiter
        finally:
            if not waiter.done():
                waiter.cancel()
            if waiter in self._waiters:
                self._waiters.remove(waiter)


# -- formatting ----------------------------------------------------------------------------

_MONTHS: Final = (
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
)


def format_last_update(ts: float) -> str:
    """Jupiter's ``last_update``: ``%B %d %Y - %H:%M:%S`` in UTC, English month names
    whatever the locale.

    Example::

        >>> format_last_update(1795680100.9)
        'November 26 2026 - 08:01:40'
    """
    moment = datetime.fromtimestamp(ts, UTC)
    return f"{_MONTHS[moment.month - 1]} {moment:%d %Y - %H:%M:%S}"


# orjson writes the same shortest round-trip digits as Python's repr() about 30x faster;
# only the notation differs: a one-digit exponent ("e-7", Python "e-07") and values in
# [1e-5, 1e-4), which orjson writes positionally and Python in exponent form.
_REPR_CACHE: dict[float, str] = {}
_REPR_CACHE_MAX: Final = 1 << 16


def _repr_cached(value: float) -> str:
    text = _REPR_CACHE.get(value)
    if text is None:
        if len(_REPR_CACHE) >= _REPR_CACHE_MAX:
            _REPR_CACHE.clear()
        text = _REPR_CACHE[value] = repr(value)
    return text


def _format_rows_fast(params: npt.NDArray[np.float64]) -> list[str]:
    text = orjson.dumps(params, option=orjson.OPT_SERIALIZE_NUMPY).decode()
    # Every "e-" starts an exponent; a one-digit one ("e-7,") is followed by "," or "]".
    parts = text.split("e-")
    text = "e-".join([parts[0]] + [("0" + p if p[1] in ",]" else p) for p in parts[1:]])
    rows = text[2:-2].replace(",", " ").split("] [")
    magnitude = np.abs(params)
    odd = ((magnitude >= 1e-5) & (magnitude < 1e-4)).any(axis=1)
    for k in np.flatnonzero(odd).tolist():
        rows[k] = " ".join(map(_repr_cached, params[k].tolist()))
    return rows


def _format_rows_slow(params: npt.NDArray[np.float64]) -> list[str]:
    return [" ".join(map(repr, row)) for row in params.tolist()]


def _fast_format_agrees() -> bool:
    """Check the orjson shortcut against repr() at every notation boundary (at import)."""
    probe = [
        v * s
        for e in range(-12, 20)
        for v in (10.0**e, 9.999999999999998 * 10.0**e, 1.2345678901234567 * 10.0**e)
        for s in (1.0, -1.0)
    ]
    probe += [0.0, -0.0, 5e-324, 1.7976931348623157e308, 0.1, 1.0, 100.0, 1e22, 1e-300]
    while len(probe) % 3:
        probe.append(1.5)
    params = np.array(probe, dtype=np.float64).reshape(-1, 3)
    try:
        return _format_rows_fast(params) == _format_rows_slow(params)
    except Exception:
        return False


_FAST_FORMAT: Final = _fast_format_agrees()


def format_abc(params: npt.NDArray[np.float64]) -> list[str]:
    """Each row ``(a, b, c)`` of ``params`` as Jupiter's ``"a b c"`` (Python ``repr`` digits)."""
    params = np.ascontiguousarray(params, dtype=np.float64).reshape(-1, 3)
    if len(params) == 0:
        return []
    return _format_rows_fast(params) if _FAST_FORMAT else _format_rows_slow(params)


# -- network state --------------------------------------------------------------------------


class _Tables:
    """The arrays of one version of the network state, at some capacity."""

    __slots__ = (
        "cap",
        "max_kbit",
        "min_kbit",
        "params",
        "r2",
        "received_at",
        "samples",
        "ts",
        "valid",
    )

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.params = np.zeros((cap, cap, 3), dtype=np.float64)
        self.received_at = np.zeros((cap, cap), dtype=np.float64)
        self.ts = np.zeros((cap, cap), dtype=np.float64)
        self.samples = np.zeros((cap, cap), dtype=np.int32)
        self.r2 = np.zeros((cap, cap), dtype=np.float32)
        self.min_kbit = np.zeros((cap, cap), dtype=np.float32)
        self.max_kbit = np.zeros((cap, cap), dtype=np.float32)
        self.valid = np.zeros((cap, cap), dtype=np.bool_)

    def arrays(self) -> tuple[npt.NDArray[Any], ...]:
        return (
            self.params,
            self.received_at,
            self.ts,
            self.samples,
            self.r2,
            self.min_kbit,
            self.max_kbit,
            self.valid,
        )

    def copy(self, n: int, cap: int | None = None) -> _Tables:
        """A copy holding the first ``n`` nodes, at capacity ``cap`` (default: the same)."""
        new = _Tables(self.cap if cap is None else cap)
        for old_array, new_array in zip(self.arrays(), new.arrays(), strict=True):
            new_array[:n, :n] = old_array[:n, :n]
        return new

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in self.arrays())


def _refcounts(t: _Tables) -> tuple[int, ...]:
    return (
        sys.getrefcount(t),
        sys.getrefcount(t.params),
        sys.getrefcount(t.received_at),
        sys.getrefcount(t.ts),
        sys.getrefcount(t.samples),
        sys.getrefcount(t.r2),
        sys.getrefcount(t.min_kbit),
        sys.getrefcount(t.max_kbit),
        sys.getrefcount(t.valid),
    )


def _flat_view(array: npt.NDArray[Any], code: str) -> Any:
    # Stores through a memoryview cost a third of numpy's scalar __setitem__.
    exporter: Any = array  # numpy exports the buffer protocol; its stubs do not say so
    flat: Any = memoryview(exporter).cast("B")
    return flat.cast(code)


_WHERE_CACHE_MAX: Final = 64  # distinct node lists whose indexes a state remembers


class NetworkState:
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
        self._signal = ChangeSignal()
        self._set_tables(_Tables(max(_MIN_CAPACITY, int(capacity))))

    def _set_tables(self, tables: _Tables) -> None:
        self._t = tables
        self._cap = tables.cap
        self._views = (
            _flat_view(tables.params, "d"),
            _flat_view(tables.received_at, "d"),
            _flat_view(tables.ts, "d"),
            _flat_view(tables.samples, "i"),
            _flat_view(tables.r2, "f"),
            _flat_view(tables.min_kbit, "f"),
            _flat_view(tables.max_kbit, "f"),
            _flat_view(tables.valid, "?"),
        )
        del tables
        self._shared = False
        # References the state itself holds: anything above these is a live snapshot.
        self._baseline = self._measure()

    def _measure(self) -> tuple[int, ...]:
        return _refcounts(self._t)

    def _unshare(self) -> None:
        """Before a change: copy the arrays if a snapshot of this version is still alive."""
        if _REFCOUNT_COW and self._measure() == self._baseline:
            self._shared = False
            return
        self._set_tables(self._t.copy(len(self._names)))

    # -- properties ----------------------------------------------------------------------

    @property
    def version(self) -> int:
        """Number of changes applied so far."""
        return self._signal.version

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

    async def wait_changed(self, since: int, timeout: float | None = None) -> int:
        """Wait until the version differs from ``since``; return the new version."""
        return await self._signal.wait_changed(since, timeout)

    def fail_waiters(self, error: BaseException) -> None:
        """Make every current and later :meth:`wait_changed` raise ``error``."""
        self._signal.fail(error)


def _clamp32(value: float) -> float:
    return max(-_FLOAT32_MAX, min(_FLOAT32_MAX, value))


@dataclass(frozen=True, slots=True)
class LinkEntry:
    """One link's cost as held in a snapshot.

    Example::

        entry = data.link("n1", "n2")
        entry.cost_ms(8000.0), entry.age_seconds()
    """

    src: str
    dst: str
    a: float
    b: float
    c: float
    received_at: float
    """When this process received it: ``time.monotonic()`` seconds."""
    ts: float
    """When the producer made it: UTC epoch seconds, the producer's clock."""
    samples: int
    r2: float
    min_kbit: float
    max_kbit: float

    def cost_ms(self, size_kbit: float) -> float:
        """Predicted transfer time in ms of ``size_kbit`` Kbit (``a*x**2 + b*x + c``)."""
        return (self.a * size_kbit + self.b) * size_kbit + self.c

    def age_seconds(self, now: float | None = None) -> float:
        """Seconds since this process received it."""
        return (time.monotonic() if now is None else now) - self.received_at


@dataclass(frozen=True, slots=True)
class Coverage:
    """How much of a requested set of links (or nodes) a snapshot holds.

    ``requested`` counts the entries asked for (with nothing listed: every entry held);
    ``missing`` those absent and ``stale`` those older than ``max_age``; the
    ``*_examples`` name a few of each (``src->dst`` for links) and ``unknown_nodes``
    the listed nodes never heard of.

    Example::

        cov = data.coverage(nodes=["n1", "n2", "n3"], max_age=60)
        if cov.missing:
            print(cov.missing_examples)
    """

    requested: int
    missing: int = 0
    stale: int = 0
    missing_examples: tuple[str, ...] = ()
    stale_examples: tuple[str, ...] = ()
    unknown_nodes: tuple[str, ...] = ()

    @property
    def fresh(self) -> int:
        """Entries present and not stale."""
        return self.requested - self.missing - self.stale

    @property
    def complete(self) -> bool:
        """Something was requested and all of it is present (stale or not)."""
        return self.requested > 0 and self.missing == 0


def _pair(names: Sequence[str], i: int, j: int) -> str:
    return f"{names[i]}->{names[j]}"


@dataclass(slots=True)
class _Wanted:
    """Links a reader asked for: a mask over known nodes, and those naming unknown ones."""

    mask: npt.NDArray[np.bool_]
    absent: int = 0
    absent_examples: list[str] = field(default_factory=list)
    unknown: dict[str, None] = field(default_factory=dict)


class NetworkData:
    """An immutable snapshot of the network state (one version).

    Nodes have indices ``0..len(nodes)-1`` into the matrices (meaningful within this
    snapshot only). Matrices are read-only numpy views; a link without a cost has
    ``valid`` false (and zeros elsewhere).

    Example::

        data = await bus.get_network_data()
        i, j = data.index("n1"), data.index("n2")
        data.a[i, j], data.valid[i, j]
        data.cost_ms("n1", ["n2", "n3"], 8000.0)          # array of 2 costs, ms
        data.cost_ms("n1", "n2", np.array([8.0, 80.0]))  # array of 2 costs, ms
    """

    __slots__ = (
        "_index",
        "_n",
        "_stale",
        "_t",
        "link_count",
        "max_age",
        "nodes",
        "taken_at",
        "version",
    )

    def __init__(
        self,
        tables: _Tables,
        nodes: tuple[str, ...],
        index: Mapping[str, int],
        *,
        version: int,
        link_count: int,
        max_age: float | None,
        taken_at: float,
    ) -> None:
        self._t = tables
        self._n = len(nodes)
        self._index = index
        self._stale: tuple[tuple[str, str], ...] | None = None
        self.nodes = nodes
        """Node names, in index order."""
        self.version = version
        """The state version this snapshot shows."""
        self.link_count = link_count
        """Number of links with a cost."""
        self.max_age = max_age
        """The ``max_age`` the snapshot was taken with (``None``: staleness not judged)."""
        self.taken_at = taken_at
        """When it was taken: ``time.monotonic()`` seconds."""

    def __repr__(self) -> str:
        return (
            f"<NetworkData version={self.version} nodes={self._n} links={self.link_count}"
            f"{'' if self.max_age is None else f' stale={len(self.stale)}'}>"
        )

    def __len__(self) -> int:
        return self._n

    def __contains__(self, name: object) -> bool:
        return name in self._index

    def index(self, name: str) -> int:
        """The index of node ``name``; raises :class:`UnknownNode`."""
        i = self._index.get(name)
        if i is None:
            raise UnknownNode(f"no network data for node {name!r}")
        return i

    # -- matrices --------------------------------------------------------------------------

    def _view(self, array: npt.NDArray[Any]) -> npt.NDArray[Any]:
        n = self._n
        view = array[:n, :n]
        view.flags.writeable = False
        return view

    @property
    def params(self) -> npt.NDArray[np.float64]:
        """``(N, N, 3)``: ``a, b, c`` of each link."""
        return self._view(self._t.params)

    @property
    def a(self) -> npt.NDArray[np.float64]:
        """``(N, N)``: quadratic coefficient, ms per Kbit²."""
        return self.params[:, :, 0]

    @property
    def b(self) -> npt.NDArray[np.float64]:
        """``(N, N)``: linear coefficient, ms per Kbit."""
        return self.params[:, :, 1]

    @property
    def c(self) -> npt.NDArray[np.float64]:
        """``(N, N)``: constant term, ms."""
        return self.params[:, :, 2]

    @property
    def received_at(self) -> npt.NDArray[np.float64]:
        """``(N, N)``: when this process received each link (``time.monotonic()``)."""
        return self._view(self._t.received_at)

    @property
    def ts(self) -> npt.NDArray[np.float64]:
        """``(N, N)``: the producer's ``ts`` (UTC epoch seconds, its clock)."""
        return self._view(self._t.ts)

    @property
    def samples(self) -> npt.NDArray[np.int32]:
        """``(N, N)``: probes each fit used."""
        return self._view(self._t.samples)

    @property
    def r2(self) -> npt.NDArray[np.float32]:
        """``(N, N)``: R² of each fit."""
        return self._view(self._t.r2)

    @property
    def min_kbit(self) -> npt.NDArray[np.float32]:
        """``(N, N)``: low end of each fitted range, Kbit."""
        return self._view(self._t.min_kbit)

    @property
    def max_kbit(self) -> npt.NDArray[np.float32]:
        """``(N, N)``: high end of each fitted range, Kbit."""
        return self._view(self._t.max_kbit)

    @property
    def valid(self) -> npt.NDArray[np.bool_]:
        """``(N, N)``: whether each link has a cost."""
        return self._view(self._t.valid)

    # -- links -----------------------------------------------------------------------------

    def _resolve(self, ref: NodeRef | NodeArray) -> Any:
        if isinstance(ref, str):
            return self.index(ref)
        if isinstance(ref, int | np.integer):
            i = int(ref)
            if not 0 <= i < self._n:
                raise UnknownNode(f"node index {i} is out of range (0..{self._n - 1})")
            return i
        array = np.asarray(ref)
        if array.dtype.kind in "USO":
            flat = [self.index(str(name)) for name in array.ravel().tolist()]
            return np.array(flat, dtype=np.intp).reshape(array.shape)
        if array.dtype.kind in "iu":
            if array.size and (array.min() < 0 or array.max() >= self._n):
                raise UnknownNode(f"node indices must lie in 0..{self._n - 1}")
            return array.astype(np.intp, copy=False)
        raise TypeError(f"nodes must be names or integer indices, not {array.dtype}")

    def has_link(self, src: NodeRef, dst: NodeRef) -> bool:
        """Whether the link ``src -> dst`` has a cost."""
        try:
            return bool(self._t.valid[self._resolve(src), self._resolve(dst)])
        except UnknownNode:
            return False

    def link(self, src: NodeRef, dst: NodeRef) -> LinkEntry:
        """The cost of ``src -> dst``; raises :class:`UnknownLink` when it has none."""
        i, j = self._resolve(src), self._resolve(dst)
        t = self._t
        if not t.valid[i, j]:
            raise UnknownLink(f"no cost received for link {_pair(self.nodes, i, j)}")
        return self._entry(i, j)

    def _entry(self, i: int, j: int) -> LinkEntry:
        t = self._t
        a, b, c = t.params[i, j].tolist()
        return LinkEntry(
            src=self.nodes[i],
            dst=self.nodes[j],
            a=a,
            b=b,
            c=c,
            received_at=float(t.received_at[i, j]),
            ts=float(t.ts[i, j]),
            samples=int(t.samples[i, j]),
            r2=float(t.r2[i, j]),
            min_kbit=float(t.min_kbit[i, j]),
            max_kbit=float(t.max_kbit[i, j]),
        )

    def links(self) -> Iterator[LinkEntry]:
        """Every link with a cost, row by row (source index, then destination index)."""
        rows, cols = np.nonzero(self.valid)
        for i, j in zip(rows.tolist(), cols.tolist(), strict=True):
            yield self._entry(i, j)

    @overload
    def cost_ms(  # type: ignore[overload-overlap]
        self, src: NodeRef, dst: NodeRef, size_kbit: float, *, same_node: float | None = None
    ) -> float: ...
    @overload
    def cost_ms(
        self,
        src: NodeRef | NodeArray,
        dst: NodeRef | NodeArray,
        size_kbit: float | npt.ArrayLike,
        *,
        same_node: float | None = None,
    ) -> npt.NDArray[np.float64]: ...
    def cost_ms(
        self,
        src: NodeRef | NodeArray,
        dst: NodeRef | NodeArray,
        size_kbit: float | npt.ArrayLike,
        *,
        same_node: float | None = None,
    ) -> float | npt.NDArray[np.float64]:
        """Predicted time in ms to send ``size_kbit`` Kbit over ``src -> dst``.

        Vectorised with numpy broadcasting over sources, destinations (names or indices)
        and sizes; a link without a cost gives ``nan``. Scalars in, a float out. With
        ``same_node`` (e.g. ``0.0``, as Jupiter's HEFT counts data that stays on a
        node), that value stands wherever ``src`` and ``dst`` are the same node.

        Example::

            data.cost_ms("n1", "n2", 8000.0)                  # float
            data.cost_ms("n1", "n2", sizes)                   # one per size
            data.cost_ms(["n1", "n1"], ["n2", "n3"], 8000.0)  # one per link
            data.cost_ms(0, np.arange(len(data)), sizes[:, None])  # sizes x dests
            data.cost_ms(names[:, None], names, 8000.0, same_node=0.0)  # N x N, 0 diagonal
        """
        i, j = self._resolve(src), self._resolve(dst)
        t = self._t
        x = np.asarray(size_kbit, dtype=np.float64)
        p = t.params[i, j]
        cost = (p[..., 0] * x + p[..., 1]) * x + p[..., 2]
        valid = t.valid[i, j]
        if not np.all(valid):
            cost = np.where(valid, cost, np.nan)
        if same_node is not None:
            cost = np.where(np.equal(i, j), same_node, cost)
        if np.ndim(cost) == 0:
            return float(cost)
        return np.asarray(cost, dtype=np.float64)

    @overload
    def age_seconds(  # type: ignore[overload-overlap]
        self, src: NodeRef, dst: NodeRef, now: float | None = None
    ) -> float: ...
    @overload
    def age_seconds(
        self, src: NodeRef | NodeArray, dst: NodeRef | NodeArray, now: float | None = None
    ) -> npt.NDArray[np.float64]: ...
    def age_seconds(
        self, src: NodeRef | NodeArray, dst: NodeRef | NodeArray, now: float | None = None
    ) -> float | npt.NDArray[np.float64]:
        """Seconds since this process received each link (``inf`` without a cost)."""
        i, j = self._resolve(src), self._resolve(dst)
        t = self._t
        moment = time.monotonic() if now is None else now
        age = np.where(t.valid[i, j], moment - t.received_at[i, j], np.inf)
        if np.ndim(age) == 0:
            return float(age)
        return np.asarray(age, dtype=np.float64)

    def stale_mask(self, max_age: float, now: float | None = None) -> npt.NDArray[np.bool_]:
        """``(N, N)``: links with a cost received more than ``max_age`` seconds ago."""
        moment = time.monotonic() if now is None else now
        return self.valid & (self.received_at < moment - max_age)

    def stale_links(self, max_age: float, now: float | None = None) -> tuple[tuple[str, str], ...]:
        """``(src, dst)`` of the links received more than ``max_age`` seconds ago."""
        rows, cols = np.nonzero(self.stale_mask(max_age, now))
        names = self.nodes
        return tuple(
            (names[i], names[j]) for i, j in zip(rows.tolist(), cols.tolist(), strict=True)
        )

    @property
    def stale(self) -> tuple[tuple[str, str], ...]:
        """Links older than the snapshot's ``max_age`` when it was taken (empty without one)."""
        if self.max_age is None:
            return ()
        if self._stale is None:
            self._stale = self.stale_links(self.max_age, self.taken_at)
        return self._stale

    def coverage(
        self,
        *,
        nodes: Iterable[str] | None = None,
        links: Iterable[tuple[str, str]] | None = None,
        max_age: float | None = None,
        now: float | None = None,
        limit: int = _EXAMPLES,
    ) -> Coverage:
        """How much of the requested links this snapshot holds (see :class:`Coverage`).

        ``nodes`` requests every ordered link between two of them; ``links`` lists
        ``(src, dst)`` pairs; with neither, every link held is requested. Self-links
        are never requested.
        """
        if nodes is None and links is None and max_age is None:
            return Coverage(requested=self.link_count)  # the common case, in O(1)
        valid = self.valid
        if nodes is None and links is None:
            wanted = _Wanted(valid)
        else:
            wanted = self._wanted(nodes, links, limit)
        missing_mask = wanted.mask & ~valid
        missing = int(np.count_nonzero(missing_mask))
        examples = wanted.absent_examples[:limit]
        examples += self._pairs(missing_mask, limit - len(examples))
        stale = 0
        stale_examples: list[str] = []
        if max_age is not None:
            stale_mask = wanted.mask & self.stale_mask(max_age, now)
            stale = int(np.count_nonzero(stale_mask))
            stale_examples = self._pairs(stale_mask, limit)
        return Coverage(
            requested=int(np.count_nonzero(wanted.mask)) + wanted.absent,
            missing=missing + wanted.absent,
            stale=stale,
            missing_examples=tuple(examples),
            stale_examples=tuple(stale_examples),
            unknown_nodes=tuple(wanted.unknown),
        )

    def _pairs(self, mask: npt.NDArray[np.bool_], limit: int) -> list[str]:
        """``src->dst`` of the first ``limit`` links set in ``mask``."""
        if limit <= 0:
            return []
        rows, cols = np.nonzero(mask)
        return [
            _pair(self.nodes, i, j)
            for i, j in zip(rows[:limit].tolist(), cols[:limit].tolist(), strict=True)
        ]

    def _wanted(
        self,
        nodes: Iterable[str] | None,
        links: Iterable[tuple[str, str]] | None,
        limit: int,
    ) -> _Wanted:
        """The links requested by ``nodes`` (all pairs) and ``links``, as a mask over the
        known nodes plus a count of those naming nodes never heard of."""
        index = self._index
        wanted = _Wanted(np.zeros((self._n, self._n), dtype=np.bool_))
        if nodes is not None:
            listed = list(dict.fromkeys(nodes))
            known = np.array([index[x] for x in listed if x in index], dtype=np.intp)
            wanted.mask[np.ix_(known, known)] = True
            wanted.unknown.update((x, None) for x in listed if x not in index)
            wanted.absent += len(listed) * (len(listed) - 1) - len(known) * (len(known) - 1)
            if wanted.unknown:  # all known: nothing absent, and no N^2 walk to find that
                absent_pairs = (
                    f"{src}->{dst}"
                    for src in listed
                    for dst in listed
                    if src != dst and (src in wanted.unknown or dst in wanted.unknown)
                )
                wanted.absent_examples += itertools.islice(absent_pairs, limit)
        for src, dst in dict.fromkeys(links or ()):
            i, j = index.get(src), index.get(dst)
            if i is not None and j is not None:
                wanted.mask[i, j] = True
                continue
            wanted.unknown.update((x, None) for x in (src, dst) if x not in index)
            if src != dst:
                wanted.absent += 1
                wanted.absent_examples.append(f"{src}->{dst}")
        np.fill_diagonal(wanted.mask, False)
        return wanted

    # -- Jupiter's formats -----------------------------------------------------------------

    def _jupiter_links(
        self, home: str | None
    ) -> tuple[list[int], list[int], npt.NDArray[np.float64]]:
        """Valid links without self-links and links to or from ``home``, ordered by
        source name then destination name."""
        mask = self.valid.copy()
        np.fill_diagonal(mask, False)
        h = self._index.get(home) if home is not None else None
        if h is not None:
            mask[h, :] = False
            mask[:, h] = False
        rows, cols = np.nonzero(mask)
        rank = np.empty(self._n, dtype=np.intp)
        rank[np.argsort(np.array(self.nodes, dtype=object), kind="stable")] = np.arange(self._n)
        order = np.lexsort((rank[cols], rank[rows]))
        rows, cols = rows[order], cols[order]
        return rows.tolist(), cols.tolist(), self._t.params[rows, cols]

    def heft_rows(
        self, home: str | None = "home", ips: Mapping[str, str] | None = None
    ) -> list[list[str]]:
        """HEFT's network rows ``[src_name, src_ip, dst_name, dst_ip, "a b c"]``.

        Links to or from ``home`` are left out, as HEFT expects; a node missing from
        ``ips`` is given its name as address. Rows are sorted by source then
        destination name; numbers are written as Python's ``repr`` writes them.

        Example::

            >>> data.heft_rows(ips={"n1": "10.0.0.1", "n2": "10.0.0.2"})  # doctest: +SKIP
            [['n1', '10.0.0.1', 'n2', '10.0.0.2', '0.0 0.002 40.0']]
        """
        rows, cols, params = self._jupiter_links(home)
        names = self.nodes
        addresses = [ips.get(x, x) for x in names] if ips else list(names)
        return [
            [names[i], addresses[i], names[j], addresses[j], text]
            for i, j, text in zip(rows, cols, format_abc(params), strict=True)
        ]

    def wave(
        self, source: str, ips: Mapping[str, str] | None = None, *, home: str | None = "home"
    ) -> dict[str, dict[str, float | str]]:
        """WAVE's view of ``source``'s outgoing links: ``{dst: {"a", "b", "c", "ip"}}``.

        Links to ``home`` are left out; a node missing from ``ips`` gets its name as ip.

        Example::

            data.wave("n1", ips)  # {'n2': {'a': 0.0, 'b': 0.002, 'c': 40.0, 'ip': '10.0.0.2'}}
        """
        i = self.index(source)
        row = self.valid[i].copy()
        row[i] = False
        h = self._index.get(home) if home is not None else None
        if h is not None:
            row[h] = False
        cols = np.flatnonzero(row).tolist()
        params = self._t.params[i, cols].tolist()
        names = self.nodes
        result: dict[str, dict[str, float | str]] = {}
        for j, (a, b, c) in zip(cols, params, strict=True):
            name = names[j]
            result[name] = {"a": a, "b": b, "c": c, "ip": ips.get(name, name) if ips else name}
        return result

    def tgff_quadratic(self, home: str | None = "home") -> str:
        """The ``@quadratic 0 {`` section of HEFT's TGFF input.

        A comment line ``# Source Destination a b c``, then one row per directed link
        (links to ``home`` left out, sorted like :meth:`heft_rows`): two spaces, then
        ``src<TAB>dst<TAB>a b c``; closed by ``}``. Every line ends with a newline.

        Example::

            >>> print(data.tgff_quadratic(), end="")  # doctest: +SKIP
            @quadratic 0 {
            # Source Destination a b c
              n1	n2	0.0 0.002 40.0
            }
        """
        rows, cols, params = self._jupiter_links(home)
        names = self.nodes
        body = "".join(
            [
                f"  {names[i]}\t{names[j]}\t{text}\n"
                for i, j, text in zip(rows, cols, format_abc(params), strict=True)
            ]
        )
        return f"@quadratic 0 {{\n# Source Destination a b c\n{body}}}\n"


# -- resource state -------------------------------------------------------------------------


class ResourceState:
    """The latest :class:`~jupiter_bus.messages.ResourceSample` of each node.

    Example::

        state = ResourceState()
        state.apply(sample)
        state.snapshot().to_jupiter()
    """

    def __init__(self) -> None:
        self._entries: dict[str, tuple[ResourceSample, float]] = {}
        self._shared = False
        self._signal = ChangeSignal()

    @property
    def version(self) -> int:
        """Number of changes applied so far."""
        return self._signal.version

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

    async def wait_changed(self, since: int, timeout: float | None = None) -> int:
        """Wait until the version differs from ``since``; return the new version."""
        return await self._signal.wait_changed(since, timeout)

    def fail_waiters(self, error: BaseException) -> None:
        """Make every current and later :meth:`wait_changed` raise ``error``."""
        self._signal.fail(error)


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
        limit: int = _EXAMPLES,
    ) -> Coverage:
        """How much of the requested nodes (default: all held) this snapshot holds."""
        wanted = list(self._entries) if nodes is None else list(dict.fromkeys(nodes))
        missing = [x for x in wanted if x not in self._entries]
        stale: list[str] = []
        if max_age is not None:
            limit_at = (time.monotonic() if now is None else now) - max_age
            stale = [x for x in wanted if x in self._entries and self._entries[x][1] < limit_at]
        return Coverage(
            requested=len(wanted),
            missing=len(missing),
            stale=len(stale),
            missing_examples=tuple(missing[:limit]),
            stale_examples=tuple(stale[:limit]),
            unknown_nodes=tuple(missing),
        )

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
        return {
            node: {
                "cpu": s.cpu_percent,
                "memory": s.memory_percent,
                "last_update": format_last_update(s.ts),
            }
            for node, (s, _) in self._entries.items()
        }
