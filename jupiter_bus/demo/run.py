"""``jupiter-bus demo``: three (or more) real nodes in one process, scheduled live.

Every node runs a real agent (resources, an SFTP transfer worker, the network profiler)
and a real SSH server on loopback whose links are shaped per pair of nodes
(:mod:`.cluster`, :mod:`.sshd`). A scheduler embeds the facade: it waits for every
node's resources and every link's fit, then maps the sample DAG with HEFT in rounds,
each on the latest state, and moves each round's crossing edges' data between the
nodes over SFTP. The terminal shows it live (:mod:`.view`); off a terminal, plain lines.
It ends after ``duration`` seconds (or Ctrl-C) with the final schedule and a verdict:
did every link get a fit that finds its shaped rate, did every transfer succeed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from rich.console import Console, RenderableType
from rich.live import Live

from ..errors import JupiterBusError
from ..facade import JupiterInterface
from ..heft import (
    BASE_COMPUTE_MS,
    DATA_KBIT,
    Edge,
    Slot,
    base_columns,
    heft_schedule,
    live_comm_tables,
    makespan,
    scaled_compute,
    upward_ranks,
)
from ..state import NetworkData
from ..transport.base import safe_url
from .cluster import LOCAL_HOST, DemoCluster
from .view import MIN_R2, RATE_TOLERANCE, Board, TransferRow, within

__all__ = [
    "RATE_TOLERANCE",
    "Verdict",
    "demo",
    "judge",
]

log = logging.getLogger(__name__)

_WAIT_STATE_SECONDS: Final = 60.0
_TRANSFER_SECONDS: Final = 60.0
_ROUND_PAUSE_SECONDS: Final = 1.0


@dataclass(frozen=True, slots=True)
class Verdict:
    """How the run went: links that found their shaped rate, transfers that succeeded."""

    links: int
    links_found: int
    transfers_ok: int
    transfers_failed: int
    prediction_error: float | None
    """Median of ``|actual - predicted| / actual`` over the successful transfers."""
    missed: tuple[str, ...] = ()
    """The links not found, each with why."""

    @property
    def ok(self) -> bool:
        """Every link found, at least one transfer, none failed."""
        return (
            self.links > 0
            and self.links_found == self.links
            and self.transfers_ok > 0
            and self.transfers_failed == 0
        )

    def line(self) -> str:
        """The one-line verdict."""
        predicted = (
            f", transfer times predicted within {self.prediction_error:.0%} (median)"
            if self.prediction_error is not None
            else ""
        )
        return (
            f"verdict: {'OK' if self.ok else 'FAILED'}: {self.links_found}/{self.links} links "
            f"measured within {RATE_TOLERANCE:.0%} of their shaped rate, "
            f"{self.transfers_ok} transfers ok, {self.transfers_failed} failed{predicted}"
            + (f"; missed: {', '.join(self.missed)}" if self.missed else "")
        )


def judge(board: Board) -> Verdict:
    """The verdict on what the board saw."""
    missed = []
    for (src, dst), shape in board.shapes.items():
        seen = board.links.get((src, dst))
        rate = seen.cost.rate_mbit_per_s() if seen is not None else None
        if seen is None:
            missed.append(f"{src}->{dst} (no fit)")
        elif rate is None or seen.cost.r2 < MIN_R2:
            missed.append(f"{src}->{dst} (r2 {seen.cost.r2:.2f})")
        elif not within(rate, shape):
            missed.append(f"{src}->{dst} ({rate:.1f} of {shape.mbit_per_s:g} Mbit/s)")
    done = [row for row in board.transfers if row.ok is not None]
    errors = [
        abs(row.actual_ms - row.predicted_ms) / row.actual_ms
        for row in done
        if row.ok and row.actual_ms
    ]
    return Verdict(
        links=len(board.shapes),
        links_found=len(board.shapes) - len(missed),
        transfers_ok=sum(1 for row in done if row.ok),
        transfers_failed=sum(1 for row in done if not row.ok),
        prediction_error=statistics.median(errors) if errors else None,
        missed=tuple(missed),
    )


async def _follow(bus: JupiterInterface, board: Board, nodes: Sequence[str]) -> None:
    """Feed the board from the facade's live watches until cancelled."""

    async def resources() -> None:
        async with bus.watch_resources(node=nodes) as samples:
            async for sample in samples:
                board.on_resource(sample)

    async def links() -> None:
        async with bus.watch_network(src=nodes, dst=nodes) as updates:
            async for cost in updates:
                board.on_link(cost)

    async def progress() -> None:
        async with bus.watch_progress() as updates:  # the board knows its own jobs
            async for update in updates:
                board.on_progress(update.request_id, update.bytes_done)

    async with asyncio.TaskGroup() as group:
        group.create_task(resources())
        group.create_task(links())
        group.create_task(progress())


def _payload(path: Path, size: int) -> None:
    if not path.exists() or path.stat().st_size != size:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(os.urandom(size))


class _Scheduler:
    """HEFT rounds on the facade's state; each round moves its crossing edges' data."""

    def __init__(self, bus: JupiterInterface, cluster: DemoCluster, board: Board) -> None:
        self.bus = bus
        self.cluster = cluster
        self.board = board
        self.nodes = cluster.nodes
        # One transfer at a time per link: two at once would share its rate, and the
        # profiler's passive samples (real transfers) would see half the link.
        self._links: dict[tuple[str, str], asyncio.Lock] = {}

    async def round(self, number: int) -> None:
        network = await self.bus.get_network_data(nodes=self.nodes, timeout=_WAIT_STATE_SECONDS)
        resources = await self.bus.get_resource_data(nodes=self.nodes, timeout=_WAIT_STATE_SECONDS)
        compute = scaled_compute(
            base_columns(BASE_COMPUTE_MS, len(self.nodes)),
            [resources[node].cpu_percent for node in self.nodes],
        )
        comm = live_comm_tables(network, self.nodes, DATA_KBIT)
        slots = heft_schedule(compute, comm, upward_ranks(compute, comm))
        self.board.on_schedule(slots)
        self.board.status = f"round {number}: moving the crossing edges' data"
        placed = {slot.task: self.nodes[slot.node] for slot in slots}
        crossing = [e for e in DATA_KBIT if placed[e[0]] != placed[e[1]]]
        await asyncio.gather(*(self._move(number, e, placed, network) for e in crossing))
        for node in self.nodes:  # keep the disk use of a long run flat
            await asyncio.to_thread(
                shutil.rmtree, self.cluster.root(node) / "in" / f"round-{number}", True
            )

    async def _move(
        self, number: int, edge: Edge, placed: dict[str, str], network: NetworkData
    ) -> None:
        src, dst = placed[edge[0]], placed[edge[1]]
        size_kbit = DATA_KBIT[edge]
        size = int(size_kbit * 1000 / 8)
        name = f"{edge[0]}-{edge[1]}.out"
        source = self.cluster.root(src) / "out" / name
        await asyncio.to_thread(_payload, source, size)
        destination = f"in/round-{number}/{name}"  # under dst's server root
        async with self._links.setdefault((src, dst), asyncio.Lock()):
            await self._send(src, dst, edge, size, source, destination, network)

    async def _send(
        self,
        src: str,
        dst: str,
        edge: Edge,
        size: int,
        source: Path,
        destination: str,
        network: NetworkData,
    ) -> None:
        started = time.monotonic()
        job = await self.bus.submit_transfer(
            LOCAL_HOST,
            src,  # the demo's servers know a node by its name
            None,
            str(source),
            destination,
            via=src,
            port=self.cluster.servers[dst].port,
            engine="sftp",
            create_dirs=True,
            idempotency_key=str(uuid.uuid4()),
            deadline=time.time() + _TRANSFER_SECONDS,
        )
        row = TransferRow(
            job_id=job,
            label=f"{edge[0]}->{edge[1]}",
            src=src,
            dst=dst,
            size_bytes=size,
            predicted_ms=float(network.cost_ms(src, dst, DATA_KBIT[edge])),
            started_at=started,
        )
        self.board.on_transfer(row)
        result = await self.bus.wait_transfer(job, timeout=_TRANSFER_SECONDS, check=False)
        landed = self.cluster.root(dst) / destination
        error = None if result.error is None else f"{result.error.kind}: {result.error.message}"
        if result.ok and (not landed.exists() or landed.stat().st_size != size):
            error = f"reported ok but {destination} on {dst} is missing or short"
        self.board.on_done(row, error is None, result.seconds * 1000, error)


@contextlib.asynccontextmanager
async def _shown(board: Board, live: bool) -> AsyncIterator[Console]:
    console = Console()
    if not live:
        yield console
        return

    def draw() -> RenderableType:
        return board.render(console.size.height)

    with Live(get_renderable=draw, console=console, refresh_per_second=4):
        yield console


def _deployment(url: str, count: int) -> tuple[list[str], bool]:
    """Node names; on a shared broker a per-run suffix keeps this run's queues apart."""
    names = [f"node{k}" for k in range(1, count + 1)]
    if url.startswith("memory://"):
        return names, False
    run = uuid.uuid4().hex[:4]
    return [f"{name}-{run}" for name in names], True


async def demo(
    url: str = "memory://demo",
    *,
    nodes: int = 3,
    duration: float | None = 30.0,
    live: bool | None = None,
    say: Callable[[str], None] | None = None,
) -> int:
    """Run the demo on the bus at ``url`` for ``duration`` seconds (None: until Ctrl-C).

    ``live`` (default: whether stdout is a terminal) draws the live view; otherwise
    events are plain lines (``say``, default ``print``). Returns 0 when the verdict is
    OK, 1 otherwise; Ctrl-C ends it early with the final schedule and verdict (the
    caller's :func:`~jupiter_bus.interrupt.run_interruptible` makes that status 130).

    Example::

        sys.exit(run_interruptible(demo("memory://demo", duration=20)))
    """
    if nodes < 2:
        raise ValueError(f"nodes: expected at least 2, got {nodes}")
    live = sys.stdout.isatty() if live is None else live
    names, shared = _deployment(url, nodes)
    out = say or (lambda line: print(line, flush=True))
    with tempfile.TemporaryDirectory(prefix="jupiter-demo-") as tmp:
        cluster = DemoCluster(url, names, workdir=Path(tmp), delete_queues=shared)
        board = Board(names, cluster.shapes, say=(lambda _: None) if live else out)
        board.duration = duration
        if not live:
            out(f"jupiter-bus demo on {safe_url(url)}: nodes {', '.join(names)}")
            for (src, dst), shape in cluster.shapes.items():
                out(f"shaped {src}->{dst}: {shape.mbit_per_s:g} Mbit/s, {shape.latency_ms:g} ms")
        interrupted = False
        async with (
            JupiterInterface(url, follow=names) as bus,  # its own nodes' events only
            _shown(board, live) as console,
        ):
            follower = asyncio.create_task(_follow(bus, board, names), name="demo view")
            try:
                async with asyncio.timeout(duration), cluster:
                    board.status = "agents up; waiting for every link's first fit"
                    await bus.get_network_data(nodes=names, timeout=_WAIT_STATE_SECONDS)
                    scheduler = _Scheduler(bus, cluster, board)
                    number = 0
                    while True:
                        number += 1
                        await scheduler.round(number)
                        board.status = f"round {number} done; next on the latest costs"
                        await asyncio.sleep(_ROUND_PAUSE_SECONDS)
            except TimeoutError:
                pass  # the duration is up (or a wait for state timed out: judged below)
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if task is None or not task.cancelling():
                    raise
                task.uncancel()  # Ctrl-C: the caller exits 130; end the run properly first
                interrupted = True
            except JupiterBusError as exc:
                board.say(f"error: {exc}")
                board.status = f"error: {exc}"
            finally:
                follower.cancel()
                await asyncio.gather(follower, return_exceptions=True)
            board.status = "interrupted" if interrupted else "done"
        verdict = judge(board)
        _final(console if live else None, board, out, verdict)
    return 0 if verdict.ok else 1


def _final(
    console: Console | None, board: Board, out: Callable[[str], None], verdict: Verdict
) -> None:
    slots: list[Slot] = board.schedule
    lines = [f"final schedule (round {board.rounds}, makespan {makespan(slots):.0f} ms):"]
    lines += [
        f"  {s.task:<10} on {board.nodes[s.node]:<12} {s.start_ms:8.0f} -> {s.finish_ms:8.0f} ms"
        for s in slots
    ] or ["  (none: the state never became complete)"]
    lines.append("links (the profilers' last fit, and the shape the demo gave each link):")
    lines += board.links_found()
    lines.append(verdict.line())
    for line in lines:
        if console is not None:
            console.print(line, highlight=False)
        else:
            out(line)
