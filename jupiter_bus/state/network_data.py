"""Snapshots of the network state: :class:`NetworkData` (one version) and :class:`LinkEntry`.

A snapshot's matrices are read-only numpy views of the arrays the state held at that
version (no copy); the state copies before its next change while a snapshot is alive.

Example::

    data = state.snapshot()
    data.cost_ms("n1", "n2", 8000.0), data.link("n1", "n2").age_seconds()
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from operator import attrgetter
from typing import TYPE_CHECKING, Any, Generic, Never, TypeAlias, TypeVar, overload

import numpy as np
import numpy.typing as npt

from .. import formats
from ..errors import UnknownLink, UnknownNode
from .coverage import EXAMPLES, Coverage, link_coverage
from .tables import Tables

__all__ = ["LinkEntry", "NetworkData", "NodeArray", "NodeRef"]

NodeRef: TypeAlias = str | int
"""A node by name, or by its index in one snapshot."""
NodeArray: TypeAlias = npt.NDArray[Any] | Sequence[int] | list[str] | tuple[str, ...]
"""Several nodes: an array or sequence of names or of indices."""

_D = TypeVar("_D", bound=np.generic)


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


class _Matrix(property, Generic[_D]):
    """A read-only property giving a snapshot's matrix: the first ``N x N`` of one of its
    tables (or one parameter of ``params``) as a read-only numpy view, typed by dtype."""

    def __init__(self, table: str, doc: str, parameter: int | None = None) -> None:
        get = attrgetter(table)

        def matrix(data: NetworkData) -> npt.NDArray[_D]:
            return data._view(get(data._t))

        def one_parameter(data: NetworkData) -> npt.NDArray[_D]:
            return data._view(get(data._t))[:, :, parameter]

        # A property underneath: reads cost what a hand-written property costs.
        super().__init__(matrix if parameter is None else one_parameter)
        self.__doc__ = doc  # on the instance: the class's own docstring would shadow doc=

    if TYPE_CHECKING:

        @overload
        def __get__(self, data: None, owner: type[Any] | None = None) -> _Matrix[_D]: ...
        @overload
        def __get__(self, data: NetworkData, owner: type[Any] | None = None) -> npt.NDArray[_D]: ...
        def __get__(
            self, data: NetworkData | None, owner: type[Any] | None = None
        ) -> _Matrix[_D] | npt.NDArray[_D]: ...
        def __set__(self, data: NetworkData, value: Never) -> None: ...


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
        tables: Tables,
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

    params = _Matrix[np.float64]("params", "``(N, N, 3)``: ``a, b, c`` of each link.")
    a = _Matrix[np.float64]("params", "``(N, N)``: quadratic coefficient, ms per Kbit².", 0)
    b = _Matrix[np.float64]("params", "``(N, N)``: linear coefficient, ms per Kbit.", 1)
    c = _Matrix[np.float64]("params", "``(N, N)``: constant term, ms.", 2)
    received_at = _Matrix[np.float64](
        "received_at", "``(N, N)``: when this process received each link (``time.monotonic()``)."
    )
    ts = _Matrix[np.float64](
        "ts", "``(N, N)``: the producer's ``ts`` (UTC epoch seconds, its clock)."
    )
    samples = _Matrix[np.int32]("samples", "``(N, N)``: probes each fit used.")
    r2 = _Matrix[np.float32]("r2", "``(N, N)``: R² of each fit.")
    min_kbit = _Matrix[np.float32]("min_kbit", "``(N, N)``: low end of each fitted range, Kbit.")
    max_kbit = _Matrix[np.float32]("max_kbit", "``(N, N)``: high end of each fitted range, Kbit.")
    valid = _Matrix[np.bool_]("valid", "``(N, N)``: whether each link has a cost.")

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
            raise UnknownLink(f"no cost received for link {self.nodes[i]}->{self.nodes[j]}")
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
        limit: int = EXAMPLES,
    ) -> Coverage:
        """How much of the requested links this snapshot holds (see :class:`Coverage`).

        ``nodes`` requests every ordered link between two of them; ``links`` lists
        ``(src, dst)`` pairs; with neither, every link held is requested. Self-links
        are never requested.
        """
        if nodes is None and links is None and max_age is None:
            return Coverage(requested=self.link_count)  # the common case, in O(1)
        stale = None if max_age is None else self.stale_mask(max_age, now)
        return link_coverage(
            self.nodes, self._index, self.valid, stale, nodes=nodes, links=links, limit=limit
        )

    # -- Jupiter's formats -----------------------------------------------------------------

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
        return formats.heft_rows(self, home, ips)

    def wave(
        self, source: str, ips: Mapping[str, str] | None = None, *, home: str | None = "home"
    ) -> dict[str, dict[str, float | str]]:
        """WAVE's view of ``source``'s outgoing links: ``{dst: {"a", "b", "c", "ip"}}``.

        Links to ``home`` are left out; a node missing from ``ips`` gets its name as ip.

        Example::

            data.wave("n1", ips)  # {'n2': {'a': 0.0, 'b': 0.002, 'c': 40.0, 'ip': '10.0.0.2'}}
        """
        return formats.wave(self, source, ips, home=home)

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
        return formats.tgff_quadratic(self, home)
