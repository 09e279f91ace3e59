"""Per-round values of each figure, by node count, and their medians and ratios."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

from harness.stats import median_ratio


@dataclass(slots=True)
class Results:
    """Per-round values of each figure, by node count."""

    values: dict[tuple[str, int], list[float]] = field(default_factory=dict)

    def add(self, key: str, n: int, value: float) -> None:
        self.values.setdefault((key, n), []).append(value)

    def get(self, key: str, n: int) -> float | None:
        values = self.values.get((key, n))
        return statistics.median(values) if values else None

    def ratio(self, key: str, base: str, n: int) -> float | None:
        """Median of per-round ratios (each pair ran back to back)."""
        a, b = self.values.get((key, n)), self.values.get((base, n))
        if not a or not b or len(a) != len(b):
            return None
        return median_ratio(a, b)
