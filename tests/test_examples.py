"""The examples run as a user runs them, and the HEFT in one of them schedules correctly.

Each example runs as a subprocess on the in-process bus (it starts its own agents) and
on RabbitMQ with ``--with-agents``. The HEFT functions are checked on a small DAG whose
ranks and schedule were computed by hand.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from jupiter_bus import heft
from jupiter_bus.messages import LinkCost
from jupiter_bus.state import NetworkState

from .conftest import AMQP_URL

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
BROKERS = [
    pytest.param("memory", id="memory"),
    pytest.param("amqp", id="amqp", marks=pytest.mark.amqp),
]


def run_example(name: str, broker: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``examples/<name>.py`` as a user would; on amqp with its own agents."""
    bus = ["--broker", AMQP_URL, "--with-agents"] if broker == "amqp" else []
    # the examples default to $JUPITER_BUS_URL: "memory" must mean memory here
    env = {k: v for k, v in os.environ.items() if k != "JUPITER_BUS_URL"}
    return subprocess.run(
        [sys.executable, str(EXAMPLES / f"{name}.py"), *bus, *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


def result_text(lines: list[str]) -> str:
    return "\n".join(lines)


def succeeded(result: subprocess.CompletedProcess[str]) -> list[str]:
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    return result.stdout.splitlines()


# -- HEFT on a hand-computed DAG --------------------------------------------------------
#
# Two nodes p (0) and q (1); A -> B, A -> C, A -> E, B -> D, C -> D. Every link costs
# 0.1*D^2 + 0.5*D + 2 ms for D Kbit: 10 Kbit -> 17 ms, 20 Kbit -> 52 ms.
#
#   compute  p   q   mean       rank(D) = 10
#   A       10  20   15         rank(E) = 8
#   B       20  10   15         rank(B) = 15 + 17 + 10 = 42
#   C       30  30   30         rank(C) = 30 + 17 + 10 = 57
#   D       10  10   10         rank(A) = 15 + max(17+42, 52+57, 17+8) = 124
#   E        4  12    8
#
# Order A, C, B, D, E. A: p [0,10]. C: p ready 10 -> [10,40]; q ready 62. B: p [40,60];
# q ready 27 -> [27,37] wins. D: p ready max(37+17, 40) = 54 -> [54,64]; q ready
# max(37, 40+17) = 57 -> [57,67]. E: p ready 10, gap [40,54] -> [40,44] (insertion;
# without it p would give 68 and q 49). Makespan 64.

COMPUTE = {
    "A": np.array([10.0, 20.0]),
    "B": np.array([20.0, 10.0]),
    "C": np.array([30.0, 30.0]),
    "D": np.array([10.0, 10.0]),
    "E": np.array([4.0, 12.0]),
}
DATA = {("A", "B"): 10.0, ("A", "C"): 20.0, ("A", "E"): 10.0, ("B", "D"): 10.0, ("C", "D"): 10.0}
PARAMS = np.tile(np.array([0.1, 0.5, 2.0]), (2, 2, 1))


def test_comm_cost_is_quadratic_in_kbit_and_free_on_the_same_node() -> None:
    assert heft.quadratic_ms(PARAMS, 10.0) == pytest.approx(np.array([[0.0, 17.0], [17.0, 0.0]]))
    assert heft.quadratic_ms(PARAMS, 20.0)[0, 1] == pytest.approx(52.0)


def test_upward_ranks_match_the_hand_computation() -> None:
    ranks = heft.upward_ranks(COMPUTE, heft.comm_tables(DATA, PARAMS))
    assert ranks == pytest.approx({"A": 124.0, "B": 42.0, "C": 57.0, "D": 10.0, "E": 8.0})


def test_schedule_fills_idle_gaps_and_has_the_hand_computed_makespan() -> None:
    slots = heft.heft_schedule(COMPUTE, heft.comm_tables(DATA, PARAMS))
    assert [(s.task, s.node) for s in slots] == [("A", 0), ("C", 0), ("B", 1), ("D", 0), ("E", 0)]
    times = [t for s in slots for t in (s.start_ms, s.finish_ms)]
    assert times == pytest.approx([0, 10, 10, 40, 27, 37, 54, 64, 40, 44])
    assert heft.makespan(slots) == pytest.approx(64.0)
    assert heft.crossing_edge(slots, DATA) == ("A", "B")  # B -> D is as big; A -> B first


def test_earliest_start_takes_the_first_gap_that_fits() -> None:
    busy = [(0.0, 10.0), (20.0, 30.0)]
    assert heft.earliest_start(busy, 0.0, 5.0) == 10.0
    assert heft.earliest_start(busy, 12.0, 8.0) == 12.0
    assert heft.earliest_start(busy, 12.0, 9.0) == 30.0
    assert heft.earliest_start([], 7.0, 100.0) == 7.0


def test_busy_cpu_slows_a_node_down_to_a_floor() -> None:
    scaled = heft.scaled_compute({"t": [10.0, 10.0, 10.0]}, [0.0, 50.0, 99.0])
    assert scaled["t"].tolist() == pytest.approx([10.0, 20.0, 100.0])


def test_a_cycle_in_the_task_graph_is_refused() -> None:
    with pytest.raises(ValueError, match="cycle"):
        heft.topological_order(["x", "y"], [("x", "y"), ("y", "x")])


def test_live_comm_tables_agree_with_the_quadratic_on_the_same_costs() -> None:
    state = NetworkState()
    for src, dst in (("p", "q"), ("q", "p")):
        state.apply(
            LinkCost(
                src=src, dst=dst, a=0.1, b=0.5, c=2.0, samples=5, r2=1.0, min_kbit=0, max_kbit=99
            ),
            received_at=1.0,
        )
    live = heft.live_comm_tables(state.snapshot(), ["p", "q"], DATA)
    for edge, size in DATA.items():
        assert live[edge] == pytest.approx(heft.quadratic_ms(PARAMS, size))


# -- the examples as programs -----------------------------------------------------------

SCHEDULE_ROW = re.compile(r"^  (\w+)\s+(\S+)\s+([\d.]+)\s+([\d.]+)$")


@pytest.mark.parametrize("broker", BROKERS)
def test_heft_example_maps_the_dag_and_moves_one_output(broker: str, tmp_path: Path) -> None:
    lines = succeeded(run_example("heft_scheduler", broker, "--transfer-dir", str(tmp_path)))
    rows = [m.groups() for line in lines if (m := SCHEDULE_ROW.match(line))]
    assert sorted(row[0] for row in rows) == sorted(heft.BASE_COMPUTE_MS)
    makespan = next(float(line.split()[1]) for line in lines if line.startswith("makespan:"))
    assert makespan == pytest.approx(max(float(row[3]) for row in rows), abs=0.1)
    moved = next(line for line in lines if line.startswith("data_transfer:"))
    assert " ok in " in moved
    size = int(re.search(r"\((\d+) bytes\)", moved).group(1))  # type: ignore[union-attr]
    landed = list(tmp_path.glob("*/in/*.out"))
    assert len(landed) == 1
    assert landed[0].stat().st_size == size


@pytest.mark.parametrize("broker", BROKERS)
def test_publish_example_collects_results_from_the_completion_queue(
    broker: str, tmp_path: Path
) -> None:
    result = run_example("publish_transfer_job", broker, "--transfer-dir", str(tmp_path))
    lines = succeeded(result)
    sent = next(line for line in lines if line.strip().startswith("sent "))
    assert '"type": "transfer.request"' in sent
    answer = next(line for line in lines if line.strip().startswith("result "))
    assert '"type": "transfer.result"' in answer
    assert '"ok": true' in answer
    assert sum("collected job" in line and "ok" in line for line in lines) == 3
    assert lines[-1].startswith("done: 4 files transferred")
    assert sorted(p.name for p in (tmp_path / "in").iterdir()) == [
        "job0.bin",
        "job1.bin",
        "job2.bin",
        "plain.bin",
    ]


@pytest.mark.parametrize("broker", BROKERS)
def test_watch_example_prints_updates_then_stops(broker: str) -> None:
    lines = succeeded(run_example("watch_network", broker, "--count", "5", "--sizes-kb", "1,1000"))
    updates = [line for line in lines if "->" in line and "1000 KB" in line]
    assert len(updates) == 5
    assert all("ms" in line and "r2" in line for line in updates)
    assert "stopped after 5 updates (count reached" in result_text(lines)
    assert any("src/dst" in line for line in lines)


@pytest.mark.parametrize("broker", BROKERS)
def test_embed_example_reads_state_copies_and_follows_updates(broker: str) -> None:
    """The README's facade block, run by examples/embed_facade.py."""
    lines = succeeded(run_example("embed_facade", broker))
    text = result_text(lines)
    assert re.search(r"-> node2\S*: 4 MB in [\d.]+ ms", text)
    assert "copied 4096 bytes" in text
    assert "live: node1" in text
    assert lines[-1] == "done"


@pytest.mark.amqp
def test_legacy_example_copies_and_reads_in_jupiters_formats() -> None:
    """The README's "Coming from Jupiter" block, run by examples/jupiter_legacy.py."""
    lines = succeeded(run_example("jupiter_legacy", "amqp"))
    text = result_text(lines)
    assert re.search(r"copied 4096 bytes; node1-\w+ -> node2-\w+: \{'a': ", text)
    assert "'ip': '127.0.0.1'" in text
    assert re.search(r"node2-\w+: cpu [\d.]+ %, memory [\d.]+ %", text)
    assert lines[-1] == "done"


def test_legacy_example_says_it_needs_a_broker() -> None:
    result = run_example("jupiter_legacy", "memory")
    assert result.returncode == 2
    assert "needs RabbitMQ" in result.stderr


def test_watch_example_stops_at_its_duration_without_enough_updates() -> None:
    lines = succeeded(
        run_example("watch_network", "memory", "--count", "1000", "--duration", "0.5")
    )
    assert "0.5 s passed" in result_text(lines)


@pytest.mark.amqp
def test_heft_example_without_agents_fails_naming_the_missing_nodes() -> None:
    result = subprocess.run(
        [
            sys.executable,
            str(EXAMPLES / "heft_scheduler.py"),
            "--broker",
            AMQP_URL,
            "--nodes",
            "ghost-a-example,ghost-b-example",
            "--timeout",
            "0.3",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stdout + result.stderr
    # Said at once, before any wait: what the run relies on, and the way out.
    assert result.stderr.startswith("note: no agents start here: nodes ghost-a-example, ")
    assert "--with-agents" in result.stderr.splitlines()[0]
    assert "ghost-a-example" in result.stderr
    assert "Traceback" not in result.stderr
