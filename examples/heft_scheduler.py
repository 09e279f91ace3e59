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

The HEFT functions (``upward_ranks``, ``heft_schedule``, ...) are pure and live in
:mod:`jupiter_bus.heft`, on plain dicts and numpy arrays with nodes as indices; only
:func:`run` here touches the bus.

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
from pathlib import Path

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
from jupiter_bus.heft import (
    BASE_COMPUTE_MS,
    CPU_FLOOR,
    DATA_KBIT,
    Slot,
    base_columns,
    crossing_edge,
    heft_schedule,
    live_comm_tables,
    makespan,
    scaled_compute,
    upward_ranks,
)
from jupiter_bus.interrupt import run_interruptible
from jupiter_bus.messages import TransferEngine


def write_payload(path: Path, size_bytes: int) -> None:
    """A task's output file of ``size_bytes`` (random bytes)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(os.urandom(size_bytes))


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
