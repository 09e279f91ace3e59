"""Prometheus metrics of agents and facades, scraped over real HTTP and parsed as
Prometheus parses them (``prometheus_client.parser``), on the in-memory bus and RabbitMQ."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psutil
import pytest
from jupiter_providers.network import WARM_UP_BYTES, NetworkProvider
from prometheus_client.parser import text_string_to_metric_families

from jupiter_bus.agent import Agent, AgentOptions
from jupiter_bus.errors import ConfigError, NotFound
from jupiter_bus.facade import JupiterInterface
from jupiter_bus.messages import LinkCost, TransferRequest, TransferResult, decode, encode
from jupiter_bus.metrics import FacadeMetrics, MetricsServer, serve_facade_metrics
from jupiter_bus.options import convert
from jupiter_bus.topology import EVENTS_EXCHANGE, TRANSFERS_EXCHANGE, network_key
from jupiter_bus.transport import Transport
from jupiter_bus.transport.amqp import AmqpTransport
from jupiter_bus.transport.memory import drop_memory_broker

from .conftest import AMQP_URL, eventually
from .proxy import TcpProxy
from .test_cli import agent as agent_command
from .test_cli import command, free_port, stop, with_env

WAIT = 30.0
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


# -- scraping over HTTP --------------------------------------------------------------------


async def http_get(url: str, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 request with asyncio streams: status, headers, body."""
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    try:
        writer.write(
            f"{method} {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
            "Accept: text/plain\r\nConnection: close\r\n\r\n".encode()
        )
        await writer.drain()
        raw = await asyncio.wait_for(reader.read(), WAIT)
    finally:
        writer.close()
        await writer.wait_closed()
    head, _, body = raw.partition(b"\r\n\r\n")
    status, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    return int(status.split(" ")[1]), headers, body


async def scrape(url: str) -> Samples:
    """Every sample of ``url``, parsed as Prometheus would: (name, labels) -> value."""
    status, headers, body = await http_get(url)
    assert status == 200, body
    assert headers["content-type"].startswith("text/plain")
    assert int(headers["content-length"]) == len(body)
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(body.decode())
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def names(samples: Samples) -> set[str]:
    return {name for name, _ in samples}


async def scraped_until(
    url: str, condition: Callable[[Samples], bool], timeout: float = WAIT
) -> Samples:
    """Scrape ``url`` until ``condition`` holds; fail with the last scrape otherwise."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition(samples := await scrape(url)):
        if loop.time() > deadline:
            pytest.fail(f"metrics never met the condition; last scrape: {sorted(samples)}")
        await asyncio.sleep(0.05)
    return samples


# -- agents --------------------------------------------------------------------------------


@pytest.fixture
def metrics_socket() -> socket.socket:
    """A socket bound to a free loopback port (the agent owns and closes it)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    return sock


@contextlib.asynccontextmanager
async def running(agent: Agent, transport: Transport) -> AsyncIterator[Agent]:
    task = asyncio.create_task(agent.run())
    try:
        await asyncio.wait_for(agent.started(), WAIT)
        if "transfer" in agent.options.providers:  # its queue is declared
            worker = agent.provider("transfer")
            await eventually(lambda: worker.health().detail.startswith("consuming"), WAIT)
        yield agent
    finally:
        agent.stop()
        await asyncio.wait_for(task, WAIT)
        if "transfer" in agent.options.providers:
            await transport.delete_queue(f"jupiter.transfer.{agent.node}")


def providers(tmp_path: Path, **more: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    return {
        "resources": {"interval": 0.1},
        "transfer": {"engine": "local", "state_dir": str(tmp_path / "jobs")},
        **more,
    }


async def transfer(transport: Transport, node: str, source: Path, dest: Path) -> TransferResult:
    request = TransferRequest(
        host="127.0.0.1", user="nobody", source=str(source), destination=str(dest), engine="local"
    )
    reply = await transport.request(TRANSFERS_EXCHANGE, node, encode(request), timeout=WAIT)
    return decode(reply.body, TransferResult)


def link(src: str, dst: str, a: float = 1e-7) -> LinkCost:
    return LinkCost(
        src=src, dst=dst, a=a, b=0.01, c=2.5, samples=5, r2=0.97, min_kbit=8.0, max_kbit=8000.0
    )


async def test_agent_metrics_count_transfers_by_result_and_show_its_resources(
    transport: Transport, tmp_path: Path, unique: str, metrics_socket: socket.socket
) -> None:
    node = f"mt-{unique}"
    source = tmp_path / "a.bin"
    source.write_bytes(b"x" * 12_345)
    agent = Agent(node, transport, providers(tmp_path), metrics_socket=metrics_socket)
    async with running(agent, transport):
        assert agent.metrics_url is not None
        ok = await transfer(transport, node, source, tmp_path / "copy.bin")
        missing = await transfer(transport, node, tmp_path / "nope.bin", tmp_path / "n.bin")
        assert ok.ok
        assert missing.error is not None
        assert missing.error.kind == "not_found"
        # a link published through the context: not exported without link_metrics
        assert agent.context is not None
        await agent.context.publish_event(network_key(node, "peer1"), encode(link(node, "peer1")))
        samples = await scraped_until(
            agent.metrics_url, lambda s: value(s, "jupiter_node_cpu_count", node=node) is not None
        )
    where = {"node": node}
    assert value(samples, "jupiter_transfers_total", result="ok", **where) == 1
    assert value(samples, "jupiter_transfers_total", result="not_found", **where) == 1
    assert value(samples, "jupiter_transfer_bytes_total", **where) == 12_345
    assert value(samples, "jupiter_transfer_duration_seconds_count", **where) == 2
    assert value(samples, "jupiter_transfer_duration_seconds_bucket", le="600.0", **where) == 2
    assert value(samples, "jupiter_dead_letters_total", **where) == 0
    assert value(samples, "jupiter_bus_reconnects_total", **where) == 0
    assert value(samples, "jupiter_node_cpu_count", **where) == psutil.cpu_count()
    assert value(samples, "jupiter_node_memory_total_bytes", **where) == (
        psutil.virtual_memory().total
    )
    for ratio in ("jupiter_node_cpu_ratio", "jupiter_node_memory_used_ratio"):
        measured = value(samples, ratio, **where)
        assert measured is not None, ratio
        assert 0 <= measured <= 1, ratio
    assert value(samples, "jupiter_provider_up", provider="transfer", **where) == 1
    assert value(samples, "jupiter_provider_restarts_total", provider="resources", **where) == 0
    assert not {n for n in names(samples) if n.startswith("jupiter_link_")}
    assert not {n for n in names(samples) if n.startswith("jupiter_probe")}  # no profiler
    # every agent series carries this node's label, and only this one
    assert {dict(labels).get("node") for name, labels in samples if name.startswith("jupiter_")}
    assert all(
        dict(labels).get("node") == node for name, labels in samples if name.startswith("jupiter_")
    )


async def test_link_metrics_are_exported_only_when_opted_in_and_follow_the_links(
    transport: Transport, tmp_path: Path, unique: str, metrics_socket: socket.socket
) -> None:
    node = f"ml-{unique}"
    agent = Agent(
        node,
        transport,
        {"resources": {"interval": 0.1}},
        metrics_socket=metrics_socket,
        link_metrics=True,
    )
    async with running(agent, transport):
        assert agent.context is not None
        assert agent.metrics_url is not None
        await agent.context.publish_event(network_key(node, "p1"), encode(link(node, "p1", 2e-7)))
        await agent.context.publish_links([link(node, "p2", 3e-7)])  # as one network.batch
        samples = await scrape(agent.metrics_url)
        agent.context.forget_event(network_key(node, "p1"))  # a peer that left
        after = await scrape(agent.metrics_url)
    first = {"node": node, "src": node, "dst": "p1"}
    second = {**first, "dst": "p2"}
    assert value(samples, "jupiter_link_cost_a", **first) == pytest.approx(2e-7)
    assert value(samples, "jupiter_link_cost_a", **second) == pytest.approx(3e-7)
    assert value(samples, "jupiter_link_cost_b", **first) == pytest.approx(0.01)
    assert value(samples, "jupiter_link_cost_c", **second) == pytest.approx(2.5)
    assert value(samples, "jupiter_link_r2", **first) == pytest.approx(0.97)
    assert value(after, "jupiter_link_cost_a", **first) is None
    assert value(after, "jupiter_link_cost_a", **second) == pytest.approx(3e-7)


async def test_probes_of_the_profiler_are_counted_and_its_links_exported(
    transport: Transport, tmp_path: Path, unique: str, metrics_socket: socket.socket
) -> None:
    node = f"mp-{unique}"
    sizes_kb = [1, 2, 4]
    network = {
        "peers": [{"node": "peer1", "host": "127.0.0.1", "user": "nobody"}],
        "probe_sizes_kb": sizes_kb,
        "interval": 0.1,
        "engine": "local",
        "probe_dir": str(tmp_path / "remote"),
        "state_dir": str(tmp_path / "state"),
    }
    agent = Agent(
        node,
        transport,
        providers(tmp_path, network=network),
        metrics_socket=metrics_socket,
        link_metrics=True,
    )
    async with running(agent, transport):
        assert agent.metrics_url is not None
        where = {"node": node, "src": node, "dst": "peer1"}
        samples = await scraped_until(
            agent.metrics_url, lambda s: value(s, "jupiter_link_r2", **where) is not None
        )
        profiler = agent.provider("network")
        assert isinstance(profiler, NetworkProvider)
        peer = profiler.peers["peer1"]
        # remembered (and so exported) before its publish is confirmed, recorded after
        await eventually(lambda: peer.published is not None, WAIT)
        published = peer.published
    assert published is not None
    assert value(samples, "jupiter_link_cost_a", **where) == pytest.approx(published.a)
    # one round: a warm-up, then each size once (fresh samples: no further probes)
    assert value(samples, "jupiter_probes_total", node=node, result="ok") == 1 + len(sizes_kb)
    assert value(samples, "jupiter_probes_total", node=node, result="failed") == 0
    expected_bytes = WARM_UP_BYTES + 1000 * sum(sizes_kb)
    assert value(samples, "jupiter_probe_bytes_total", node=node) == expected_bytes
    # probes are transfers this node's worker ran, too
    assert value(samples, "jupiter_transfers_total", node=node, result="ok") == 1 + len(sizes_kb)
    assert value(samples, "jupiter_transfer_bytes_total", node=node) == expected_bytes


async def test_dead_letters_of_the_agent_are_counted(
    transport: Transport, tmp_path: Path, unique: str, metrics_socket: socket.socket
) -> None:
    node = f"md-{unique}"
    agent = Agent(node, transport, providers(tmp_path), metrics_socket=metrics_socket)
    async with running(agent, transport):
        assert agent.metrics_url is not None
        for body in (b"not json", b'{"v": 1, "type": "transfer.request"}'):
            await transport.publish(TRANSFERS_EXCHANGE, node, body, persistent=True)
        samples = await scraped_until(
            agent.metrics_url, lambda s: value(s, "jupiter_dead_letters_total", node=node) == 2
        )
    assert value(samples, "jupiter_transfers_total", node=node, result="ok") == 0


async def test_two_agents_in_one_process_have_registries_of_their_own(
    transport: Transport, tmp_path: Path, unique: str
) -> None:
    sockets = [socket.socket(), socket.socket()]
    for sock in sockets:
        sock.bind(("127.0.0.1", 0))
    agents = [
        Agent(f"m{i}-{unique}", transport, {"resources": {"interval": 0.1}}, metrics_socket=sock)
        for i, sock in enumerate(sockets)
    ]
    async with running(agents[0], transport), running(agents[1], transport):
        for agent in agents:
            assert agent.metrics_url is not None
            node = agent.node

            def sampled(s: Samples, node: str = node) -> bool:
                return value(s, "jupiter_node_cpu_count", node=node) is not None

            samples = await scraped_until(agent.metrics_url, sampled)
            labels = {dict(ls).get("node") for n, ls in samples if n.startswith("jupiter_")}
            assert labels == {agent.node}


async def test_an_agent_without_metrics_port_listens_on_nothing(
    transport: Transport, tmp_path: Path, unique: str
) -> None:
    def listening() -> set[tuple[str, int]]:
        return {
            (c.laddr.ip, c.laddr.port)
            for c in psutil.Process().net_connections(kind="inet")
            if c.status == psutil.CONN_LISTEN
        }

    before = listening()
    agent = Agent(f"mn-{unique}", transport, providers(tmp_path))
    assert not agent.metrics_enabled
    async with running(agent, transport):
        assert listening() == before
        assert agent.metrics_url is None


async def test_the_endpoint_serves_only_get_metrics_and_closes_with_the_agent(
    unique: str, tmp_path: Path, metrics_socket: socket.socket
) -> None:
    transport_url = f"memory://metrics-{unique}"
    agent = Agent(f"me-{unique}", transport_url, {"resources": {}}, metrics_socket=metrics_socket)
    task = asyncio.create_task(agent.run())
    try:
        await asyncio.wait_for(agent.started(), WAIT)
        url = agent.metrics_url
        assert url is not None
        root = url.removesuffix("/metrics")
        assert (await http_get(root + "/"))[0] == 404
        assert (await http_get(root + "/metrics/x"))[0] == 404
        status, headers, _ = await http_get(url, method="POST")
        assert (status, headers["allow"]) == (405, "GET, HEAD")
        status, headers, body = await http_get(url, method="HEAD")
        assert (status, body) == (200, b"")
        assert int(headers["content-length"]) > 0
        assert (await http_get(url + "?name=x"))[0] == 200
        # a request head that never ends is dropped without an answer; the server goes on
        parts = urlsplit(url)
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
        writer.write(b"GET /metrics HTTP/1.1\r\nX-Long: " + b"a" * 100_000)
        await writer.drain()
        # closed with part of the head unread, the kernel may answer with a reset
        with contextlib.suppress(ConnectionResetError):
            assert await asyncio.wait_for(reader.read(), WAIT) == b""
        writer.close()
        assert (await http_get(url))[0] == 200
    finally:
        agent.stop()
        await asyncio.wait_for(task, WAIT)
        drop_memory_broker(transport_url)
    assert agent.metrics_url is None
    with pytest.raises(ConnectionRefusedError):
        await http_get(url)


async def test_metrics_port_from_options_and_a_taken_port_is_refused(unique: str) -> None:
    port = free_port()
    options = convert(
        AgentOptions,
        {"node": f"mo-{unique}", "broker": f"memory://mo-{unique}", "metrics_port": port},
    )
    agent = Agent.from_options(options)
    task = asyncio.create_task(agent.run())
    try:
        await asyncio.wait_for(agent.started(), WAIT)
        assert agent.metrics_url == f"http://127.0.0.1:{port}/metrics"
        assert (await http_get(agent.metrics_url))[0] == 200
        # a second agent on the same port is refused before it connects
        other = Agent(f"mo2-{unique}", f"memory://mo-{unique}", {}, metrics_port=port)
        with pytest.raises(ConfigError, match=rf"cannot serve metrics on 127\.0\.0\.1:{port}"):
            await asyncio.wait_for(other.run(), WAIT)
    finally:
        agent.stop()
        await asyncio.wait_for(task, WAIT)
        drop_memory_broker(f"memory://mo-{unique}")


@pytest.mark.parametrize("port", [0, 65536, "9464"])
def test_bad_metrics_ports_are_refused_naming_the_option(port: object) -> None:
    with pytest.raises(ConfigError, match="metrics_port"):
        convert(AgentOptions, {"node": "n1", "metrics_port": port})


def test_without_prometheus_client_asking_for_metrics_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "prometheus_client", None)  # import fails
    hint = r"pip install 'jupiter-bus\[metrics\]'"
    with pytest.raises(ConfigError, match=hint):
        Agent("n1", "memory://no-prometheus", {}, metrics_port=9464)
    with pytest.raises(ConfigError, match=hint):
        FacadeMetrics(JupiterInterface("memory://no-prometheus"))
    # without metrics nothing needs it
    assert not Agent("n1", "memory://no-prometheus", {}).metrics_enabled


def test_the_module_imports_without_prometheus_client() -> None:
    code = (
        "import sys; sys.modules['prometheus_client'] = None\n"
        "import jupiter_bus.metrics, jupiter_bus.agent, jupiter_bus.cli\n"
        "print('ok')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    assert result.stdout.strip() == "ok", result.stderr


# -- reconnects (RabbitMQ, connection cut by a proxy) ----------------------------------------


@pytest.mark.amqp
async def test_reconnects_of_the_agent_and_the_facade_are_counted(
    tmp_path: Path, unique: str, metrics_socket: socket.socket
) -> None:
    parts = urlsplit(AMQP_URL)
    proxy = TcpProxy(parts.hostname or "127.0.0.1", parts.port or 5672)
    await proxy.start()
    creds = parts.netloc.rsplit("@", 1)[0]
    url = urlunsplit(parts._replace(netloc=f"{creds}@127.0.0.1:{proxy.port}"))
    transport = AmqpTransport(url, connection_name=f"metrics {unique}", reconnect_interval=0.2)
    await transport.connect()
    try:
        agent = Agent(
            f"mr-{unique}",
            transport,
            {"resources": {"interval": 0.1}},
            metrics_socket=metrics_socket,
        )
        async with (
            running(agent, transport),
            JupiterInterface(transport, snapshot=False) as jupiter,
            serve_facade_metrics(jupiter, port=0) as facade,
        ):
            assert agent.metrics_url is not None
            assert proxy.cut() >= 1
            node = {"node": agent.node}
            await scraped_until(
                agent.metrics_url, lambda s: value(s, "jupiter_bus_reconnects_total", **node) == 1
            )
            await scraped_until(facade.url, lambda s: value(s, "jupiter_bus_reconnects_total") == 1)
    finally:
        await transport.close()
        await proxy.close()


# -- the facade helper ---------------------------------------------------------------------


async def test_facade_metrics_show_what_the_facade_knows_and_waited_for(
    transport: Transport, tmp_path: Path, unique: str
) -> None:
    node = f"mf-{unique}"
    source = tmp_path / "f.bin"
    source.write_bytes(b"y" * 100)
    agent = Agent(node, transport, providers(tmp_path))
    async with (
        running(agent, transport),
        JupiterInterface(transport, node=node) as jupiter,
        serve_facade_metrics(jupiter, port=0) as server,
    ):
        assert server.url == f"http://127.0.0.1:{server.port}/metrics"
        empty = await scrape(server.url)
        assert value(empty, "jupiter_facade_links") == 0
        assert "jupiter_facade_newest_link_age_seconds" not in names(empty)
        await jupiter.data_transfer(
            "127.0.0.1", "me", None, str(source), str(tmp_path / "g"), engine="local"
        )
        with pytest.raises(NotFound):
            await jupiter.data_transfer(
                "127.0.0.1", "me", None, str(tmp_path / "nope"), str(tmp_path / "h"), engine="local"
            )
        job = await jupiter.submit_transfer(
            "127.0.0.1", "me", None, str(source), str(tmp_path / "i"), engine="local"
        )
        await jupiter.wait_transfer(job, timeout=WAIT)
        for dst in ("o1", "o2"):
            await transport.publish(
                EVENTS_EXCHANGE, network_key(node, dst), encode(link(node, dst))
            )
        await jupiter.get_network_data(links=[(node, "o1"), (node, "o2")], timeout=WAIT)
        await jupiter.get_resource_data(nodes=[node], timeout=WAIT)
        samples = await scrape(server.url)
    assert value(samples, "jupiter_facade_transfers_total", result="ok") == 2
    assert value(samples, "jupiter_facade_transfers_total", result="not_found") == 1
    assert value(samples, "jupiter_facade_links") == 2
    known = value(samples, "jupiter_facade_nodes")
    assert known is not None
    assert known >= 3
    newest = value(samples, "jupiter_facade_newest_link_age_seconds")
    oldest = value(samples, "jupiter_facade_oldest_link_age_seconds")
    assert newest is not None
    assert oldest is not None
    assert 0 <= newest <= oldest < WAIT
    age = value(samples, "jupiter_facade_resource_age_seconds", node=node)
    assert age is not None
    assert 0 <= age < WAIT
    assert value(samples, "jupiter_bus_reconnects_total") == 0


async def test_a_metrics_server_on_a_taken_port_says_so(unique: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        async with JupiterInterface(f"memory://taken-{unique}") as jupiter:
            with pytest.raises(ConfigError, match=f"cannot serve metrics on 127.0.0.1:{port}"):
                async with serve_facade_metrics(jupiter, port=port):
                    pass
            metrics = FacadeMetrics(jupiter)
            async with MetricsServer(metrics.registry, port=0) as server:
                assert (await http_get(server.url))[0] == 200
            metrics.close()


# -- the command ---------------------------------------------------------------------------


@pytest.mark.amqp
async def test_jupiter_bus_agent_with_metrics_port_serves_metrics(unique: str) -> None:
    port = free_port()
    node = f"mc-{unique}"
    args = agent_command("--node", node, "--providers", "resources", "--metrics-port", str(port))
    async with command(*args, env=with_env(JUPITER_BUS_URL=AMQP_URL)) as run:
        line = await run.wait_for("metrics at")
        assert f"agent {node}: metrics at http://127.0.0.1:{port}/metrics" in line
        assert " INFO " in line
        url = f"http://127.0.0.1:{port}/metrics"
        samples = await scraped_until(
            url, lambda s: value(s, "jupiter_node_cpu_count", node=node) is not None
        )
        assert value(samples, "jupiter_provider_up", node=node, provider="resources") == 1
        assert await stop(run) == 0
    with pytest.raises(ConnectionRefusedError):
        await http_get(url)


async def test_jupiter_bus_agent_refuses_a_bad_metrics_port() -> None:
    args = agent_command("--node", "n1", "--broker", "memory://x", "--metrics-port", "0")
    async with command(*args) as run:
        assert await run.finish() == 2
    assert "metrics_port" in run.output
