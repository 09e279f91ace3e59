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

Modules: :mod:`~jupiter_bus.state.network_state` (:class:`NetworkState`),
:mod:`~jupiter_bus.state.tables` (its arrays and reference counts),
:mod:`~jupiter_bus.state.network_data` (:class:`NetworkData`, :class:`LinkEntry`),
:mod:`~jupiter_bus.state.resources` (:class:`ResourceState`, :class:`ResourceData`),
:mod:`~jupiter_bus.state.coverage` (:class:`Coverage`: requested against held) and
:mod:`~jupiter_bus.state.signal` (:class:`ChangeSignal`). Jupiter's formats are pure
functions in :mod:`jupiter_bus.formats`; the snapshots' ``heft_rows``, ``wave``,
``tgff_quadratic`` and ``to_jupiter`` call them.

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

from ..errors import StaleState, StateError, StateUnavailable, UnknownLink, UnknownNode
from ..formats import format_abc, format_last_update
from .coverage import Coverage
from .network_data import LinkEntry, NetworkData, NodeArray, NodeRef
from .network_state import NetworkState
from .resources import ResourceData, ResourceState
from .signal import ChangeSignal

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
