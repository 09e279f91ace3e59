"""The demo a newcomer runs first: it must work, on the in-process bus and on RabbitMQ."""

from __future__ import annotations

import subprocess
import sys

import pytest

from .conftest import AMQP_URL


@pytest.mark.parametrize("broker", ["memory://demo", AMQP_URL], ids=["memory", "amqp"])
def test_demo_shows_events_a_transfer_and_bad_input(broker: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "jupiter_bus.cli", "demo", "--broker", broker],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert any(line.strip().startswith("event  resource.demo-node1") for line in lines)
    assert any("reply  transfer via demo-node1" in line and "ok=True" in line for line in lines)
    assert any(line.strip().startswith("dead   resource.demo-node3") for line in lines)
    assert any("unreachable" in line for line in lines)
    assert "Traceback" not in result.stderr
