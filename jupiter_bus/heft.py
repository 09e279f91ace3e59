"""HEFT, pure: Jupiter's list scheduler on plain dicts and numpy arrays.

HEFT (Heterogeneous Earliest Finish Time, Topcuoglu et al. 2002) maps a DAG of tasks
onto nodes: upward ranks, then each task in decreasing rank on the node giving the
earliest finish time, using idle gaps between scheduled tasks (insertion policy).
Nodes are indices into a node list; computation times are ``(N,)`` arrays per task and
communication times ``(N, N)`` arrays per edge, in ms. :func:`live_comm_tables` builds
the latter from a live :class:`~jupiter_bus.state.NetworkData` (the links' ``a, b, c``).

Used by ``examples/heft_scheduler.py`` and ``jupiter-bus demo``; the sample DAG
(:data:`BASE_COMPUTE_MS`, :data:`DATA_KBIT`) is a small video-analytics pipeline.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, TypeAlias

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from .state import NetworkData

__all__ = [
    "BASE_COMPUTE_MS",
    "CPU_FLOOR",
    "DATA_KBIT",
    "Edge",
    "FloatArray",
    "Slot",
    "base_columns",
    "comm_tables",
    "crossing_edge",
    "earliest_start",
    "heft_schedule",
    "live_comm_tables",
    "makespan",
    "quadratic_ms",
    "scaled_compute",
    "topological_order",
    "upward_ranks",
]

Edge: TypeAlias = tuple[str, str]
FloatArray: TypeAlias = npt.NDArray[np.float64]

CPU_FLOOR: Final = 0.1
"""Smallest share of a node's CPU a task is assumed to get (a saturated node: 10x)."""


# -- the DAG -------------------------------------------------------------------------------

# A small video-analytics pipeline. Computation cost in ms of each task on an idle node,
# one column per node (a node n uses column n mod 4), like TGFF's @computation_cost.
BASE_COMPUTE_MS: Final[dict[str, tuple[float, ...]]] = {
    "ingest": (120.0, 180.0, 150.0, 200.0),
    "decode": (300.0, 220.0, 260.0, 410.0),
    "detect": (640.0, 380.0, 520.0, 700.0),
    "track": (250.0, 300.0, 180.0, 260.0),
    "classify": (420.0, 260.0, 390.0, 330.0),
    "fuse": (150.0, 210.0, 140.0, 120.0),
    "report": (60.0, 90.0, 80.0, 50.0),
}
# Data each edge carries, in Kbit (8000 Kbit = 1 MB).
DATA_KBIT: Final[dict[Edge, float]] = {
    ("ingest", "decode"): 16_000.0,
    ("ingest", "detect"): 8_000.0,
    ("decode", "track"): 12_000.0,
    ("detect", "track"): 2_400.0,
    ("detect", "classify"): 6_400.0,
    ("track", "fuse"): 1_600.0,
    ("classify", "fuse"): 1_200.0,
    ("fuse", "report"): 400.0,
}


# -- HEFT, pure ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Slot:
    """One task placed on one node (an index into the node list), times in ms."""

    task: str
    node: int
    start_ms: float
    finish_ms: float


def quadratic_ms(params: FloatArray, size_kbit: float) -> FloatArray:
    """``(N, N)`` time in ms to send ``size_kbit`` over each link, zero on the diagonal.

    ``params`` is ``(N, N, 3)``: ``a, b, c`` of each link, ``cost = a*D^2 + b*D + c``.

    Example::

        >>> quadratic_ms(np.full((2, 2, 3), 1.0), 2.0).tolist()
        [[0.0, 7.0], [7.0, 0.0]]
    """
    a, b, c = params[..., 0], params[..., 1], params[..., 2]
    cost: FloatArray = (a * size_kbit + b) * size_kbit + c
    np.fill_diagonal(cost, 0.0)
    return cost


def comm_tables(data_kbit: Mapping[Edge, float], params: FloatArray) -> dict[Edge, FloatArray]:
    """Each edge's ``(N, N)`` communication time in ms from the links' ``a, b, c``."""
    return {edge: quadratic_ms(params, size) for edge, size in data_kbit.items()}


def scaled_compute(
    base_ms: Mapping[str, Sequence[float]], cpu_percent: Sequence[float]
) -> dict[str, FloatArray]:
    """Each task's time on each node: ``base / max(CPU_FLOOR, 1 - cpu_percent / 100)``.

    ``base_ms[task]`` has a column per node; ``cpu_percent`` one value per node.

    Example::

        >>> scaled_compute({"t": [10.0, 10.0]}, [0.0, 50.0])["t"].tolist()
        [10.0, 20.0]
    """
    free = np.maximum(CPU_FLOOR, 1.0 - np.asarray(cpu_percent, dtype=np.float64) / 100.0)
    return {task: np.asarray(row, dtype=np.float64) / free for task, row in base_ms.items()}


def topological_order(tasks: Sequence[str], edges: Sequence[Edge]) -> list[str]:
    """``tasks`` ordered so every edge goes forward; ties keep the given order."""
    position = {task: k for k, task in enumerate(tasks)}
    indegree = dict.fromkeys(tasks, 0)
    successors: dict[str, list[str]] = {task: [] for task in tasks}
    for src, dst in edges:
        if src not in position or dst not in position:
            raise ValueError(f"edge {src}->{dst} names a task without a computation cost")
        successors[src].append(dst)
        indegree[dst] += 1
    ready = sorted((t for t in tasks if indegree[t] == 0), key=position.__getitem__)
    order: list[str] = []
    while ready:
        task = ready.pop(0)
        order.append(task)
        for succ in successors[task]:
            indegree[succ] -= 1
            if indegree[succ] == 0:
                ready.append(succ)
                ready.sort(key=position.__getitem__)
    if len(order) != len(tasks):
        raise ValueError("the task graph has a cycle")
    return order


def _mean_comm(table: FloatArray) -> float:
    """Mean over ordered pairs of distinct nodes (the diagonal is zero)."""
    n = table.shape[0]
    return float(table.sum()) / (n * (n - 1)) if n > 1 else 0.0


def upward_ranks(
    compute_ms: Mapping[str, FloatArray], comm_ms: Mapping[Edge, FloatArray]
) -> dict[str, float]:
    """HEFT's upward rank of each task.

    ``rank(t) = mean(compute_ms[t]) + max over successors s of (mean comm(t, s) + rank(s))``,
    the comm mean over ordered pairs of distinct nodes. ``compute_ms[t]`` has one time per
    node; ``comm_ms[(t, s)]`` is ``(N, N)``.

    Example::

        >>> upward_ranks({"x": np.array([2.0, 4.0]), "y": np.array([1.0, 1.0])},
        ...              {("x", "y"): np.array([[0.0, 5.0], [5.0, 0.0]])})
        {'y': 1.0, 'x': 9.0}
    """
    order = topological_order(list(compute_ms), list(comm_ms))
    ranks: dict[str, float] = {}
    for task in reversed(order):
        tail = max(
            (
                _mean_comm(table) + ranks[dst]
                for (src, dst), table in comm_ms.items()
                if src == task
            ),
            default=0.0,
        )
        ranks[task] = float(np.mean(compute_ms[task])) + tail
    return ranks


def earliest_start(
    busy: Sequence[tuple[float, float]], ready_ms: float, duration_ms: float
) -> float:
    """First start ``>= ready_ms`` where ``duration_ms`` fits among ``busy`` (sorted) intervals."""
    start = ready_ms
    for busy_start, busy_finish in busy:
        if start + duration_ms <= busy_start:
            return start
        start = max(start, busy_finish)
    return start


def heft_schedule(
    compute_ms: Mapping[str, FloatArray],
    comm_ms: Mapping[Edge, FloatArray],
    ranks: Mapping[str, float] | None = None,
) -> list[Slot]:
    """Place each task, in decreasing upward rank, on the node where it finishes first.

    A task may start once every predecessor has finished and its data has arrived (no
    transfer on the same node); it takes the earliest idle gap on the node that is long
    enough (insertion policy). Ties go to the lower node index. Returns the slots in
    scheduling order.
    """
    ranks = upward_ranks(compute_ms, comm_ms) if ranks is None else ranks
    position = {t: k for k, t in enumerate(topological_order(list(compute_ms), list(comm_ms)))}
    order = sorted(compute_ms, key=lambda t: (-ranks[t], position[t]))
    n = len(next(iter(compute_ms.values()))) if compute_ms else 0
    busy: list[list[tuple[float, float]]] = [[] for _ in range(n)]
    placed: dict[str, Slot] = {}
    for task in order:
        best: Slot | None = None
        for node in range(n):
            ready = 0.0
            for (src, dst), table in comm_ms.items():
                if dst == task:
                    pred = placed[src]
                    ready = max(ready, pred.finish_ms + float(table[pred.node, node]))
            duration = float(compute_ms[task][node])
            start = earliest_start(busy[node], ready, duration)
            if best is None or start + duration < best.finish_ms:
                best = Slot(task, node, start, start + duration)
        assert best is not None, "no nodes to schedule on"
        placed[task] = best
        busy[best.node].append((best.start_ms, best.finish_ms))
        busy[best.node].sort()
    return list(placed.values())


def makespan(slots: Sequence[Slot]) -> float:
    """When the last task finishes, ms."""
    return max((slot.finish_ms for slot in slots), default=0.0)


def live_comm_tables(
    network: NetworkData, nodes: Sequence[str], data_kbit: Mapping[Edge, float]
) -> dict[Edge, FloatArray]:
    """Each edge's ``(N, N)`` comm time from live costs: one vectorised ``cost_ms`` call."""
    names = np.array(nodes)
    sizes = np.array(list(data_kbit.values()), dtype=np.float64)
    # (N, 1) sources x (1, N) destinations x (E, 1, 1) sizes -> (E, N, N); same node: 0.
    cost = np.array(
        network.cost_ms(names[:, None], names[None, :], sizes[:, None, None], same_node=0.0)
    )
    return {edge: cost[k] for k, edge in enumerate(data_kbit)}


def crossing_edge(slots: Sequence[Slot], data_kbit: Mapping[Edge, float]) -> Edge | None:
    """The edge with the most data whose two tasks run on different nodes, if any."""
    node = {slot.task: slot.node for slot in slots}
    crossing = [edge for edge in data_kbit if node[edge[0]] != node[edge[1]]]
    return max(crossing, key=data_kbit.__getitem__, default=None)


def base_columns(table: Mapping[str, Sequence[float]], n: int) -> dict[str, list[float]]:
    """The computation table for ``n`` nodes: node ``k`` uses column ``k mod width``."""
    return {task: [row[k % len(row)] for k in range(n)] for task, row in table.items()}
