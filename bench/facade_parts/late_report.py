"""The late joiner's tables: figure 7 and where a join's time goes (7b)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

from harness.tables import figure_text

from facade_parts.report import Summary, below, figure_table, fmt_s, note
from facade_parts.results import Results
from facade_parts.settings import LATE_JOIN_AIM_S, SCALE_NODES, Settings


@dataclass(frozen=True, slots=True)
class LateJoin:
    """What the late-joiner section found: why it is unavailable, or which cells were skipped."""

    unavailable: str | None = None
    skipped: dict[tuple[str, int], str] = field(default_factory=dict)


LATE_BUSES: Final = {"memory": "memory bus", "amqp": "RabbitMQ"}
LATE_PARTS: Final = ("entered", "first", "applied")


def late_cell(results: Results, key: str, n: int) -> str:
    value = results.get(key, n)
    return "-" if value is None else fmt_s(value)


def late_breakdown(settings: Settings, results: Results) -> list[list[str]]:
    lines = []
    for n in settings.nodes:
        for bus, label in LATE_BUSES.items():
            if results.get(f"late.{bus}", n) is None:
                continue
            parts = [late_cell(results, f"late.{bus}.{part}", n) for part in LATE_PARTS]
            lines.append([f"{n}", label, *parts, late_cell(results, f"late.{bus}", n),
                          late_cell(results, f"late.{bus}.cpu", n),
                          late_cell(results, f"late.{bus}.rebuilt", n),
                          late_cell(results, f"late.{bus}.raw", n)])  # fmt: skip
    return lines


def late_setup_note(settings: Settings, results: Results) -> str:
    parts = []
    for n in settings.nodes:
        for bus, label in LATE_BUSES.items():
            start = results.get(f"late.{bus}.setup.start", n)
            if start is None or n < SCALE_NODES:
                continue
            build = results.get(f"late.{bus}.setup.build", n)
            seed = results.get(f"late.{bus}.setup.seed", n) or 0.0
            parts.append(
                f"{label}, {n:,} agents: "
                + ("" if build is None else f"links built in {fmt_s(build)}, ")
                + f"agents started in {fmt_s(start)}, every agent's publish_links in "
                + fmt_s(seed)
            )
    return "; ".join(parts)


def late_where(results: Results, bus: str, n: int) -> str:
    """Where the time of a late join went (medians, so the steps need not add up)."""

    def at(key: str) -> str:
        return late_cell(results, f"late.{bus}.{key}" if key else f"late.{bus}", n)

    text = (
        f"{LATE_BUSES[bus]}, {n:,} nodes: {at('')} until get_network_data returned; facade "
        f"open (connected, subscribed, request sent) at {at('entered')}, first answer applied "
        f"at {at('first')}, every link applied at {at('applied')}; this process used "
        f"{at('cpu')} of CPU. With every answer rebuilt: {at('rebuilt')}"
    )
    if results.get(f"late.{bus}.raw", n) is not None:
        text += f"; raw aio-pika asker (broker and agents only): {at('raw')}"
    return text + "."


def print_late_joiner(
    settings: Settings, results: Results, summary: Summary, found: LateJoin
) -> None:
    lines = []
    for n in settings.nodes:
        if found.unavailable:
            lines.append([str(n), "not available", "not available"])
            continue
        cells = [
            fmt_s(value) if (value := results.get(f"late.{bus}", n)) is not None
            else found.skipped.get((bus, n), "-")
            for bus in LATE_BUSES
        ]  # fmt: skip
        lines.append([str(n), *cells])
    figure_table(
        "7. late joiner: a facade opened after the agents published, until "
        "get_network_data(nodes=[all]) returns (median)",
        ["nodes", "memory bus (agents here)", "RabbitMQ (agents in a child process)"],
        lines,
    )
    aim = f"< {LATE_JOIN_AIM_S:g} s"
    if found.unavailable:
        print(f"not available: {found.unavailable}.")
        summary.lines.append(f"  late joiner at {SCALE_NODES} nodes: not available, aim {aim}: -")
        return
    print_late_breakdown(settings, results)
    amqp = results.get("late.amqp", SCALE_NODES)
    reason = found.skipped.get(("amqp", SCALE_NODES))
    summary.check(
        f"late joiner at {SCALE_NODES} nodes on RabbitMQ (s)" + (f" [{reason}]" if reason else ""),
        amqp,
        aim,
        below(amqp, LATE_JOIN_AIM_S),
    )
    memory = results.get("late.memory", SCALE_NODES)
    if memory is not None:
        summary.lines.append(
            f"  late joiner at {SCALE_NODES} nodes on the memory bus (s, agents in this "
            f"process; for reference): {figure_text(memory)}"
        )


def print_late_breakdown(settings: Settings, results: Results) -> None:
    figure_table(
        "7b. where a late join's time goes (from opening the facade; medians)",
        ["nodes", "bus", "facade open", "first answer applied", "every link applied",
         "get_network_data returned", "CPU here", "answers rebuilt: returned",
         "raw aio-pika asker"],
        late_breakdown(settings, results),
    )  # fmt: skip
    note(
        "One agent (no providers) per node publishes its N-1 links once with "
        "NodeContext.publish_links (one binary network.batch, kept as its next snapshot "
        "answer). The facade asks on entering (snapshot.request, batch: true); each agent "
        "answers with one batch. 'facade open': connected, subscribed, request sent; 'first "
        "answer applied' and 'every link applied': seen by a task that watches the state's "
        "version and link_count (it holds no snapshot); 'CPU here': this process, during the "
        "join. 'answers rebuilt': the same join right after every agent published one link "
        "again (a probe round that changed some links), so each answer is built anew "
        "(LinkBatch.from_costs of N-1 links): on the memory bus in this process, over "
        "RabbitMQ in the child, the 1,000 agents one after another (on their own nodes they "
        "would build in parallel). 'raw aio-pika asker': a private queue, the same request, "
        "the answers of this run's agents counted without decoding: the broker's and the "
        "agents' share. Setup, untimed: " + (late_setup_note(settings, results) or "-") + "."
    )
    slow = [
        (bus, n)
        for n in settings.nodes
        for bus in LATE_BUSES
        if n >= SCALE_NODES and (value := results.get(f"late.{bus}", n)) and value >= 1.0
    ]
    for bus, n in slow:
        note("missed: " + late_where(results, bus, n))
