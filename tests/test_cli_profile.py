"""On-demand link profiling: ``JupiterInterface.profile_link`` against a real agent whose
profiler probes a real OpenSSH sshd (both buses), and ``jupiter-bus profile`` as a user
drives it (subprocess, RabbitMQ, ``--json``, ``--plot`` read back)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from jupiter_bus import JupiterInterface, Unroutable
from jupiter_bus.agent import Agent
from jupiter_bus.cli.console import EXIT_FAILED
from jupiter_bus.transport import connect

from .conftest import AMQP_URL
from .sshd import SshServer
from .test_cli import command

SIZES_KB = [16, 128, 1024]


def providers(ssh_server: SshServer, tmp_path: Path) -> dict[str, Any]:
    return {
        "transfer": {
            "known_hosts": str(ssh_server.known_hosts),
            "client_keys": [str(ssh_server.client_key)],
            "state_dir": str(tmp_path / "state"),
        },
        "network": {
            "peers": [
                {
                    "node": "peer",
                    "host": "127.0.0.1",
                    "port": ssh_server.port,
                    "user": ssh_server.user,
                },
            ],
            "probe_sizes_kb": SIZES_KB,
            "interval": 3600.0,  # only what is asked for
            "state_dir": str(tmp_path / "state"),
        },
    }


@pytest.fixture
async def agent_node(
    bus_url: str, ssh_server: SshServer, tmp_path: Path, unique: str
) -> AsyncIterator[str]:
    node = f"pf-{unique}"
    agent = Agent(node, bus_url, providers(ssh_server, tmp_path), host="127.0.0.1")
    task = asyncio.create_task(agent.run())
    try:
        await asyncio.wait_for(agent.started(), 30)
        yield node
    finally:
        agent.stop()
        await asyncio.wait_for(task, 30)
        bus = await connect(bus_url)
        try:
            await bus.delete_queue(f"jupiter.transfer.{node}")
        finally:
            await bus.close()


async def test_profile_link_measures_each_size_and_fits_them(
    agent_node: str, bus_url: str, ssh_server: SshServer
) -> None:
    async with JupiterInterface(bus_url) as bus:
        result = await bus.profile_link(agent_node, "peer", repeats=2, timeout=60)
        assert result.ok, result.reason
        assert (result.src, result.dst) == (agent_node, "peer")
        assert [kbit for kbit, _ in result.points] == [s * 8.0 for s in SIZES_KB] * 2
        assert all(ms > 0 for _, ms in result.points)
        assert result.fitted
        assert result.r2 is not None
        assert result.a is not None
        assert result.a >= 0
        probes = ssh_server.home / "jupiter-probes"
        assert (probes / f"probe-{agent_node}-1024000.bin").stat().st_size == 1_024_000

        other = await bus.profile_link(agent_node, "stranger", timeout=30)
        assert not other.ok
        assert other.reason is not None
        assert "no peer stranger (known: peer)" in other.reason
        with pytest.raises(Unroutable, match="no network profiler serves node"):
            await bus.profile_link(f"{agent_node}-none", "peer", timeout=10)


@pytest.mark.amqp
async def test_jupiter_bus_profile_prints_points_and_fit_and_plots_them(
    ssh_server: SshServer, tmp_path: Path, unique: str
) -> None:
    pyplot = pytest.importorskip("matplotlib.pyplot")
    node = f"pfc-{unique}"
    config = tmp_path / "agent.toml"
    config.write_text(
        f'node = "{node}"\nhost = "127.0.0.1"\n'
        "[providers.transfer]\n"
        f'known_hosts = "{ssh_server.known_hosts}"\n'
        f'client_keys = ["{ssh_server.client_key}"]\n'
        f'state_dir = "{tmp_path / "state"}"\n'
        "[providers.network]\n"
        f"probe_sizes_kb = {SIZES_KB}\ninterval = 3600\n"
        f'state_dir = "{tmp_path / "state"}"\n'
        f'peers = [{{node = "peer", host = "127.0.0.1", port = {ssh_server.port}, '
        f'user = "{ssh_server.user}"}}]\n',
        encoding="utf-8",
    )
    env = {"JUPITER_BUS_URL": AMQP_URL, "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    picture = tmp_path / "fit.png"
    cli = [sys.executable, "-m", "jupiter_bus"]
    async with command(*cli, "agent", "--config", str(config), env=env) as agent:
        await agent.wait_for("running providers", timeout=60)
        try:
            plain = await asyncio.to_thread(
                subprocess.run,
                [*cli, "profile", node, "peer", "--repeats", "2", "--plot", str(picture)],
                capture_output=True, text=True, timeout=120, env=env,
            )  # fmt: skip
            as_json = await asyncio.to_thread(
                subprocess.run,
                [*cli, "profile", node, "peer", "--sizes-kb", "32,256,2048", "--json"],
                capture_output=True, text=True, timeout=120, env=env,
            )  # fmt: skip
            unknown = await asyncio.to_thread(
                subprocess.run,
                [*cli, "profile", node, "stranger"],
                capture_output=True, text=True, timeout=120, env=env,
            )  # fmt: skip
        finally:
            agent.process.terminate()
            await agent.finish()
            bus = await connect(AMQP_URL)
            try:
                await bus.delete_queue(f"jupiter.transfer.{node}")
            finally:
                await bus.close()
    assert plain.returncode == 0, plain.stdout + plain.stderr
    lines = plain.stdout.splitlines()
    assert lines[0] == f"{node} -> peer: 6 points"
    assert len([line for line in lines if line.strip().endswith(" ms")]) == 6
    assert any(line.startswith("fit: cost_ms = ") and " r2 " in line for line in lines)
    assert f"wrote {picture}" in plain.stderr
    pixels = pyplot.imread(picture)
    assert pixels.shape[0] > 200
    assert pixels[..., :3].std() > 0.05

    assert as_json.returncode == 0, as_json.stderr
    result = orjson.loads(as_json.stdout)
    assert result["type"] == "profile.result"
    assert [p[0] for p in result["points"]] == [256.0, 2048.0, 16384.0]

    assert unknown.returncode == EXIT_FAILED
    assert "no peer stranger" in unknown.stderr
    assert len(unknown.stderr.strip().splitlines()) == 1
