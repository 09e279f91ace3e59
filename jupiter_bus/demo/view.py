"""What the demo shows: a board of live state, drawn with rich or written as plain lines.

:class:`Board` holds what the demo has seen (each node's latest resources, each link's
latest fit with its r2 and age, the transfers of the current and previous rounds, the
latest schedule) and renders it as rich tables (:meth:`Board.render`) for a terminal.
When stdout is not a terminal the same events become plain lines through ``say``.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

from rich import box
from rich.console import Group, RenderableType
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from ..heft import Slot, makespan
from ..messages import LinkCost, ResourceSample
from .sshd import LinkShape

RATE_TOLERANCE: Final = 0.3
"""A link's fit finds its shape when its rate is within this fraction of the shaped rate."""
MIN_R2: Final = 0.5
"""... and its r2 is at least this: a floor against nonsense, not a quality bar (the demo's
one process times its own probes, and a busy event loop adds milliseconds to some)."""


def within(rate: float, shape: LinkShape) -> bool:
    """Whether ``rate`` (Mbit/s) is within :data:`RATE_TOLERANCE` of the shaped rate.

    Example::

        >>> within(9.0, LinkShape(mbit_per_s=10.0, latency_ms=5.0))
        True
    """
    return abs(rate - shape.mbit_per_s) <= RATE_TOLERANCE * shape.mbit_per_s


__all__ = [
    "MIN_R2",
    "RATE_TOLERANCE",
    "Board",
    "LinkSeen",
    "TransferRow",
    "within",
]

_SHOWN_TRANSFERS: Final = 10


@dataclass(slots=True)
class LinkSeen:
    """A link's latest cost and when it arrived (``time.monotonic()``)."""

    cost: LinkCost
    received_at: float
    updates: int = 1


@dataclass(slots=True)
class TransferRow:
    """One transfer of a round, as the board shows it."""

    job_id: str
    label: str
    src: str
    dst: str
    size_bytes: int
    predicted_ms: float
    started_at: float = field(default_factory=time.monotonic)
    bytes_done: int = 0
    ok: bool | None = None
    actual_ms: float | None = None
    error: str | None = None

    @property
    def status(self) -> str:
        """``running``, ``ok`` or ``failed``."""
        return "running" if self.ok is None else ("ok" if self.ok else "failed")


@dataclass
class Board:
    """The demo's live state, fed by the facade's watches and the scheduling rounds.

    ``say`` receives one plain line per notable event (the plain, non-terminal view);
    give a no-op for the live view.

    Example::

        board = Board(["n1", "n2"], shapes, say=print)
        board.on_link(cost)       # prints "link n1->n2: ..." through say
        console.print(board.render())
    """

    nodes: Sequence[str]
    shapes: Mapping[tuple[str, str], LinkShape]
    say: Callable[[str], None]
    title: str = "jupiter-bus demo"
    started_at: float = field(default_factory=time.monotonic)
    duration: float | None = None
    resources: dict[str, tuple[ResourceSample, float]] = field(default_factory=dict)
    links: dict[tuple[str, str], LinkSeen] = field(default_factory=dict)
    transfers: deque[TransferRow] = field(default_factory=lambda: deque(maxlen=200))
    schedule: list[Slot] = field(default_factory=list)
    rounds: int = 0
    status: str = "starting agents and SSH servers"

    # -- events ----------------------------------------------------------------------

    def on_resource(self, sample: ResourceSample) -> None:
        """A node's resource sample."""
        if sample.node not in self.resources:
            self.say(
                f"node {sample.node}: cpu {sample.cpu_percent:.1f}% of {sample.cpu_count} "
                f"cores, memory {sample.memory_percent:.1f}%, ssh {sample.host}:{sample.ssh_port}"
            )
        self.resources[sample.node] = (sample, time.monotonic())

    def on_link(self, cost: LinkCost) -> None:
        """A link's new fit."""
        key = (cost.src, cost.dst)
        seen = self.links.get(key)
        updates = 1 if seen is None else seen.updates + 1
        self.links[key] = LinkSeen(cost, time.monotonic(), updates)
        self.say(f"link {cost.src}->{cost.dst}: {self.describe_fit(cost)}")

    def describe_fit(self, cost: LinkCost) -> str:
        """A fit in words, with the shaped link it should find."""
        rate = cost.rate_mbit_per_s()
        shape = self.shapes.get((cost.src, cost.dst))
        found = f"{rate:.1f} Mbit/s" if rate is not None else "no rate"
        want = f" (shaped {shape.mbit_per_s:g} Mbit/s, {shape.latency_ms:g} ms)" if shape else ""
        return (
            f"cost_ms = {cost.a:.3g} x^2 + {cost.b:.3g} x + {cost.c:.3g}: {found}, "
            f"{cost.c:.1f} ms, r2 {cost.r2:.3f}, {cost.samples} samples{want}"
        )

    def on_schedule(self, slots: Sequence[Slot]) -> None:
        """A new HEFT schedule."""
        self.rounds += 1
        self.schedule = list(slots)
        placed = ", ".join(f"{s.task}@{self.nodes[s.node]}" for s in slots)
        self.say(f"round {self.rounds}: HEFT makespan {makespan(slots):.0f} ms: {placed}")

    def on_transfer(self, row: TransferRow) -> None:
        """A transfer submitted."""
        self.transfers.append(row)

    def on_progress(self, job_id: str, bytes_done: int) -> None:
        """Bytes a transfer has moved so far."""
        for row in reversed(self.transfers):
            if row.job_id == job_id:
                row.bytes_done = max(row.bytes_done, bytes_done)
                return

    def on_done(self, row: TransferRow, ok: bool, actual_ms: float, error: str | None) -> None:
        """A transfer's result."""
        row.ok, row.actual_ms, row.error = ok, actual_ms, error
        if ok:
            row.bytes_done = row.size_bytes
            self.say(
                f"transfer {row.label} {row.src}->{row.dst}: {row.size_bytes} bytes in "
                f"{actual_ms:.0f} ms (predicted {row.predicted_ms:.0f} ms)"
            )
        else:
            self.say(f"transfer {row.label} {row.src}->{row.dst}: FAILED: {error}")

    # -- rendering -------------------------------------------------------------------

    def render(self, height: int | None = None) -> RenderableType:
        """The board as rich renderables: header, nodes, link matrix, transfers, schedule.

        ``height`` (a terminal's rows) limits the transfers shown so the board fits.
        """
        now = time.monotonic()
        elapsed = now - self.started_at
        limit = f" of {self.duration:.0f} s" if self.duration else " (Ctrl-C ends)"
        header = Text.assemble(
            (self.title, "bold"), f"  {elapsed:5.1f} s{limit}  ", (self.status, "cyan")
        )
        fixed = 13 + 3 * len(self.nodes)  # all but the transfers' rows
        rows = _SHOWN_TRANSFERS if height is None else max(2, min(_SHOWN_TRANSFERS, height - fixed))
        return Group(
            header,
            self._nodes_table(now),
            self._links_table(now),
            self._transfers_table(now, rows),
            self._schedule_line(),
        )

    def _nodes_table(self, now: float) -> Table:
        table = Table(title="nodes (resource events)", title_justify="left", box=box.SIMPLE_HEAD)
        for column in ("node", "cpu", "cores", "memory", "ssh", "age"):
            table.add_column(column, justify="left" if column in ("node", "ssh") else "right")
        for node in self.nodes:
            entry = self.resources.get(node)
            if entry is None:
                table.add_row(node, "-", "-", "-", "-", "-")
                continue
            sample, at = entry
            table.add_row(
                node,
                f"{sample.cpu_percent:.1f}%",
                str(sample.cpu_count),
                f"{sample.memory_percent:.1f}%",
                f"{sample.host}:{sample.ssh_port}",
                f"{now - at:.1f} s",
            )
        return table

    def _links_table(self, now: float) -> Table:
        table = Table(
            title=(
                "link costs: fitted rate, latency, r2, age "
                f"(green: within {RATE_TOLERANCE:.0%} of the rate the link is shaped to)"
            ),
            title_justify="left",
            box=box.SIMPLE_HEAD,
            show_edge=False,
        )
        table.add_column("src \\ dst")
        for node in self.nodes:
            table.add_column(node)
        for src in self.nodes:
            cells: list[RenderableType] = [src]
            for dst in self.nodes:
                if src == dst:
                    cells.append(Text("-", style="dim"))
                    continue
                seen = self.links.get((src, dst))
                if seen is None:
                    cells.append(Text("probing...", style="dim"))
                    continue
                cost = seen.cost
                rate = cost.rate_mbit_per_s()
                found = f"{rate:.1f} Mbit/s" if rate is not None else "? Mbit/s"
                cells.append(
                    Text.assemble(
                        (f"{found} {cost.c:.0f} ms", self._style(src, dst, rate, cost.r2)),
                        f"\nr2 {cost.r2:.3f} {now - seen.received_at:.0f} s",
                    )
                )
            table.add_row(*cells)
        return table

    def _style(self, src: str, dst: str, rate: float | None, r2: float) -> str:
        """Green when the fit finds the link's shaped rate, yellow when not (yet)."""
        shape = self.shapes.get((src, dst))
        if shape is None or rate is None or r2 < MIN_R2:
            return "yellow"
        return "green" if within(rate, shape) else "yellow"

    def links_found(self) -> list[str]:
        """Each link's last fit next to its shape, one line each (the end of the run)."""
        lines = []
        for (src, dst), shape in self.shapes.items():
            seen = self.links.get((src, dst))
            rate = None if seen is None else seen.cost.rate_mbit_per_s()
            found = "no fit"
            if seen is not None and rate is not None:
                found = f"{rate:5.1f} Mbit/s {seen.cost.c:4.0f} ms r2 {seen.cost.r2:.3f}"
            lines.append(
                f"  {src}->{dst}: {found} (shaped {shape.mbit_per_s:g} Mbit/s "
                f"{shape.latency_ms:g} ms)"
            )
        return lines

    def _transfers_table(self, now: float, rows: int) -> Table:
        table = Table(
            title="transfers (HEFT's crossing edges, real SFTP)",
            title_justify="left",
            box=box.SIMPLE_HEAD,
            show_edge=False,
        )
        for column in ("edge", "link", "size", "progress", "predicted", "actual"):
            table.add_column(column, justify="right" if column in ("size",) else "left")
        for row in list(self.transfers)[-rows:]:
            bar = ProgressBar(total=max(row.size_bytes, 1), completed=row.bytes_done, width=24)
            if row.ok is None:
                actual: RenderableType = Text(f"{(now - row.started_at) * 1000:.0f} ms...")
            elif row.ok:
                actual = Text(f"{row.actual_ms or 0:.0f} ms", style="green")
            else:
                actual = Text(f"failed: {row.error}", style="red")
            table.add_row(
                row.label,
                f"{row.src}->{row.dst}",
                f"{row.size_bytes / 1e6:.2f} MB",
                bar,
                f"{row.predicted_ms:.0f} ms",
                actual,
            )
        return table

    def _schedule_line(self) -> Text:
        if not self.schedule:
            return Text("schedule: waiting for every node's resources and every link's cost")
        placed = "  ".join(
            f"{slot.task}@{self.nodes[slot.node]} {slot.start_ms:.0f}-{slot.finish_ms:.0f}"
            for slot in self.schedule
        )
        return Text.assemble(
            (
                f"schedule (round {self.rounds}, makespan {makespan(self.schedule):.0f} ms): ",
                "bold",
            ),
            placed,
        )
