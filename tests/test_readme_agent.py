"""The README's agent TOML, as a user would run it: ``jupiter-bus agent --config``.

The example is taken from README.md itself; only what names the reader's machines is
swapped for this machine's (addresses, key files, the user, the data folder). Its
``allow_roots = ["/data"]`` stays a folder the probe files are not in: the profiler's
probes must still go out, and their fits must be published (issue 10).
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

from jupiter_bus import sealing
from jupiter_bus.messages import LinkCost, ResourceSample, decode, encode
from jupiter_bus.topology import EVENTS_EXCHANGE, network_key, resource_key
from jupiter_bus.transport import connect

from .conftest import AMQP_URL
from .sshd import SshServer
from .test_cli import command

README = Path(__file__).resolve().parents[1] / "README.md"

pytestmark = pytest.mark.amqp


def readme_agent_toml() -> dict[str, Any]:
    """The ``toml`` block of the README's "Running a node agent" section, parsed."""
    blocks = re.findall(r"```toml\n(.*?)```", README.read_text(encoding="utf-8"), re.S)
    assert blocks, "README.md has no toml block"
    return tomllib.loads(blocks[0])


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return repr(value)


def toml_text(config: dict[str, Any]) -> str:
    lines = [f"{k} = {toml_value(v)}" for k, v in config.items() if not isinstance(v, dict)]
    for name, table in config.get("providers", {}).items():
        lines.append(f"[providers.{name}]")
        lines += [f"{k} = {toml_value(v)}" for k, v in table.items()]
    return "\n".join(lines) + "\n"


async def test_the_readme_agent_probes_its_peers_and_publishes_fits(
    ssh_server: SshServer, tmp_path: Path, unique: str
) -> None:
    config = readme_agent_toml()
    providers = config["providers"]
    assert providers["transfer"]["allow_roots"] == ["/data"]  # what the reader copies
    assert set(providers) == {"resources", "transfer", "network"}
    node, peer = f"readme-{unique}", f"readme-peer-{unique}"
    data = tmp_path / "data"
    data.mkdir()
    seal_key = tmp_path / "seal.key"
    seal_key.write_bytes(sealing.new_key())
    seal_key.chmod(0o600)
    config.update(node=node, host="127.0.0.1", ssh_port=ssh_server.port)
    providers["transfer"].update(
        allow_roots=[str(data)],
        known_hosts=str(ssh_server.known_hosts),
        client_keys=[str(ssh_server.client_key)],
        seal_key_file=str(seal_key),
        state_dir=str(tmp_path / "state"),
    )
    providers["network"].update(default_user=ssh_server.user, interval=2)
    path = tmp_path / "node1.toml"
    path.write_text(toml_text(config), encoding="utf-8")
    env = {**os.environ, "JUPITER_BUS_URL": AMQP_URL, "XDG_STATE_HOME": str(tmp_path / "xdg")}

    transport = await connect(AMQP_URL)
    try:
        async with (
            transport.subscribe([network_key(node, peer)]) as fits,
            command(sys.executable, "-m", "jupiter_bus.cli", "agent", "--config", str(path),
                    env=env) as agent,
        ):  # fmt: skip
            await agent.wait_for("running providers", timeout=60)
            # The peer announces where its SSH server is, as its agent would.
            announce = ResourceSample(
                node=peer,
                cpu_percent=1.0,
                cpu_count=1,
                memory_percent=1.0,
                memory_total_bytes=1,
                memory_available_bytes=1,
                host=ssh_server.host,
                ssh_port=ssh_server.port,
            )

            async def keep_announcing() -> None:  # every second, as an agent would every 5 s
                while True:
                    await transport.publish(EVENTS_EXCHANGE, resource_key(peer), encode(announce))
                    await asyncio.sleep(1.0)

            announcer = asyncio.create_task(keep_announcing())
            try:
                delivery = await asyncio.wait_for(anext(fits), 90)
            except TimeoutError:
                pytest.fail("no fit published in 90 s; the agent said:\n" + agent.output)
            finally:
                announcer.cancel()
                await asyncio.gather(announcer, return_exceptions=True)
            cost = decode(delivery.body, LinkCost)
            # The INFO story of the round: the link's fit with its r2 and the probe bytes.
            line = await agent.wait_for(f"link to {peer}: cost_ms = ", timeout=30)
            agent.process.send_signal(signal.SIGTERM)
            assert await agent.finish() == 0, agent.output
    finally:
        await transport.delete_queue(f"jupiter.transfer.{node}")
        await transport.close()
    assert (cost.src, cost.dst) == (node, peer)
    assert cost.samples >= 3
    assert cost.max_kbit == pytest.approx(4096 * 8)  # probe_sizes_kb from the README
    assert "permission" not in agent.output  # no probe was refused by allow_roots
    assert re.search(r"\(r2 [\d.-]+, \d+ samples, .*Kbit\); \d+ probe bytes this round", line)
    assert "asyncssh" not in agent.output  # its INFO lines stay quiet without -v
