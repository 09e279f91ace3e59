"""Contenders as cases: each timed once per round in a rotated order, then their medians."""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass

import asyncssh
from harness.children import ChildFailed
from harness.errors import BenchError
from harness.rounds import rotated
from harness.tables import Indented, print_table, ratio_text
from harness.window import Timed
from jupiter_providers.copy_engines import CopyFailure

from transfer_parts.settings import MB


@dataclass(frozen=True, slots=True)
class Case:
    """A contender: ``run`` is timed; ``prepare`` and ``check`` around it are not."""

    label: str
    run: Callable[[], Awaitable[None]]
    files: int
    size_bytes: int
    prepare: Callable[[], Awaitable[None]] | None = None
    check: Callable[[], None] | None = None


def _cpu_now() -> float:
    """CPU seconds of this process plus its waited-for children (the OpenSSH programs)."""
    times = os.times()
    return time.process_time() + times.children_user + times.children_system


async def measure(case: Case) -> Timed:
    """One timed run of ``case``: wall time and the copying side's CPU time."""
    if case.prepare is not None:
        await case.prepare()
    cpu, wall = _cpu_now(), time.perf_counter()
    try:
        await case.run()
    except (CopyFailure, asyncssh.Error, OSError, ChildFailed) as exc:
        raise BenchError(f"{case.label}: {exc}") from exc
    sample = Timed(time.perf_counter() - wall, _cpu_now() - cpu)
    if case.check is not None:
        case.check()
    return sample


async def run_rounds(
    cases: Sequence[Case], rounds: int, failures: dict[str, str] | None = None
) -> dict[str, list[Timed]]:
    """Every case once per round, the order rotated each round so drift hits all alike.

    With ``failures``, a case that fails is recorded there and left out of later rounds
    (tuning probes settings that may not work); without it, a failure ends the run.
    """
    samples: dict[str, list[Timed]] = {case.label: [] for case in cases}
    for r in range(rounds):
        for case in rotated(cases, r):
            if failures is not None and case.label in failures:
                continue
            try:
                samples[case.label].append(await measure(case))
            except BenchError as exc:
                if failures is None:
                    raise
                failures[case.label] = str(exc.__cause__ or exc)
    return samples


@dataclass(frozen=True, slots=True)
class Figure:
    """A contender's medians over its samples."""

    label: str
    wall_s: float
    cpu_s: float
    mb_s: float
    files_s: float
    mb_s_range: tuple[float, float]

    @classmethod
    def of(cls, case: Case, samples: Sequence[Timed]) -> Figure:
        rates = [case.size_bytes / MB / s.wall_s for s in samples]
        wall = statistics.median(s.wall_s for s in samples)
        return cls(
            case.label,
            wall,
            statistics.median(s.cpu_s for s in samples),
            case.size_bytes / MB / wall,
            case.files / wall,
            (min(rates), max(rates)),
        )


def figures(cases: Sequence[Case], samples: Mapping[str, Sequence[Timed]]) -> list[Figure]:
    return [Figure.of(case, samples[case.label]) for case in cases]


def best(rows: Sequence[Figure], prefix: str) -> Figure:
    return max((f for f in rows if f.label.startswith(prefix)), key=lambda f: f.files_s)


def fmt(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def print_figures(title: str, rows: Sequence[Figure], base: Figure) -> None:
    header = ["contender", "s/sample", "ms/file", "MB/s", "MB/s range", "files/s"]
    header += ["client CPU s", f"x {base.label}"]
    lines = []
    for f in rows:
        lines.append(
            [
                f.label,
                f"{f.wall_s:.3f}",
                fmt(1000 / f.files_s),
                fmt(f.mb_s),
                f"{fmt(f.mb_s_range[0])}-{fmt(f.mb_s_range[1])}",
                fmt(f.files_s),
                f"{f.cpu_s:.3f}",
                ratio_text(f.files_s / base.files_s),
            ]
        )
    print_table(header, lines, Indented(), title=title)
