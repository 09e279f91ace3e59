"""``jupiter-bus status`` as an operator drives it: subprocesses against RabbitMQ and a
real agent; the JSON document and the exit status checked."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest

from jupiter_bus.cli.console import EXIT_FAILED, EXIT_UNREACHABLE
from jupiter_bus.topology import TRANSFERS_EXCHANGE, work_queue
from jupiter_bus.transport import connect

from .conftest import AMQP_URL

pytestmark = pytest.mark.amqp


def env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "JUPITER_BUS_URL": AMQP_URL, "XDG_STATE_HOME": str(tmp_path)}


def status(tmp_path: Path, *args: str) -> tuple[int, Any, str]:
    done = subprocess.run(
        [sys.executable, "-m", "jupiter_bus", "status", "--json", "--settle", "1", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env(tmp_path),
    )
    document = orjson.loads(done.stdout) if done.stdout.strip() else None
    return done.returncode, document, done.stderr


def nodes_of(document: Any) -> dict[str, Any]:
    return {entry["node"]: entry for entry in document["nodes"]}


async def _orphan_job(node: str) -> None:
    bus = await connect(AMQP_URL)
    try:
        await bus.declare_work_queue(node)
        await bus.publish(TRANSFERS_EXCHANGE, node, b'{"v": 1}', persistent=True)
    finally:
        await bus.close()


async def _delete_queues(*nodes: str) -> None:
    bus = await connect(AMQP_URL)
    try:
        for node in nodes:
            await bus.delete_queue(work_queue(node))
    finally:
        await bus.close()


def test_status_reports_a_live_agent_a_queue_nobody_serves_and_a_gone_agent(
    tmp_path: Path,
) -> None:
    run = uuid.uuid4().hex[:6]
    alive, orphan = f"st-{run}-a", f"st-{run}-b"
    agent = subprocess.Popen(
        [sys.executable, "-m", "jupiter_bus", "agent", "--node", alive],
        env=env(tmp_path),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        asyncio.run(_orphan_job(orphan))
        deadline = time.monotonic() + 45
        code, document, err = EXIT_FAILED, None, ""
        while time.monotonic() < deadline:
            code, document, err = status(tmp_path, "--node", alive)
            if code == 0:
                break
        assert code == 0, (document, err)
        assert document is not None
        entry = nodes_of(document)[alive]
        assert entry["seen"]
        assert entry["workers"] == 1
        assert entry["jobs_waiting"] == 0
        assert entry["ssh"].startswith("127.0.0.1:")
        assert entry["age_seconds"] < 30
        assert entry["problems"] == []
        assert isinstance(document["dead_letters"], int)
        assert document["reachable"]
        assert "guest" not in orjson.dumps(document).decode()  # no credentials shown

        code, document, _ = status(tmp_path, "--node", orphan)
        assert code == EXIT_FAILED
        entry = nodes_of(document)[orphan]
        assert entry["jobs_waiting"] == 1
        assert entry["workers"] == 0
        assert set(entry["problems"]) == {"no resource sample", "no transfer worker"}

        agent.send_signal(signal.SIGTERM)
        assert agent.wait(timeout=60) == 0
        code, document, _ = status(tmp_path, "--node", alive)
        assert code == EXIT_FAILED  # nobody answers for it any more, nobody serves its queue
        assert "no transfer worker" in nodes_of(document)[alive]["problems"]
    finally:
        agent.kill()
        agent.wait()
        asyncio.run(_delete_queues(alive, orphan))


def test_status_of_an_unreachable_broker_is_one_line_and_69(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "jupiter_bus", "status", "--broker", "amqp://127.0.0.1:1/"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env(tmp_path),
    )
    assert done.returncode == EXIT_UNREACHABLE, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert "Traceback" not in done.stderr
