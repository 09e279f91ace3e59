"""The profiler bench's tables: our rounds, probe bytes, prediction errors, models, summary."""

from __future__ import annotations

import statistics
from collections.abc import Sequence

from harness.tables import Piped, print_table, ratio_text, verdict
from jupiter_providers.network import WARM_UP_BYTES, NetworkProvider

from profiler_parts.models import Model
from profiler_parts.ours import Ours
from profiler_parts.replay import Schedule
from profiler_parts.settings import (
    AIM_ERROR,
    DRUPE_KB,
    DRUPE_PROBES_PER_HOUR,
    DRUPE_SIZES_KB,
    MB,
    OUR_KB,
    SIM_HOURS,
    Settings,
)


def ms_list(times: Sequence[float], digits: int = 0) -> str:
    return ", ".join(f"{t:.{digits}f}" for t in times)


def pct(value: float) -> str:
    return f"{value:+.1%}"


def describe_round(sizes: Sequence[int]) -> str:
    parts = [f"{s:,} (warm-up)" if s == WARM_UP_BYTES else f"{s:,}" for s in sizes]
    return f"{' + '.join(parts)} = {sum(sizes):,} B"


def print_ours(ours: Ours) -> None:
    print("  probing rounds (the provider's own probe_bytes accounting, warm-ups included):")
    for i, (sizes, start) in enumerate(zip(ours.rounds, ours.round_starts_s, strict=True), 1):
        print(f"    round {i} at +{start:5.1f} s: {describe_round(sizes)}")
    total = sum(map(sum, ours.rounds))
    report = ours.report
    errors = f" ({report['errors']})" if report["errors"] else ""
    print(
        f"  {total:,} B in {len(ours.rounds)} probing rounds; {report['probes_sent']} recorded "
        f"probes, {report['probe_failures']} failed{errors}"
    )
    first, last = ours.fits[0], ours.fits[-1]
    by_size: dict[float, list[float]] = {}
    for size_kbit, ms in report["samples"]:
        by_size.setdefault(size_kbit, []).append(ms)
    samples = "; ".join(
        f"{x * 1000 / 8 / OUR_KB:g} KB: {ms_list(times, 1)}" for x, times in sorted(by_size.items())
    )
    print(f"  its samples (ms, the worker's own time per probe): {samples}")
    print(
        f"  {len(ours.fits)} fits published; first {first.model} from {first.samples} samples, "
        f"last {last.model} from {last.samples} samples; {ours.seconds:.0f} s"
    )
    print(f"  {ours.wire}")


def print_bytes(
    defaults: NetworkProvider, ours: Ours, schedule: Schedule, settings: Settings
) -> tuple[float, float]:
    """The bytes table; returns (ours, DRUPE) bytes per link per hour."""
    hours = schedule.hours[1:]  # the first hour holds the start-up round as well
    ours_hour = statistics.mean(hours)
    interval, jitter = defaults.interval, defaults.jitter
    # renewal: the first round past fresh_seconds comes E[X^2] / (2 E[X]) later on average
    overshoot = interval / 2 * (1 + jitter**2 / 3)
    period = defaults.fresh_seconds + overshoot
    full_round = WARM_UP_BYTES + sum(defaults.probe_sizes)
    arithmetic = 3600 / period * full_round
    drupe_probe = statistics.mean(DRUPE_SIZES_KB) * DRUPE_KB
    drupe_hour = DRUPE_PROBES_PER_HOUR * drupe_probe
    probing_rounds = sum(schedule.round_bytes.values())
    mean_round = sum(b * n for b, n in schedule.round_bytes.items()) / max(probing_rounds, 1)
    rows = [
        [
            f"ours, defaults: planner replayed {SIM_HOURS} h on a virtual clock",
            f"{mean_round:,.0f}",
            f"{probing_rounds / SIM_HOURS:.2f}",
            f"{ours_hour / MB:.2f} ({min(hours) / MB:.1f}-{max(hours) / MB:.1f})",
            ratio_text(ours_hour / drupe_hour, 3),
        ],
        [
            f"ours, arithmetic: 3600 / ({defaults.fresh_seconds:g} + {overshoot:.1f}) s",
            f"{full_round:,}",
            f"{3600 / period:.2f}",
            f"{arithmetic / MB:.2f}",
            ratio_text(arithmetic / drupe_hour, 3),
        ],
        [
            f"DRUPE-style: {DRUPE_PROBES_PER_HOUR}/h x mean of {DRUPE_SIZES_KB} KiB",
            f"{drupe_probe:,.0f}",
            f"{DRUPE_PROBES_PER_HOUR}",
            f"{drupe_hour / MB:.2f}",
            "1.000x",
        ],
    ]
    print_table(
        [
            "schedule",
            "B per probing round",
            "probing rounds/h",
            "MB/link/h (hours min-max)",
            "/ DRUPE",
        ],
        rows,
        Piped(),
        title="Probe bytes per link per hour (payload; ours at its default settings)",
    )
    mix = ", ".join(f"{b:,} B x {n}" for b, n in sorted(schedule.round_bytes.items()))
    print(
        f"  ours: interval {interval:g} s +-{jitter:.0%}, "
        f"fresh_seconds {defaults.fresh_seconds:g}, "
        f"max_probes_per_round {defaults.max_probes_per_round}, budget "
        f"{defaults.budget / MB:g} MB/link/h (not reached), probe sizes "
        f"{[s // OUR_KB for s in defaults.probe_sizes]} KB + a {WARM_UP_BYTES:,} B warm-up per "
        f"probing round. A link is re-probed only once its samples are older than "
        f"fresh_seconds, at the first round after that: every {period:.0f} s on average. "
        f"Rounds of the replay: {mix} (a round that lands between the samples' ages "
        f"splits a re-probe in two). budget_report() at the end: "
        f"{schedule.last_hour_report:,} B. Passive samples (real transfers to the peer) "
        f"would lower this further; none are counted. The first hour (with the start-up "
        f"round, left out of the mean): {schedule.hours[0] / MB:.2f} MB."
    )
    capped = (
        "; the --quick replay is capped at 1000 KB, this figure is not" if settings.quick else ""
    )
    print(
        f"  DRUPE: one probe a minute, KB = {DRUPE_KB} B, no warm-up; each probe also opens "
        f"an SSH connection (not counted){capped}."
    )
    return ours_hour, drupe_hour


def print_errors(
    title: str, models: Sequence[Model], measured: dict[int, list[float]]
) -> dict[str, list[float]]:
    """The per-size table; returns each model's relative errors."""
    errors: dict[str, list[float]] = {m.label: [] for m in models}
    rows = []
    for kb, times in measured.items():
        size = kb * OUR_KB
        median = statistics.median(times)
        row = [f"{kb:,}", f"{median:.1f} ({', '.join(f'{t:.1f}' for t in times)})"]
        for model in models:
            predicted = model.cost_ms(size)
            error = (predicted - median) / median
            errors[model.label].append(error)
            outside = "" if model.covers(size) else "*"
            row.append(f"{predicted:.1f} {pct(error)}{outside}")
        rows.append(row)
    print_table(
        ["KB", "measured ms (runs)", *(m.label for m in models)],
        rows,
        Piped(),
        title=f"{title} (predicted ms, error; * = outside that model's probed sizes)",
    )
    return errors


def print_models(models: Sequence[Model]) -> None:
    rows = []
    for m in models:
        lo, hi = m.lo_kbit * m.bytes_per_kb / 8 / 1000, m.hi_kbit * m.bytes_per_kb / 8 / 1000
        rows.append(
            [
                m.label,
                m.kind,
                str(m.samples),
                f"{lo:,.0f}-{hi:,.0f}",
                f"{m.a:.3g}",
                f"{m.b:.4g}",
                f"{m.c:.4g}",
                "yes" if m.a < 0 else "no",
                "yes" if m.negative_in_range() else "no",
                "yes" if m.decreasing_in_range() else "no",
            ]
        )
    print_table(
        [
            "model",
            "type",
            "points",
            "probed KB",
            "a",
            "b",
            "c",
            "a < 0",
            "negative in range",
            "decreasing in range",
        ],
        rows,
        Piped(),
        title="Models (x in Kbit: ours bytes*8/1000; DRUPE KB*8 with KB = 1024 B, "
        "as it sized files)",
    )


def print_error_summary(errors: dict[tuple[str, str], list[float]]) -> None:
    rows = [
        [label, against, f"{max(map(abs, e)):.1%}", f"{statistics.mean(map(abs, e)):.1%}"]
        for (label, against), e in errors.items()
    ]
    print_table(
        ["model", "held against", "max |err|", "mean |err|"],
        rows,
        Piped(),
        title="Prediction error per model (|predicted - median| / median over the checked sizes)",
    )


def print_summary(ours_errors: dict[str, list[float]], ours_hour: float, drupe_hour: float) -> None:
    ratio = ours_hour / drupe_hour
    print("\nSummary (DESIGN.md section 5: within 10 % of measured, fewer probe bytes than DRUPE)")
    for condition, errors in ours_errors.items():
        worst = max(abs(e) for e in errors)
        print(
            f"  ours (last fit), max |error| over the checked sizes, transfers {condition}: "
            f"{worst:.1%} (aim <= {AIM_ERROR:.0%}): {verdict(worst <= AIM_ERROR)}"
        )
    print(
        f"  probe bytes per link per hour, ours / DRUPE-style: {ratio_text(ratio, 3)} "
        f"({drupe_hour / ours_hour:.1f}x fewer; aim < 1): {verdict(ratio < 1)}"
    )
