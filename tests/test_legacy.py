"""Jupiter's call style: synchronous mapping functions over the bus (RabbitMQ)."""

from __future__ import annotations

import asyncio
import csv
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from jupiter_bus import legacy
from jupiter_bus.agent import Agent
from jupiter_bus.errors import ConfigError
from jupiter_bus.facade import NotFound
from jupiter_bus.messages import LinkCost, ResourceSample, encode
from jupiter_bus.topology import EVENTS_EXCHANGE, network_key, resource_key
from jupiter_bus.transport import Transport, connect

from .conftest import AMQP_URL

pytestmark = pytest.mark.amqp


@pytest.fixture
async def bus() -> AsyncIterator[Transport]:
    transport = await connect(AMQP_URL, connection_name="legacy test")
    yield transport
    await transport.close()


@pytest.fixture
def legacy_bus(unique: str) -> Iterator[str]:
    node = f"lg-{unique}"
    legacy.configure(AMQP_URL, node=node, timeout=20)
    yield node
    legacy.shutdown()


@pytest.fixture
async def agent(bus: Transport, legacy_bus: str, tmp_path: Path) -> AsyncIterator[Agent]:
    agent = Agent(
        legacy_bus,
        bus,
        {
            "resources": {"interval": 0.2},
            "transfer": {"engine": "local", "state_dir": str(tmp_path / "state")},
        },
        host="10.0.0.11",
    )
    task = asyncio.create_task(agent.run())
    await asyncio.wait_for(agent.started(), 10)
    yield agent
    agent.stop()
    await asyncio.wait_for(task, 30)
    await bus.delete_queue(f"jupiter.transfer.{legacy_bus}")


async def test_data_transfer_blocks_until_done_and_raises_on_failure(
    agent: Agent, tmp_path: Path
) -> None:
    source = tmp_path / "out.bin"
    source.write_bytes(b"x" * 5000)
    destination = tmp_path / "in" / "copy.bin"
    (tmp_path / "in").mkdir()
    data_transfer = legacy.transfer_mapping_decorator(0)
    result = await asyncio.to_thread(
        data_transfer, "127.0.0.1", "jupiter", "", str(source), str(destination)
    )
    assert result.ok
    assert destination.read_bytes() == source.read_bytes()
    with pytest.raises(NotFound) as failure:
        await asyncio.to_thread(
            data_transfer, "127.0.0.1", "jupiter", "pw-123", str(tmp_path / "nope"), "/x"
        )
    assert "pw-123" not in str(failure.value)
    assert failure.value.result is not None


async def test_decorator_form_replaces_the_placeholder(agent: Agent, tmp_path: Path) -> None:
    @legacy.transfer_mapping_decorator
    def transfer_data(IP: str, user: str, pword: str, source: str, destination: str) -> None:
        """Transfer data with given parameters."""

    source = tmp_path / "a.bin"
    source.write_bytes(b"abc")
    result = await asyncio.to_thread(
        transfer_data, "127.0.0.1", "u", "", str(source), str(tmp_path / "b.bin")
    )
    assert result.ok
    assert transfer_data.__doc__ == "Transfer data with given parameters."


def test_unknown_numbers_and_names_are_refused() -> None:
    with pytest.raises(ConfigError, match="no transfer method number 7"):
        legacy.transfer_mapping_decorator(7)
    with pytest.raises(ConfigError, match="no transfer engine 'ftp'"):
        legacy.transfer_mapping_decorator("ftp")
    with pytest.raises(ConfigError, match="no profiler number 3"):
        legacy.get_network_data_mapping(3)
    assert callable(legacy.transfer_mapping_decorator("openssh-scp"))


async def test_resource_data_in_jupiters_format(agent: Agent) -> None:
    get_resource_data = legacy.get_resource_data_mapping(0)
    data = await asyncio.to_thread(get_resource_data, nodes=[agent.node])
    mine = data[agent.node]
    assert set(mine) == {"cpu", "memory", "last_update"}
    assert 0 <= mine["cpu"] <= 100
    stamp = datetime.strptime(mine["last_update"], "%B %d %Y - %H:%M:%S").replace(tzinfo=UTC)
    assert abs(stamp.timestamp() - time.time()) < 60


async def test_network_data_for_wave_and_heft(
    agent: Agent, bus: Transport, tmp_path: Path, unique: str
) -> None:
    await asyncio.to_thread(legacy.get_resource_data_mapping(0), nodes=[agent.node])
    peer = f"peer{unique}"
    sample = ResourceSample(
        node=peer,
        cpu_percent=5.0,
        cpu_count=2,
        memory_percent=10.0,
        memory_total_bytes=10,
        memory_available_bytes=5,
        host="10.0.0.12",
    )
    await bus.publish(EVENTS_EXCHANGE, resource_key(peer), encode(sample))
    for dst, c in ((peer, 42.0), ("home", 1.0)):
        cost = LinkCost(
            src=agent.node,
            dst=dst,
            a=1e-9,
            b=0.002,
            c=c,
            samples=9,
            r2=0.99,
            min_kbit=8.0,
            max_kbit=8000.0,
        )
        await bus.publish(EVENTS_EXCHANGE, network_key(agent.node, dst), encode(cost))
    back = LinkCost(
        src=peer,
        dst=agent.node,
        a=0.0,
        b=0.003,
        c=50.0,
        samples=9,
        r2=0.99,
        min_kbit=8.0,
        max_kbit=8000.0,
    )
    await bus.publish(EVENTS_EXCHANGE, network_key(peer, agent.node), encode(back))
    # This broker's "/" vhost is shared with other runs: name this deployment's nodes.
    workers = [agent.node, peer]
    get_network_data = legacy.get_network_data_mapping(0)
    wave = await asyncio.to_thread(get_network_data, ["10.0.0.11"], 27017, {}, nodes=workers)
    assert wave == {peer: {"a": 1e-9, "b": 0.002, "c": 42.0, "ip": "10.0.0.12"}}
    rows = await asyncio.to_thread(legacy.heft_network_rows, nodes=workers)
    assert [peer, "10.0.0.12", agent.node, "10.0.0.11", "0.0 0.003 50.0"] in rows
    assert [agent.node, "10.0.0.11", peer, "10.0.0.12", "1e-09 0.002 42.0"] in rows
    log = tmp_path / "network_log.txt"
    legacy.write_network_log(log, rows)
    with log.open() as file:
        assert [agent.node, "10.0.0.11", peer, "10.0.0.12", "1e-09 0.002 42.0"] in list(
            csv.reader(file)
        )
    assert log.read_text().startswith('"')
    tgff = tmp_path / "input.tgff"
    await asyncio.to_thread(legacy.write_tgff_quadratic, tgff, nodes=workers)
    text = tgff.read_text()
    assert text.startswith("@quadratic 0 {\n# Source Destination a b c\n")
    assert f"  {agent.node}\t{peer}\t1e-09 0.002 42.0\n" in text
    assert "home" not in text
