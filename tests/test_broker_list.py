"""Several broker addresses in one URL: the first reachable one is used, and a client
whose broker goes away moves to the next address by itself (issue 12, item 8).

Two TCP proxies in front of the test broker stand for two nodes of a cluster: the
first is closed (listener and connections) and the subscriber must come back through
the second and receive what is published after the cut.
"""

from __future__ import annotations

import asyncio
import socket
from urllib.parse import urlsplit, urlunsplit

import pytest

from jupiter_bus.errors import BrokerUnreachable
from jupiter_bus.topology import EVENTS_EXCHANGE
from jupiter_bus.transport import connect
from jupiter_bus.transport.broker_list import split_brokers
from jupiter_bus.transport.wire_rules import safe_url

from .conftest import AMQP_URL
from .proxy import TcpProxy

WAIT = 20.0


def _with_hosts(*ports: int) -> str:
    parts = urlsplit(AMQP_URL)
    creds = parts.netloc.rpartition("@")[0]
    hosts = ",".join(f"127.0.0.1:{port}" for port in ports)
    return urlunsplit(parts._replace(netloc=f"{creds}@{hosts}" if creds else hosts))


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def test_split_brokers_shares_credentials_path_and_query() -> None:
    assert split_brokers("amqp://u:p@h1:5672,h2:5673,h3/v?heartbeat=5") == [
        "amqp://u:p@h1:5672/v?heartbeat=5",
        "amqp://u:p@h2:5673/v?heartbeat=5",
        "amqp://u:p@h3/v?heartbeat=5",
    ]
    assert split_brokers("amqp://u:p@h1/") == ["amqp://u:p@h1/"]


def test_safe_url_keeps_every_host_and_hides_the_password() -> None:
    shown = safe_url("amqp://jupiter:s3cret@h1:5672,h2:5673/prod")
    assert shown == "amqp://h1:5672,h2:5673/prod"
    assert "s3cret" not in shown


@pytest.mark.amqp
async def test_a_dead_first_address_is_skipped() -> None:
    port = urlsplit(AMQP_URL).port or 5672
    bus = await connect(_with_hosts(_closed_port(), port), connect_timeout=5)
    try:
        await bus.publish(EVENTS_EXCHANGE, "resource.broker-list-probe", b"{}")
    finally:
        await bus.close()


@pytest.mark.amqp
async def test_no_address_answering_is_unreachable_without_the_password() -> None:
    url = _with_hosts(_closed_port(), _closed_port())
    with pytest.raises(BrokerUnreachable) as caught:
        await connect(url, connect_timeout=5)
    password = urlsplit(AMQP_URL).password
    if password:
        assert password not in str(caught.value)


@pytest.mark.amqp
async def test_a_subscriber_moves_to_the_next_address_when_its_broker_goes() -> None:
    target = urlsplit(AMQP_URL)
    first = TcpProxy(target.hostname or "127.0.0.1", target.port or 5672)
    second = TcpProxy(target.hostname or "127.0.0.1", target.port or 5672)
    await first.start()
    await second.start()
    key = f"resource.broker-list-{first.port}"
    bus = await connect(_with_hosts(first.port, second.port), reconnect_interval=0.2)
    publisher = await connect(AMQP_URL)
    try:
        async with bus.subscribe([key]) as feed:
            assert first.connections == 1
            assert second.connections == 0
            await first.close()  # the node goes: no listener, connections dropped
            deadline = asyncio.get_running_loop().time() + WAIT
            received = None
            while received is None and asyncio.get_running_loop().time() < deadline:
                await publisher.publish(EVENTS_EXCHANGE, key, b'{"after": "cut"}')
                try:
                    received = await asyncio.wait_for(anext(feed), 0.5)
                except TimeoutError:
                    continue
            assert received is not None, "no event arrived through the second address"
            assert received.body == b'{"after": "cut"}'
            assert second.connections >= 1
    finally:
        await publisher.close()
        await bus.close()
        await second.close()
