"""The demo a newcomer runs first, driven as a user does: plain lines, Ctrl-C, a real terminal.

Real parts throughout: three agents with SFTP workers and profilers, asyncssh servers
with shaped links, HEFT through the facade, on the in-process bus and on RabbitMQ.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .conftest import AMQP_URL

DEMO = [sys.executable, "-m", "jupiter_bus", "demo"]
FIT = re.compile(
    r"^link (node\d\S*)->(node\d\S*): .*: ([\d.]+) Mbit/s, .*r2 ([\d.]+).*"
    r"\(shaped ([\d.]+) Mbit/s"
)


def _links_found(lines: list[str]) -> dict[tuple[str, str], tuple[float, float]]:
    """Each link's last fitted and shaped rate, from the plain output."""
    found = {}
    for line in lines:
        match = FIT.match(line)
        if match:
            src, dst, rate, _, shaped = match.groups()
            found[src, dst] = (float(rate), float(shaped))
    return found


@pytest.mark.parametrize("broker", ["memory://demo", AMQP_URL], ids=["memory", "amqp"])
def test_demo_measures_every_link_schedules_and_moves_real_bytes(broker: str) -> None:
    result = subprocess.run(
        [*DEMO, "--broker", broker, "--duration", "15"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert "Traceback" not in result.stderr
    links = _links_found(lines)
    assert len(links) == 6, lines  # 3 nodes: every ordered pair got a fit
    for (src, dst), (rate, shaped) in links.items():
        assert 0.7 * shaped <= rate <= 1.3 * shaped, (src, dst, rate, shaped)
    assert any(line.startswith("round 1: HEFT makespan") for line in lines)
    moved = [line for line in lines if re.match(r"^transfer \S+ \S+: \d+ bytes in \d+ ms", line)]
    assert moved, lines
    assert not [line for line in lines if "FAILED" in line]
    final = lines.index(next(line for line in lines if line.startswith("final schedule")))
    assert len([line for line in lines[final + 1 :] if " on node" in line]) == 7  # 7 tasks
    assert lines[-1].startswith("verdict: OK: 6/6 links")
    if broker.startswith("amqp"):  # its own nodes, suffixed per run, and no queue left over
        assert re.search(r"nodes node1-[0-9a-f]{4}, node2-", lines[0])
        run = re.search(r"node1-([0-9a-f]{4})", lines[0])
        assert run is not None
        queues = subprocess.run(
            ["rabbitmqctl", "-q", "list_queues", "name"], capture_output=True, text=True
        )
        if queues.returncode == 0:
            assert f"-{run.group(1)}" not in queues.stdout


def test_ctrl_c_ends_with_the_final_schedule_a_verdict_and_status_130() -> None:
    demo = subprocess.Popen(
        [*DEMO, "--duration", "0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert demo.stdout is not None
    try:
        for line in demo.stdout:
            if line.startswith("transfer "):
                break
        demo.send_signal(signal.SIGINT)
        rest, err = demo.communicate(timeout=60)
    finally:
        demo.kill()
    assert demo.returncode == 130, err
    assert "final schedule (round" in rest
    assert "verdict: " in rest
    assert "jupiter-bus: interrupted" in err
    assert "Traceback" not in err


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")
def test_the_live_view_in_a_real_terminal(tmp_path: Path) -> None:
    session = f"jb-demo-{os.getpid()}"
    done = tmp_path / "status"
    command = f"{' '.join(DEMO)} --duration 12; echo $? > {done}; sleep 60"
    subprocess.run(
        ["tmux", "new-session", "-d", "-s", session, "-x", "140", "-y", "60", command],
        check=True,
        env={**os.environ, "TERM": "xterm-256color"},
    )
    try:
        screens = []
        deadline = time.monotonic() + 60
        while not done.exists() and time.monotonic() < deadline:
            time.sleep(1)
            shot = subprocess.run(
                ["tmux", "capture-pane", "-p", "-t", session], capture_output=True, text=True
            )
            screens.append(shot.stdout)
        final = subprocess.run(
            ["tmux", "capture-pane", "-p", "-S", "-200", "-t", session],
            capture_output=True,
            text=True,
        ).stdout
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], check=False)
    assert done.read_text().strip() == "0", final
    live = [s for s in screens if "link costs" in s and "Mbit/s" in s and "r2 " in s]
    assert live, screens[-1] if screens else "no screen captured"
    frame = live[-1]
    assert "nodes (resource events)" in frame
    assert "127.0.0.1:" in frame
    assert "transfers (HEFT's crossing edges" in frame
    assert "━" in frame
    assert re.search(r"schedule \(round \d+, makespan \d+ ms\)", frame)
    # the header's clock moves: the view is live, not printed once
    clocks = {m.group(1) for s in screens if (m := re.search(r"demo +([\d.]+) s of 12 s", s))}
    assert len(clocks) >= 3, clocks
    assert "verdict: OK" in final
