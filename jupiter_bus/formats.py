"""Jupiter's data formats, written from a snapshot: pure functions, no state of their own.

- :func:`heft_rows`: HEFT's ``network_log.txt`` rows ``[src_name, src_ip, dst_name,
  dst_ip, "a b c"]``;
- :func:`wave`: WAVE's ``{dest_name: {"a", "b", "c", "ip"}}`` for one node's outgoing links;
- :func:`tgff_quadratic`: the ``@quadratic 0 {`` section of HEFT's TGFF input;
- :func:`jupiter_resources`: ``{node: {"cpu", "memory", "last_update"}}``;
- :func:`format_abc` and :func:`format_last_update`: the numbers and dates as Jupiter
  writes them (Python ``repr`` digits; ``%B %d %Y - %H:%M:%S`` in UTC);
- :func:`select_nodes`: a link table cut down to a node list (upstream HEFT fails with
  ``KeyError`` on a node outside its worker list).

The network functions read any :class:`LinkTable` (a
:class:`~jupiter_bus.state.NetworkData` snapshot is one); links to or from the node named
``home`` are left out of HEFT's formats, as HEFT expects. ``NetworkData.heft_rows``,
``.wave``, ``.tgff_quadratic`` and ``ResourceData.to_jupiter`` call these.

Example::

    >>> from jupiter_bus import formats
    >>> formats.format_abc(np.array([[0.0, 0.002, 40.0]]))
    ['0.0 0.002 40.0']
    >>> formats.heft_rows(data, ips={"n1": "10.0.0.1"})  # doctest: +SKIP
    [['n1', '10.0.0.1', 'n2', 'n2', '0.0 0.002 40.0']]
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final, Protocol

import numpy as np
import numpy.typing as npt
import orjson

from .messages import ResourceSample

__all__ = [
    "LinkTable",
    "NodeSubset",
    "format_abc",
    "format_last_update",
    "heft_rows",
    "jupiter_resources",
    "select_nodes",
    "tgff_quadratic",
    "wave",
]


class LinkTable(Protocol):
    """What the network formats read: node names and their ``(N, N)`` cost matrices.

    :class:`~jupiter_bus.state.NetworkData` is one; so is any object with these members.

    Example::

        formats.heft_rows(data)   # data: a NetworkData snapshot
    """

    @property
    def nodes(self) -> tuple[str, ...]:
        """Node names, in index order."""
        ...

    @property
    def params(self) -> npt.NDArray[np.float64]:
        """``(N, N, 3)``: ``a, b, c`` of each link."""
        ...

    @property
    def valid(self) -> npt.NDArray[np.bool_]:
        """``(N, N)``: whether each link has a cost."""
        ...

    def __contains__(self, name: object) -> bool: ...

    def index(self, name: str) -> int:
        """The index of node ``name`` (raising when it is not known)."""
        ...


@dataclass(frozen=True, slots=True)
class NodeSubset:
    """A :class:`LinkTable` holding only some nodes of another (see :func:`select_nodes`).

    Example::

        formats.heft_rows(NodeSubset(("n1", "n2"), params, valid))
    """

    nodes: tuple[str, ...]
    params: npt.NDArray[np.float64]
    valid: npt.NDArray[np.bool_]

    def __contains__(self, name: object) -> bool:
        return name in self.nodes

    def index(self, name: str) -> int:
        """The index of node ``name`` (``ValueError`` when it is not here)."""
        return self.nodes.index(name)


def select_nodes(data: LinkTable, nodes: Iterable[str]) -> NodeSubset:
    """``data`` with only the links among ``nodes`` (those it knows, in ``nodes``' order).

    Example::

        >>> select_nodes(data, ["n1", "n2"]).nodes  # doctest: +SKIP
        ('n1', 'n2')
    """
    names = tuple(dict.fromkeys(x for x in nodes if x in data))
    where = np.array([data.index(x) for x in names], dtype=np.intp)
    grid = np.ix_(where, where)
    return NodeSubset(names, data.params[grid], data.valid[grid])


# -- numbers and dates ---------------------------------------------------------------------

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
    """Each row ``(a, b, c)`` of ``params`` as Jupiter's ``"a b c"`` (Python ``repr`` digits).

    Example::

        >>> format_abc(np.array([[1e-07, 0.002, 40.0]]))
        ['1e-07 0.002 40.0']
    """
    params = np.ascontiguousarray(params, dtype=np.float64).reshape(-1, 3)
    if len(params) == 0:
        return []
    return _format_rows_fast(params) if _FAST_FORMAT else _format_rows_slow(params)


# -- network --------------------------------------------------------------------------------


def _home_index(data: LinkTable, home: str | None) -> int | None:
    return data.index(home) if home is not None and home in data else None


def _jupiter_links(
    data: LinkTable, home: str | None
) -> tuple[list[int], list[int], npt.NDArray[np.float64]]:
    """Valid links without self-links and links to or from ``home``, ordered by
    source name then destination name: (sources, destinations, their ``a b c`` rows)."""
    mask = data.valid.copy()
    n = len(mask)
    np.fill_diagonal(mask, False)
    h = _home_index(data, home)
    if h is not None:
        mask[h, :] = False
        mask[:, h] = False
    rows, cols = np.nonzero(mask)
    rank = np.empty(n, dtype=np.intp)
    rank[np.argsort(np.array(data.nodes, dtype=object), kind="stable")] = np.arange(n)
    order = np.lexsort((rank[cols], rank[rows]))
    rows, cols = rows[order], cols[order]
    return rows.tolist(), cols.tolist(), data.params[rows, cols]


def heft_rows(
    data: LinkTable, home: str | None = "home", ips: Mapping[str, str] | None = None
) -> list[list[str]]:
    """HEFT's network rows ``[src_name, src_ip, dst_name, dst_ip, "a b c"]``.

    Links to or from ``home`` are left out, as HEFT expects; a node missing from
    ``ips`` is given its name as address. Rows are sorted by source then
    destination name; numbers are written as Python's ``repr`` writes them.

    Example::

        >>> heft_rows(data, ips={"n1": "10.0.0.1", "n2": "10.0.0.2"})  # doctest: +SKIP
        [['n1', '10.0.0.1', 'n2', '10.0.0.2', '0.0 0.002 40.0']]
    """
    rows, cols, params = _jupiter_links(data, home)
    names = data.nodes
    addresses = _addresses(names, ips)
    return [
        [names[i], addresses[i], names[j], addresses[j], text]
        for i, j, text in zip(rows, cols, format_abc(params), strict=True)
    ]


def _addresses(names: Sequence[str], ips: Mapping[str, str] | None) -> list[str]:
    return [ips.get(x, x) for x in names] if ips else list(names)


def wave(
    data: LinkTable, source: str, ips: Mapping[str, str] | None = None, *, home: str | None = "home"
) -> dict[str, dict[str, float | str]]:
    """WAVE's view of ``source``'s outgoing links: ``{dst: {"a", "b", "c", "ip"}}``.

    Links to ``home`` are left out; a node missing from ``ips`` gets its name as ip.

    Example::

        wave(data, "n1", ips)  # {'n2': {'a': 0.0, 'b': 0.002, 'c': 40.0, 'ip': '10.0.0.2'}}
    """
    i = data.index(source)
    row = data.valid[i].copy()
    row[i] = False
    h = _home_index(data, home)
    if h is not None:
        row[h] = False
    cols = np.flatnonzero(row).tolist()
    params = data.params[i, cols].tolist()
    names = data.nodes
    result: dict[str, dict[str, float | str]] = {}
    for j, (a, b, c) in zip(cols, params, strict=True):
        name = names[j]
        result[name] = {"a": a, "b": b, "c": c, "ip": ips.get(name, name) if ips else name}
    return result


def tgff_quadratic(data: LinkTable, home: str | None = "home") -> str:
    """The ``@quadratic 0 {`` section of HEFT's TGFF input.

    A comment line ``# Source Destination a b c``, then one row per directed link
    (links to ``home`` left out, sorted like :func:`heft_rows`): two spaces, then
    ``src<TAB>dst<TAB>a b c``; closed by ``}``. Every line ends with a newline.

    Example::

        >>> print(tgff_quadratic(data), end="")  # doctest: +SKIP
        @quadratic 0 {
        # Source Destination a b c
          n1	n2	0.0 0.002 40.0
        }
    """
    rows, cols, params = _jupiter_links(data, home)
    names = data.nodes
    body = "".join(
        [
            f"  {names[i]}\t{names[j]}\t{text}\n"
            for i, j, text in zip(rows, cols, format_abc(params), strict=True)
        ]
    )
    return f"@quadratic 0 {{\n# Source Destination a b c\n{body}}}\n"


# -- resources ------------------------------------------------------------------------------


def jupiter_resources(samples: Iterable[ResourceSample]) -> dict[str, dict[str, float | str]]:
    """Jupiter's resource format: ``{node: {"cpu", "memory", "last_update"}}``.

    One entry per sample, keyed by its node (a later sample of a node wins);
    ``last_update`` is the producer's ``ts`` as ``%B %d %Y - %H:%M:%S`` (UTC).

    Example::

        jupiter_resources(data.values())  # {'n1': {'cpu': 37.5, 'memory': 41.2, ...}}
    """
    return {
        s.node: {
            "cpu": s.cpu_percent,
            "memory": s.memory_percent,
            "last_update": format_last_update(s.ts),
        }
        for s in samples
    }
