"""Pictures of link costs as PNG files (matplotlib, the optional ``plot`` extra).

- :func:`fit_plot`: one link's measured points and its fitted curve
  (``jupiter-bus profile SRC DST --plot fit.png``);
- :func:`link_heatmap`: the cost of sending one size over every link, as a matrix
  (``jupiter-bus watch network --plot heatmap.png``).

matplotlib is imported when a picture is drawn, with the non-interactive ``Agg``
backend (no display needed); without it, :class:`~jupiter_bus.errors.ConfigError`
says how to install it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import ConfigError

if TYPE_CHECKING:
    from .messages import LinkCost
    from .state import NetworkData

__all__ = [
    "fit_plot",
    "link_heatmap",
]


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError:
        raise ConfigError("drawing needs matplotlib: pip install 'jupiter-bus[plot]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def fit_plot(
    points: Sequence[tuple[float, float]],
    cost: LinkCost | None,
    path: str | Path,
    *,
    title: str | None = None,
) -> Path:
    """Draw measured ``(size_kbit, ms)`` points and ``cost``'s curve to ``path`` (PNG).

    Both axes are logarithmic (probe sizes are spread on a log scale). ``cost`` None
    draws the points alone. Returns the path written.

    Example::

        fit_plot([(128.0, 12.0), (1024.0, 40.0), (4096.0, 130.0)], cost, "fit.png")
    """
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(7, 4.5), dpi=100)
    try:
        xs = np.array([p[0] for p in points], dtype=np.float64)
        ys = np.array([p[1] for p in points], dtype=np.float64)
        if len(xs):
            axes.scatter(xs, ys, color="tab:blue", zorder=3, label=f"measured ({len(xs)})")
        if cost is not None:
            low = min([cost.min_kbit, *xs.tolist()]) if cost.min_kbit > 0 else 1.0
            high = max([cost.max_kbit, *xs.tolist()])
            grid = np.geomspace(max(low / 2, 1e-3), high * 2, 200)
            curve = (cost.a * grid + cost.b) * grid + cost.c
            axes.plot(
                grid,
                curve,
                color="tab:orange",
                label=(f"fit: {cost.a:.3g} x² + {cost.b:.3g} x + {cost.c:.3g}  (r2 {cost.r2:.3f})"),
            )
        axes.set_xscale("log")
        axes.set_yscale("log")
        plain = plt.FuncFormatter(lambda value, _: f"{value:g}")
        axes.xaxis.set_major_formatter(plain)
        axes.yaxis.set_major_formatter(plain)
        axes.yaxis.set_minor_formatter(plain)
        axes.set_xlabel("file size (Kbit)")
        axes.set_ylabel("transfer time (ms)")
        axes.set_title(title or (f"{cost.src} -> {cost.dst}" if cost else "link cost"))
        axes.grid(True, which="both", alpha=0.3)
        axes.legend(loc="upper left")
        figure.tight_layout()
        target = Path(path)
        figure.savefig(target, format="png")
        return target
    finally:
        plt.close(figure)


def link_heatmap(
    data: NetworkData,
    path: str | Path,
    *,
    size_kbit: float = 8000.0,
    nodes: Sequence[str] | None = None,
) -> Path:
    """Draw the cost in ms of sending ``size_kbit`` over each link as a heatmap (PNG).

    Rows are sources, columns destinations; a link without a cost is blank. Each cell
    is labelled with its cost when there are at most 20 nodes. Returns the path.

    Example::

        link_heatmap(await bus.get_network_data(), "links.png", size_kbit=8000)  # 1 MB
    """
    plt = _pyplot()
    names = list(nodes) if nodes is not None else list(data.nodes)
    n = len(names)
    matrix = np.full((n, n), np.nan)
    for i, src in enumerate(names):
        for j, dst in enumerate(names):
            if src != dst and src in data and dst in data and data.has_link(src, dst):
                matrix[i, j] = data.link(src, dst).cost_ms(size_kbit)
    side = min(12.0, 3.0 + 0.5 * n)
    figure, axes = plt.subplots(figsize=(side + 1.5, side), dpi=100)
    try:
        image = axes.imshow(np.ma.masked_invalid(matrix), cmap="viridis_r")
        figure.colorbar(image, ax=axes, label=f"ms to send {_size(size_kbit)}")
        axes.set_xticks(range(n), names, rotation=60, ha="right")
        axes.set_yticks(range(n), names)
        axes.set_xlabel("destination")
        axes.set_ylabel("source")
        axes.set_title(f"link cost of {_size(size_kbit)} ({int(np.isfinite(matrix).sum())} links)")
        if n <= 20:
            finite = matrix[np.isfinite(matrix)]
            middle = float(np.median(finite)) if finite.size else 0.0
            for i in range(n):
                for j in range(n):
                    if math.isfinite(matrix[i, j]):
                        # dark cells (high cost in viridis_r) get white text
                        color = "white" if matrix[i, j] > middle else "black"
                        axes.text(
                            j, i, f"{matrix[i, j]:.0f}", ha="center", va="center", color=color
                        )
        figure.tight_layout()
        target = Path(path)
        figure.savefig(target, format="png")
        return target
    finally:
        plt.close(figure)


def _size(kbit: float) -> str:
    """``8000`` Kbit -> ``1 MB``."""
    megabytes = kbit / 8000.0
    return f"{megabytes:g} MB" if megabytes >= 1 else f"{kbit / 8:g} KB"
