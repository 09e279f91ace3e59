"""The live table ``jupiter-bus watch`` draws on a terminal: the latest update per key.

One row per link (``network``), node (``resources``) or transfer (``transfers``,
``progress``), replaced when a newer update comes, with its age; rows are kept in
first-seen order, the newest ``max_rows`` shown.
"""

from __future__ import annotations

import time
from typing import Final

from rich.console import RenderableType
from rich.progress_bar import ProgressBar
from rich.table import Table

from ..messages import LinkCost, ResourceSample, TransferProgress, TransferResult

__all__ = [
    "LiveTable",
]

_COLUMNS: Final = {
    "network": ("src", "dst", "cost_ms = a x^2 + b x + c", "rate", "r2", "samples", "age"),
    "resources": ("node", "cpu", "cores", "memory", "of", "ssh", "age"),
    "transfers": ("request", "node", "result", "bytes", "time", "age"),
    "progress": ("request", "node", "progress", "done", "of", "age"),
}

Update = LinkCost | ResourceSample | TransferResult | TransferProgress


class LiveTable:
    """The latest update per key of one ``watch`` feed, as a rich table.

    Example::

        table = LiveTable("network")
        table.add(cost)
        console.print(table.render())
    """

    def __init__(self, what: str, *, max_rows: int = 40) -> None:
        if what not in _COLUMNS:
            raise ValueError(f"what: expected one of {sorted(_COLUMNS)}, got {what!r}")
        self.what = what
        self.max_rows = max_rows
        self.updates = 0
        self._rows: dict[tuple[str, ...], tuple[Update, float]] = {}

    def add(self, update: Update) -> None:
        """Take an update: it replaces the row of its key."""
        self.updates += 1
        self._rows[self._key(update)] = (update, time.monotonic())

    def _key(self, update: Update) -> tuple[str, ...]:
        match update:
            case LinkCost():
                return (update.src, update.dst)
            case ResourceSample():
                return (update.node,)
            case TransferResult() | TransferProgress():
                return (update.request_id,)
        raise TypeError(f"not a watch update: {type(update).__name__}")

    def render(self) -> RenderableType:
        """The table: the newest ``max_rows`` keys, each with its latest update."""
        now = time.monotonic()
        table = Table(
            title=f"{self.what}: {len(self._rows)} shown of what came, {self.updates} updates",
            title_justify="left",
        )
        for column in _COLUMNS[self.what]:
            table.add_column(column)
        for update, at in list(self._rows.values())[-self.max_rows :]:
            table.add_row(*self._cells(update), f"{now - at:.0f} s")
        return table

    def _cells(self, update: Update) -> list[RenderableType]:
        match update:
            case LinkCost():
                rate = update.rate_mbit_per_s()
                return [
                    update.src,
                    update.dst,
                    f"{update.a:.3g} x^2 + {update.b:.3g} x + {update.c:.3g}",
                    "-" if rate is None else f"{rate:.1f} Mbit/s",
                    f"{update.r2:.3f}",
                    str(update.samples),
                ]
            case ResourceSample():
                return [
                    update.node,
                    f"{update.cpu_percent:.1f}%",
                    str(update.cpu_count),
                    f"{update.memory_percent:.1f}%",
                    f"{update.memory_total_bytes >> 20} MiB",
                    f"{update.host}:{update.ssh_port or 22}" if update.host else "-",
                ]
            case TransferResult():
                result = "ok" if update.ok or update.error is None else update.error.kind
                return [
                    update.request_id[:8],
                    update.node,
                    result,
                    str(update.bytes),
                    f"{update.seconds * 1000:.0f} ms",
                ]
            case TransferProgress():
                total = update.bytes_total
                bar: RenderableType = (
                    ProgressBar(total=max(total, 1), completed=update.bytes_done, width=20)
                    if total is not None
                    else "?"
                )
                return [
                    update.request_id[:8],
                    update.node,
                    bar,
                    str(update.bytes_done),
                    "?" if total is None else str(total),
                ]
        raise TypeError(f"not a watch update: {type(update).__name__}")
