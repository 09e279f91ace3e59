"""What a plain ``jupiter-bus agent --node NAME`` does without a configuration file:
it runs resources, transfer and network, announces a host others can reach, and
serves transfers (issue 10, item 1)."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import Mapping
from pathlib import Path

import psutil
import pytest

from jupiter_bus import JupiterInterface
from jupiter_bus.agent import AgentOptions
from jupiter_bus.host_address import LOOPBACK, default_host, is_loopback
from jupiter_bus.messages import ResourceSample, decode
from jupiter_bus.options import convert
from jupiter_bus.topology import resource_key
from jupiter_bus.transport import connect

from .conftest import AMQP_URL
from .test_cli import command


def test_without_providers_the_agent_runs_resources_transfer_and_network() -> None:
    options = convert(AgentOptions, {"node": "n1"})
    assert set(options.providers) == {"resources", "transfer", "network"}
    network = options.providers["network"]
    assert isinstance(network, Mapping)
    assert network["default_user"]  # learns its peers from resource events, as this user


def test_a_broker_on_this_machine_means_loopback() -> None:
    assert default_host("memory://demo") == LOOPBACK
    assert default_host("amqp://guest:guest@127.0.0.1:5672/") == LOOPBACK
    assert default_host("amqp://guest:guest@localhost/") == LOOPBACK
    assert default_host(None) == LOOPBACK


def test_a_remote_broker_gives_the_address_of_the_route_to_it() -> None:
    addresses = [
        a.address
        for entries in psutil.net_if_addrs().values()
        for a in entries
        if a.family.name == "AF_INET" and not is_loopback(a.address)
    ]
    if not addresses:
        pytest.skip("this machine has no non-loopback IPv4 address")
    # The route to one of our own addresses leaves from that address.
    assert default_host(f"amqp://u:p@{addresses[0]}:5672/") == addresses[0]
    assert default_host("amqp://u:p@no-such-broker.invalid/") == LOOPBACK  # unresolvable


@pytest.mark.amqp
async def test_a_plain_agent_announces_a_host_and_serves_transfers(
    unique: str, tmp_path: Path
) -> None:
    node = f"plain-{unique}"
    source = tmp_path / "a.bin"
    source.write_bytes(os.urandom(10_000))
    env = {**os.environ, "JUPITER_BUS_URL": AMQP_URL}
    transport = await connect(AMQP_URL)
    try:
        async with (
            transport.subscribe([resource_key(node)]) as resources,
            command(
                sys.executable, "-m", "jupiter_bus.cli", "agent", "--node", node, env=env
            ) as agent,
        ):
            await agent.wait_for("running providers", timeout=60)
            sample = decode((await asyncio.wait_for(anext(resources), 30)).body, ResourceSample)
            assert sample.host == LOOPBACK  # the broker is on this machine
            async with JupiterInterface(transport, node=node) as bus:
                result = await bus.data_transfer(
                    "127.0.0.1",
                    "nobody",
                    None,
                    str(source),
                    str(tmp_path / "b.bin"),
                    engine="local",
                    timeout=30,
                )
            assert result.ok
            assert (tmp_path / "b.bin").read_bytes() == source.read_bytes()
            line = await agent.wait_for("running providers")
            for name in ("resources", "transfer", "network"):
                assert name in line
            agent.process.send_signal(signal.SIGTERM)
            assert await agent.finish() == 0
    finally:
        await transport.delete_queue(f"jupiter.transfer.{node}")
        await transport.close()
