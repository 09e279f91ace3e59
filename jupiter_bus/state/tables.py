"""The numpy arrays behind one version of the network state, and their reference counts.

Copy-on-write works by reference counts: a :class:`~jupiter_bus.state.NetworkState`
notes :func:`refcounts` of its :class:`Tables` right after taking them, and before a
change compares: any count above that is a snapshot (or an array taken from one) still
alive, so it copies first. Code that handles a ``Tables`` must therefore not keep a
reference to it or to its arrays (a local variable is fine; an attribute, a cache or a
closure is not).

Example::

    >>> tables = Tables(8)
    >>> tables.params.shape, tables.valid.dtype
    ((8, 8, 3), dtype('bool'))
"""

from __future__ import annotations

import sys
from typing import Any, Final

import numpy as np
import numpy.typing as npt

__all__ = ["Tables", "refcounts"]

# name: (dtype, memoryview format, trailing shape); the order is that of Tables.arrays()
_COLUMNS: Final[dict[str, tuple[type[np.generic], str, tuple[int, ...]]]] = {
    "params": (np.float64, "d", (3,)),
    "received_at": (np.float64, "d", ()),
    "ts": (np.float64, "d", ()),
    "samples": (np.int32, "i", ()),
    "r2": (np.float32, "f", ()),
    "min_kbit": (np.float32, "f", ()),
    "max_kbit": (np.float32, "f", ()),
    "valid": (np.bool_, "?", ()),
}


class Tables:
    """The arrays of one version of the network state, ``cap x cap`` nodes.

    ``params`` is ``(cap, cap, 3)`` (``a, b, c``), the others ``(cap, cap)``: receipt
    time and producer ``ts`` (float64), ``samples`` (int32), ``r2``, ``min_kbit``,
    ``max_kbit`` (float32) and the ``valid`` mask. Zeros where a link has no cost.

    Example::

        tables = Tables(16)
        bigger = tables.copy(n=10, cap=32)   # the first 10 nodes, room for 32
    """

    __slots__ = ("cap", *_COLUMNS)

    cap: int
    params: npt.NDArray[np.float64]
    received_at: npt.NDArray[np.float64]
    ts: npt.NDArray[np.float64]
    samples: npt.NDArray[np.int32]
    r2: npt.NDArray[np.float32]
    min_kbit: npt.NDArray[np.float32]
    max_kbit: npt.NDArray[np.float32]
    valid: npt.NDArray[np.bool_]

    def __init__(self, cap: int) -> None:
        self.cap = cap
        for name, (dtype, _, tail) in _COLUMNS.items():
            setattr(self, name, np.zeros((cap, cap, *tail), dtype=dtype))

    def arrays(self) -> tuple[npt.NDArray[Any], ...]:
        """Every array, ``params`` first (the order :meth:`flat_views` follows)."""
        return tuple([getattr(self, name) for name in _COLUMNS])

    def flat_views(self) -> tuple[Any, ...]:
        """A flat, typed memoryview of each array (index ``i * cap + j``), in
        :meth:`arrays` order: stores through them cost a third of numpy's scalar
        ``__setitem__``. They hold references to the arrays, like the state itself."""
        views = []
        for name, (_, code, _) in _COLUMNS.items():
            exporter: Any = getattr(self, name)  # numpy exports the buffer protocol
            flat: Any = memoryview(exporter).cast("B")
            views.append(flat.cast(code))
        return tuple(views)

    def copy(self, n: int, cap: int | None = None) -> Tables:
        """A copy holding the first ``n`` nodes, at capacity ``cap`` (default: the same)."""
        new = Tables(self.cap if cap is None else cap)
        for old_array, new_array in zip(self.arrays(), new.arrays(), strict=True):
            new_array[:n, :n] = old_array[:n, :n]
        return new

    @property
    def nbytes(self) -> int:
        """Bytes held by the arrays."""
        return sum(a.nbytes for a in self.arrays())


def refcounts(tables: Tables) -> tuple[int, ...]:
    """The reference counts of ``tables`` and of each of its arrays.

    Equal counts at two moments mean no reader took a reference in between; only the
    comparison means something (the call itself adds the same few each time).
    """
    return (sys.getrefcount(tables), *map(sys.getrefcount, tables.arrays()))
