"""The node agent: providers found by entry point, resources published, crashes survived."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path

import psutil
import pytest

from jupiter_bus.agent import Agent, RestartPolicy, running
from jupiter_bus.errors import BrokerUnreachable, ProviderError
from jupiter_bus.messages import ResourceSample, decode
from jupiter_bus.plugins import available_providers, load_provider
from jupiter_bus.transport import Transport, connect

from .conftest import AMQP_URL, eventually

WAIT = 10.0

TINY_PLUGIN = '''
"""A third-party provider package, installed only as a dist-info folder on sys.path."""
import asyncio

from jupiter_bus.plugins import Provider, wait_or_stop
from jupiter_bus.topology import EVENTS_EXCHANGE

RUNS = {"crashy": 0}


class Tiny(Provider):
    name = "tiny"

    async def run(self, stopping: asyncio.Event) -> None:
        n = 0
        while not await wait_or_stop(stopping, 0.02):
            n += 1
            await self.context.transport.publish(
                EVENTS_EXCHANGE, f"tiny.{self.context.node}", str(n).encode()
            )


class Stubborn(Provider):
    """Ignores ``stopping``: only the agent's cancel after its grace period ends it."""

    name = "stubborn"

    async def run(self, stopping: asyncio.Event) -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            RUNS["stubborn_cancelled"] = RUNS.get("stubborn_cancelled", 0) + 1
            raise


class Crashy(Provider):
    name = "crashy"

    async def run(self, stopping: asyncio.Event) -> None:
        RUNS["crashy"] += 1
        if RUNS["crashy"] <= 2:
            raise OSError(f"disk on fire (run {RUNS['crashy']})")
        self.set_health(True, "recovered")
        await stopping.wait()
'''


@pytest.fixture
def third_party_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """Install a provider package the way pip would leave it: a module and a dist-info."""
    name = f"tiny_plugin_{tmp_path.name.replace('-', '_')}"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(TINY_PLUGIN))
    dist = tmp_path / f"{name}-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(
        f"[jupiter_bus.providers]\ntiny = {name}:Tiny\ncrashy = {name}:Crashy\n"
        f"stubborn = {name}:Stubborn\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    return name


def test_third_party_provider_is_found_by_name(third_party_plugin: str) -> None:
    assert {"resources", "tiny", "crashy"} <= set(available_providers())
    assert load_provider("tiny").__module__ == third_party_plugin


def test_unknown_provider_names_the_installed_ones() -> None:
    with pytest.raises(ProviderError, match=r"no provider named 'gpu'.*resources"):
        load_provider("gpu")


@pytest.fixture
async def cpu_burner() -> AsyncIterator[None]:
    """Keep one core busy in another process (a thread would hold our GIL and loop)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", "import time\nend = time.time() + 20\nwhile time.time() < end: pass"
    )
    yield
    process.kill()
    await process.wait()


@pytest.fixture
async def running_agent(
    transport: Transport, bus_url: str, unique: str
) -> AsyncIterator[tuple[Agent, asyncio.Task[None]]]:
    agent = Agent(
        f"ag-{unique}",
        transport,
        {"resources": {"interval": 0.2}},
        host="10.1.2.3",
        ssh_port=2222,
        grace=2,
    )
    task = asyncio.create_task(agent.run())
    yield agent, task
    agent.stop()
    await asyncio.wait_for(task, WAIT)


async def test_agent_publishes_resource_events_as_documented(
    transport: Transport, unique: str, running_agent: tuple[Agent, asyncio.Task[None]]
) -> None:
    agent, _ = running_agent
    async with transport.subscribe([f"resource.{agent.node}"]) as feed:
        samples = []
        for _ in range(2):
            envelope = await asyncio.wait_for(anext(feed), WAIT)
            samples.append(decode(envelope.body, ResourceSample))
    first = samples[0]
    assert first.node == agent.node
    assert first.cpu_count == psutil.cpu_count(logical=True)
    assert first.memory_total_bytes == psutil.virtual_memory().total
    assert 0 < first.memory_available_bytes <= first.memory_total_bytes
    assert 0.0 <= first.cpu_percent <= 100.0
    assert (first.host, first.ssh_port) == ("10.1.2.3", 2222)
    assert samples[1].ts > first.ts
    assert agent.status()["resources"].health is not None
    assert agent.status()["resources"].health.ok  # type: ignore[union-attr]


async def test_cpu_percent_is_measured_not_the_first_zero(
    cpu_burner: None, transport: Transport, running_agent: tuple[Agent, asyncio.Task[None]]
) -> None:
    agent, _ = running_agent
    async with transport.subscribe([f"resource.{agent.node}"]) as feed:
        values = [
            decode((await asyncio.wait_for(anext(feed), WAIT)).body, ResourceSample).cpu_percent
            for _ in range(3)
        ]
    assert max(values) > 0.0


async def test_crashing_provider_is_restarted_and_the_agent_keeps_going(
    third_party_plugin: str, transport: Transport, unique: str
) -> None:
    agent = Agent(
        f"cr-{unique}",
        transport,
        {"crashy": {}, "tiny": {}},
        restart=RestartPolicy(initial_seconds=0.05, max_seconds=0.1),
    )
    async with transport.subscribe([f"tiny.{agent.node}"]) as feed:
        task = asyncio.create_task(agent.run())
        try:
            await asyncio.wait_for(anext(feed), WAIT)
            await eventually(
                lambda: agent.status()["crashy"].restarts == 2 and agent.status()["crashy"].running
            )
            status = agent.status()["crashy"]
            assert status.last_error == "OSError: disk on fire (run 2)"
            assert status.health is not None
            assert status.health.detail == "recovered"
            assert agent.status()["tiny"].restarts == 0
            await asyncio.wait_for(anext(feed), WAIT)  # the healthy provider never stopped
        finally:
            agent.stop()
            await asyncio.wait_for(task, WAIT)


@pytest.mark.parametrize("how", ["stop", "cancel"])
async def test_a_provider_ignoring_stop_is_cancelled_after_the_grace_period(
    third_party_plugin: str, transport: Transport, unique: str, how: str
) -> None:
    plugin = sys.modules.get(third_party_plugin) or __import__(third_party_plugin)
    agent = Agent(f"gr-{unique}", transport, {"stubborn": {}, "tiny": {}}, grace=0.3)
    task = asyncio.create_task(agent.run())
    await asyncio.wait_for(agent.started(), WAIT)
    await eventually(lambda: agent.status()["stubborn"].running)
    started = asyncio.get_running_loop().time()
    if how == "stop":
        agent.stop()
        await asyncio.wait_for(task, WAIT)
    else:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, WAIT)
    elapsed = asyncio.get_running_loop().time() - started
    assert plugin.RUNS.get("stubborn_cancelled") == 1
    assert 0.3 <= elapsed < WAIT  # the grace period was given, then the provider cancelled
    assert agent.status()["tiny"].restarts == 0


async def test_bad_provider_options_are_refused_by_name(transport: Transport) -> None:
    with pytest.raises(ProviderError, match=r"providers\.resources: no option 'intervall'"):
        Agent("opt", transport, {"resources": {"interval": 1, "intervall": 2}})


@pytest.mark.amqp
async def test_cli_agent_runs_until_sigterm_and_stops_cleanly(tmp_path: Path, unique: str) -> None:
    config = tmp_path / "agent.toml"
    config.write_text(f'node = "cli-{unique}"\n[providers.resources]\ninterval = 0.2\n')
    observer = await connect(AMQP_URL)
    try:
        async with observer.subscribe([f"resource.cli-{unique}"]) as feed:
            process = await asyncio.create_subprocess_exec(
                *(sys.executable, "-m", "jupiter_bus.cli", "agent"),
                *("--config", str(config), "--broker", AMQP_URL),
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
            try:
                envelope = await asyncio.wait_for(anext(feed), 30)
                assert decode(envelope.body, ResourceSample).node == f"cli-{unique}"
                process.send_signal(signal.SIGTERM)
                stdout, _ = await asyncio.wait_for(process.communicate(), 20)
            finally:
                if process.returncode is None:
                    process.kill()
            output = stdout.decode()
            code = process.returncode
    finally:
        await observer.close()
    assert code == 0, output
    assert f"agent cli-{unique} stopped" in output
    assert "guest:guest" not in output


def test_cli_agent_without_node_says_what_is_missing() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "jupiter_bus.cli", "agent", "--broker", "memory://x"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "--node NAME" in result.stderr


async def test_several_agents_in_one_process_each_measure_cpu(
    cpu_burner: None, transport: Transport, unique: str
) -> None:
    agents = [
        Agent(f"m{i}-{unique}", transport, {"resources": {"interval": 0.3}}) for i in range(3)
    ]
    async with transport.subscribe(["resource.*"]) as feed:
        tasks = [asyncio.create_task(agent.run()) for agent in agents]
        try:
            seen: dict[str, float] = {}
            while len(seen) < len(agents):
                sample = decode((await asyncio.wait_for(anext(feed), WAIT)).body, ResourceSample)
                if sample.node.endswith(unique):
                    seen[sample.node] = sample.cpu_percent
        finally:
            for agent in agents:
                agent.stop()
            await asyncio.gather(*tasks)
    assert all(value > 0.0 for value in seen.values()), seen


async def test_running_starts_a_group_of_agents_and_stops_them_all(unique: str) -> None:
    url = f"memory://group-{unique}"
    agents = [Agent(f"g{i}-{unique}", url, {"resources": {"interval": 0.2}}) for i in range(3)]
    async with running(agents) as group:
        assert all(agent.context is not None for agent in group)
        assert all(agent.status()["resources"].health is not None for agent in group)
    assert all(agent._stopping.is_set() for agent in agents)


async def test_running_raises_what_an_agent_that_cannot_start_raised(unique: str) -> None:
    good = Agent(f"ok-{unique}", f"memory://bad-{unique}", {"resources": {}})
    bad = Agent(f"bad-{unique}", "amqp://guest:guest@127.0.0.1:1/", {}, connect_timeout=0.5)
    with pytest.raises(BrokerUnreachable):
        async with running([good, bad], start_timeout=30):
            pytest.fail("the block must not run")
    assert good._stopping.is_set()
