"""Tables of figures and their cells: the one way each benchmark prints its results.

Every table puts its first column on the left and the others on the right, each as wide
as its widest cell; the layouts differ in what goes around the cells (each bench keeps
the look its readers know)::

    print_table(["figure", "ours", "raw", "ours/raw"], rows, Ruled())
    print_table(["path", "p50 ms"], rows, Indented(), title="request latency")
"""

from __future__ import annotations

import abc
from collections.abc import Sequence

Row = Sequence[str]


def column_widths(header: Row, rows: Sequence[Row]) -> list[int]:
    """The width of each column: its widest cell, header included."""
    return [max(len(line[i]) for line in (header, *rows)) for i in range(len(header))]


def aligned(cells: Row, widths: Sequence[int]) -> list[str]:
    """The first cell padded on the right, the others on the left."""
    first, *rest = cells
    return [first.ljust(widths[0]), *(c.rjust(w) for c, w in zip(rest, widths[1:], strict=True))]


class Layout(abc.ABC):
    """How a table's aligned cells become lines."""

    @abc.abstractmethod
    def lines(self, header: Row, rows: Sequence[Row]) -> list[str]: ...


class Ruled(Layout):
    """Columns two spaces apart, a rule of dashes under the header."""

    def lines(self, header: Row, rows: Sequence[Row]) -> list[str]:
        widths = column_widths(header, rows)
        rule = ["-" * w for w in widths]
        return ["  ".join(aligned(line, widths)) for line in (header, rule, *rows)]


class Indented(Layout):
    """Every line indented by two spaces, columns two spaces apart, no rule."""

    def lines(self, header: Row, rows: Sequence[Row]) -> list[str]:
        widths = column_widths(header, rows)
        return ["  " + "  ".join(aligned(line, widths)).rstrip() for line in (header, *rows)]


class Piped(Layout):
    """Markdown's pipe table: ``| a | b |`` with a ``|---|---|`` rule."""

    def lines(self, header: Row, rows: Sequence[Row]) -> list[str]:
        widths = column_widths(header, rows)
        rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
        body = ["| " + " | ".join(aligned(line, widths)) + " |" for line in rows]
        return ["| " + " | ".join(aligned(header, widths)) + " |", rule, *body]


def print_table(
    header: Row, rows: Sequence[Row], layout: Layout, *, title: str | None = None
) -> None:
    """Print ``title`` after a blank line (if given), then the table.

    Example::

        print_table(["nodes", "MB"], [["10", "0.01"]], Ruled(), title="5. state memory")
    """
    if title is not None:
        print(f"\n{title}")
    print("\n".join(layout.lines(header, rows)))


def figure_text(value: float | None) -> str:
    """A figure in a cell: thousands without decimals, then 2 decimals, below 1 three.

    Example::

        figure_text(4_709.3), figure_text(0.0412), figure_text(None)  # "4,709" "0.041" "-"
    """
    if value is None:
        return "-"
    if value >= 100:
        return f"{value:,.0f}"
    return f"{value:.2f}" if value >= 1 else f"{value:.3f}"


def ratio_text(ratio: float | None, digits: int = 2) -> str:
    """A ratio to a baseline in a cell: ``1.23x``; ``-`` when there is none.

    Example::

        ratio_text(0.953), ratio_text(0.9531, 3), ratio_text(None)  # "0.95x" "0.953x" "-"
    """
    return "-" if ratio is None else f"{ratio:.{digits}f}x"


def verdict(met: bool | None) -> str:
    """Whether an aim is met: ``met``, ``MISSED``, or ``-`` when it was not measured."""
    return "-" if met is None else ("met" if met else "MISSED")
