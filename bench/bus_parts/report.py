"""The bus bench's tables, per-round values and summary against DESIGN section 5."""

from __future__ import annotations

import platform
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from harness import broker
from harness.environment import versions
from harness.stats import median_ratio, ratios
from harness.tables import Ruled, figure_text, print_table, ratio_text, verdict

from bus_parts.contenders import Contender
from bus_parts.sampling import Results
from bus_parts.settings import BODY_BYTES, PREFETCH, TARGET_RATIO, WINDOW, Settings


@dataclass(frozen=True, slots=True)
class Row:
    key: str
    title: str
    higher_is_better: bool


ROWS: Final = (
    Row("pub1", "publish 1 KB confirmed, 1 at a time (msg/s)", True),
    Row("pub100", f"publish 1 KB confirmed, {WINDOW} in flight (msg/s)", True),
    Row("consume", f"consume + ack, prefetch {PREFETCH} (msg/s)", True),
    Row("rr1.p50", "request/reply sequential, p50 (ms)", False),
    Row("rr1.p99", "request/reply sequential, p99 (ms)", False),
    Row("rr100.p50", f"request/reply {WINDOW} in flight, p50 (ms)", False),
    Row("rr100.p99", f"request/reply {WINDOW} in flight, p99 (ms)", False),
    Row("rr100.rate", f"request/reply {WINDOW} in flight (req/s)", True),
)
CPU_ROWS: Final = (
    Row("pub1.cpu", "publish, 1 at a time (us/msg)", False),
    Row("pub100.cpu", f"publish, {WINDOW} in flight (us/msg)", False),
    Row("consume.cpu", "consume + ack (us/msg)", False),
    Row("rr1.cpu", "request/reply sequential, both sides (us/req)", False),
    Row("rr100.cpu", f"request/reply {WINDOW} in flight, both sides (us/req)", False),
)


def medians(results: Results, row: Row) -> dict[str, float]:
    return {key: statistics.median(values) for key, values in results[row.key].items()}


def round_ratios(results: Results, row: Row, key: str, base: str = "raw") -> list[float]:
    """``key``'s value over ``base``'s, round by round (the two ran back to back)."""
    values = results[row.key]
    return ratios(values[key], values[base])


def ratio(results: Results, row: Row, key: str, base: str = "raw") -> float:
    """Median of the per-round ratios: steadier than a ratio of medians on a busy host."""
    values = results[row.key]
    return median_ratio(values[key], values[base])


def print_figures(
    results: Results, contenders: Sequence[Contender], rows: Sequence[Row], title: str
) -> None:
    heads = [title, *(c.label for c in contenders), "jb/raw", "fs/raw"]
    lines = []
    for row in rows:
        med = medians(results, row)
        jb, fs = ratio(results, row, "jb"), ratio(results, row, "fs")
        lines.append(
            [
                row.title,
                *(figure_text(med[c.key]) for c in contenders),
                ratio_text(jb),
                ratio_text(fs),
            ]
        )
    print_table(heads, lines, Ruled())


def print_rounds(results: Results, contenders: Sequence[Contender]) -> None:
    print("\nper-round values (the tables show their median):")
    for row in (*ROWS, *CPU_ROWS):
        parts = [
            f"{c.key} " + " ".join(figure_text(v) for v in results[row.key][c.key])
            for c in contenders
        ]
        print(f"  {row.key:<11} " + " | ".join(parts))


def print_summary(results: Results) -> bool:
    """Say, figure by figure, whether jupiter-bus meets DESIGN section 5; all met?"""
    print("\nsummary (DESIGN section 5: jupiter-bus >= 0.9x raw aio-pika throughput,")
    print("<= 1/0.9x raw latency, and ahead of FastStream; ratios are medians of per-round")
    print("ratios, with their range over the rounds in brackets):")
    all_met = True
    for row in ROWS:
        to_raw, to_fs = ratio(results, row, "jb"), ratio(results, row, "jb", "fs")
        spread = round_ratios(results, row, "jb")
        if row.higher_is_better:
            near_raw, ahead = to_raw >= TARGET_RATIO, to_fs > 1
            goal = f">= {TARGET_RATIO:.2f}x"
        else:
            near_raw, ahead = to_raw <= 1 / TARGET_RATIO, to_fs < 1
            goal = f"<= {1 / TARGET_RATIO:.2f}x"
        all_met = all_met and near_raw and ahead
        print(
            f"  {row.title}: jupiter-bus {ratio_text(to_raw, 3)} raw "
            f"[{min(spread):.2f}-{max(spread):.2f}], goal {goal}: "
            f"{verdict(near_raw)}; {'ahead of' if ahead else 'BEHIND'} "
            f"FastStream (jb/fs {ratio_text(to_fs)})"
        )
    cpu = ", ".join(
        f"{row.key.removesuffix('.cpu')} {ratio_text(ratio(results, row, 'jb'))}"
        for row in CPU_ROWS
    )
    print(f"  client CPU per operation, jupiter-bus / raw aio-pika: {cpu}")
    print(f"  overall: {'every goal met' if all_met else 'some goals missed (see above)'}")
    return all_met


def print_report(results: Results, contenders: Sequence[Contender]) -> None:
    print()
    print_figures(results, contenders, ROWS, "figure (median of rounds)")
    print(
        "\nmsg/s and req/s: higher is better (ratio > 1: faster than raw aio-pika); "
        "ms: lower is better (ratio < 1: faster than raw aio-pika).\n"
        "Ratios are medians of per-round ratios (each pair ran back to back).\n"
    )
    print_figures(results, contenders, CPU_ROWS, "client CPU per operation")
    print(
        "\nus of this process's CPU per message or request (lower is better); less "
        "disturbed than wall-clock figures by other load on the machine."
    )
    print_rounds(results, contenders)
    print_summary(results)


def print_header(settings: Settings, loop_name: str, broker_version: str, run_id: str) -> None:
    packages = versions("jupiter-bus", "aio-pika", "aiormq", "faststream")
    print(f"bench/bus.py run {run_id}: Python {platform.python_version()}, {packages}")
    print(f"RabbitMQ {broker_version} at {broker.address(settings.url)}; event loop: {loop_name}")
    print(
        f"{settings.rounds} rounds, median shown; per sample: publish {settings.publish_one_count}"
        f" (1 at a time) / {settings.publish_window_count} ({WINDOW} in flight), consume "
        f"{settings.consume_count}, requests {settings.request_one_count} (sequential) / "
        f"{settings.request_window_count} ({WINDOW} in flight); bodies {BODY_BYTES} B",
        flush=True,
    )
