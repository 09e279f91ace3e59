"""An async HEFT scheduler on live costs: the facade embedded in a scheduler.

HEFT (Heterogeneous Earliest Finish Time, Topcuoglu et al. 2002) maps a small DAG of
tasks onto the nodes, as Jupiter's HEFT does, but with the live state of the bus:

1. ``await bus.get_resource_data()``: each node's CPU use scales the task's computation
   time: ``time_ms = base_ms / max(0.1, 1 - cpu_percent / 100)``. ``base_ms`` is the
   profiled time on the idle node (the DAG's table, like TGFF's ``@computation_cost``),
   so it already carries the node's speed and core count; a node busy at ``cpu_percent``
   leaves a new task about the idle share of its CPU, floored at 10% so a saturated node
   costs ten times more rather than forever. ``cpu_count`` is shown but not used: the
   tasks are single-threaded and the per-node table already says how fast a node is.
2. ``await bus.get_network_data()``: communication time of an edge carrying ``D`` Kbit
   from node ``p`` to node ``q`` is ``a*D^2 + b*D + c`` with the link's live ``a, b, c``
   (zero on the same node). Averages for the ranks are taken over the ordered pairs of
   distinct nodes.
3. Upward ranks, then each task in decreasing rank on the node giving the earliest
   finish time, using idle gaps between scheduled tasks (insertion policy).
4. As Jupiter does after mapping, ``await bus.data_transfer(...)`` moves one output
   file: the largest edge that crosses nodes, from the node that produced it to the
   node that consumes it (``via`` the producing node, whose worker copies it).

The HEFT functions (:func:`upward_ranks`, :func:`heft_schedule`, ...) are pure and work
on plain dicts and numpy arrays, with nodes as indices; only :func:`run` touches the bus.

Run it::

    python examples/heft_scheduler.py                  # in-process bus, starts its agents
    python examples/heft_scheduler.py --broker amqp://guest:guest@127.0.0.1:5672/ --with-agents
    python examples/heft_scheduler.py --broker amqp://guest:guest@10.0.0.1/ \\
        --nodes node1,node2,node3 --transfer-dir /data/heft   # agents already running

Without ``--with-agents`` on ``amqp://`` the agents (``jupiter-bus agent``) and network
profilers must be running, and the output file is written under ``--transfer-dir`` on
this host: the executing node's worker must be able to read it there (and the user in
``--user``, with the password in ``$JUPITER_PASSWORD`` if any, must be able to log in to
the destination host).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import os
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final, TypeAlias

import numpy as np
import numpy.typing as npt
from _cluster import (
    LocalCluster,
    add_bus_arguments,
    configure_logging,
    exit_status,
    in_process,
    node_names,
    safe_url,
    say_who_serves,
)

from jupiter_bus import (
    JupiterBusError,
    JupiterInterface,
    NetworkData,
    ResourceData,
    TransferFailed,
)
from jupiter_bus.interrupt import run_interruptible
from jupiter_bus.messages import TransferEngine

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


# -- on the bus ----------------------------------------------------------------------------


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


def write_payload(path: Path, size_bytes: int) -> None:
    """A task's output file of ``size_bytes`` (random bytes)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(os.urandom(size_bytes))


def base_columns(table: Mapping[str, Sequence[float]], n: int) -> dict[str, list[float]]:
    """The computation table for ``n`` nodes: node ``k`` uses column ``k mod width``."""
    return {task: [row[k % len(row)] for k in range(n)] for task, row in table.items()}


def cpu_of(resources: ResourceData, nodes: Sequence[str]) -> list[float]:
    """Each node's live CPU use, percent."""
    return [resources[node].cpu_percent for node in nodes]


def print_state(nodes: Sequence[str], resources: ResourceData, network: NetworkData) -> None:
    print("resources (live):")
    for node in nodes:
        sample = resources[node]
        share = max(CPU_FLOOR, 1.0 - sample.cpu_percent / 100.0)
        print(
            f"  {node:<14} cpu {sample.cpu_percent:5.1f}% of {sample.cpu_count} cores, "
            f"memory {sample.memory_percent:4.1f}% -> compute x{1.0 / share:.2f}"
        )
    n = len(nodes)
    print(
        f"links (live): {n * (n - 1)} link costs of {network.link_count} known, "
        "cost_ms = a*D^2 + b*D + c with D in Kbit"
    )


def print_plan(
    nodes: Sequence[str],
    ranks: Mapping[str, float],
    slots: Sequence[Slot],
) -> None:
    print("upward ranks (ms):")
    for task, rank in sorted(ranks.items(), key=lambda item: -item[1]):
        print(f"  {task:<10} {rank:9.1f}")
    print("schedule (insertion-based earliest finish time):")
    print(f"  {'task':<10} {'node':<14} {'start ms':>9} {'finish ms':>10}")
    for slot in slots:
        print(
            f"  {slot.task:<10} {nodes[slot.node]:<14} {slot.start_ms:9.1f} {slot.finish_ms:10.1f}"
        )
    print(f"makespan: {makespan(slots):.1f} ms")


async def move_output(
    bus: JupiterInterface,
    args: argparse.Namespace,
    workdir: Path,
    nodes: Sequence[str],
    slots: Sequence[Slot],
    network: NetworkData,
    hosts: Mapping[str, str],
) -> None:
    """Transfer the output of the largest crossing edge, as Jupiter does after mapping."""
    edge = crossing_edge(slots, DATA_KBIT)
    placed = {slot.task: nodes[slot.node] for slot in slots}
    if edge is None:  # everything on one node: send the last task's output elsewhere
        last = max(slots, key=lambda slot: slot.finish_ms).task
        others = [n for n in nodes if n != placed[last]] or [placed[last]]
        edge, src, dst, size_kbit = (last, "home"), placed[last], others[0], 8_000.0
    else:
        src, dst, size_kbit = placed[edge[0]], placed[edge[1]], DATA_KBIT[edge]
    size_bytes = int(size_kbit * 1000 / 8)
    source = workdir / src / "out" / f"{edge[0]}.out"
    destination = workdir / dst / "in" / f"{edge[0]}.out"
    await asyncio.to_thread(write_payload, source, size_bytes)
    engine: TransferEngine | None = args.engine or ("local" if in_process(args) else None)
    predicted = network.cost_ms(src, dst, size_kbit, same_node=0.0)
    try:
        result = await bus.data_transfer(
            hosts.get(dst, dst),
            args.user,
            os.environ.get("JUPITER_PASSWORD") or None,
            str(source),
            str(destination),
            via=src,
            engine=engine,
            create_dirs=True,
            timeout=args.timeout,
        )
    except TransferFailed as exc:
        print(f"data_transfer: output of {edge[0]} {src} -> {dst} failed ({exc.kind})")
        raise
    print(
        f"data_transfer: output of {edge[0]} ({result.bytes} bytes) {src} -> {dst} "
        f"({hosts.get(dst, dst)}) ok in {result.seconds * 1000:.1f} ms "
        f"(link model predicts {predicted:.1f} ms; engine {engine or 'worker default'})"
    )


async def run(args: argparse.Namespace, workdir: Path) -> int:
    """Map the DAG with live state, print the schedule, move one output file."""
    nodes = node_names(args)
    say_who_serves(args, nodes)
    print(f"HEFT on {safe_url(args.broker)} with {len(nodes)} nodes: {', '.join(nodes)}")
    async with contextlib.AsyncExitStack() as stack:
        # The facade first: link costs published before it subscribes would be missed.
        bus = await stack.enter_async_context(JupiterInterface(args.broker))
        if in_process(args):
            memory = str(args.broker).startswith("memory://")
            cluster = LocalCluster(args.broker, nodes, workdir=workdir, delete_queues=not memory)
            await stack.enter_async_context(cluster)
        resources = await bus.get_resource_data(nodes=nodes, timeout=args.timeout)
        network = await bus.get_network_data(nodes=nodes, timeout=args.timeout)
        print_state(nodes, resources, network)
        compute = scaled_compute(
            base_columns(BASE_COMPUTE_MS, len(nodes)), cpu_of(resources, nodes)
        )
        comm = live_comm_tables(network, nodes, DATA_KBIT)
        ranks = upward_ranks(compute, comm)
        slots = heft_schedule(compute, comm, ranks)
        print_plan(nodes, ranks, slots)
        await move_output(bus, args, workdir, nodes, slots, network, resources.ips())
    return 0


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    add_bus_arguments(parser, "heft")
    parser.add_argument("--user", default=getpass.getuser(), help="login on the destination")
    parser.add_argument(
        "--engine",
        choices=["sftp", "scp", "openssh-scp", "local"],
        help="transfer engine (default: local with in-process agents, else the worker's)",
    )
    parser.add_argument(
        "--transfer-dir", help="folder for the moved output file (default: a temporary one)"
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    configure_logging(args.verbose)
    try:
        with tempfile.TemporaryDirectory(prefix="jupiter-heft-") as scratch:
            workdir = Path(os.path.realpath(args.transfer_dir or scratch))
            return run_interruptible(run(args, workdir))
    except (JupiterBusError, TimeoutError) as exc:
        return exit_status(exc)


if __name__ == "__main__":
    sys.exit(main())
