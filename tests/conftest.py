"""Shared fixtures: real transports (in-memory and RabbitMQ), cleaned up after each test."""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

from jupiter_bus.transport import Transport, connect
from jupiter_bus.transport.memory import drop_memory_broker

from .proxy import TcpProxy
from .sshd import SshServer, sshd_unavailable_reason, start_sshd

AMQP_URL = os.environ.get("JUPITER_BUS_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")

TransportFactory = Callable[[], Awaitable[Transport]]


@pytest.fixture
def unique() -> str:
    """A short unique word for node names and queue names of one test."""
    return uuid.uuid4().hex[:10]


@pytest.fixture(params=["memory", "amqp"])
def bus_url(request: pytest.FixtureRequest, unique: str) -> str:
    """The URL of each transport the contract suite runs against."""
    if request.param == "memory":
        return f"memory://test-{unique}"
    return AMQP_URL


@pytest.fixture
async def make_transport(bus_url: str) -> AsyncIterator[TransportFactory]:
    """Connect transports to ``bus_url`` (each like a separate process); close them after."""
    made: list[Transport] = []

    async def factory() -> Transport:
        try:
            transport = await connect(bus_url, connection_name=f"test {len(made)}")
        except Exception as exc:  # pragma: no cover - environment problem, say what to do
            pytest.fail(
                f"cannot connect to {bus_url.split('@')[-1]}: {exc}. Start RabbitMQ "
                "(scripts/test.sh does) or set JUPITER_BUS_AMQP_URL."
            )
        made.append(transport)
        return transport

    yield factory
    for transport in made:
        await transport.close()
    if bus_url.startswith("memory://"):
        drop_memory_broker(bus_url)


@pytest.fixture
async def transport(make_transport: TransportFactory) -> Transport:
    """One connected transport."""
    return await make_transport()


async def eventually(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    """Wait until ``predicate()`` holds, polling every 20 ms; fail after ``timeout``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            pytest.fail(f"condition not met within {timeout:g} s")
        await asyncio.sleep(0.02)


@pytest.fixture(scope="session")
def ssh_server() -> Iterator[SshServer]:
    """One real sshd with a throwaway user for the whole session; skipped where impossible."""
    if (reason := sshd_unavailable_reason()) is not None:
        pytest.skip(reason)
    # Not tmp_path_factory: pytest's base temp is 0700, and the test user must reach its home.
    workdir = Path(tempfile.mkdtemp(prefix="jupiter-sshd-"))
    try:
        workdir.chmod(0o711)
        with start_sshd(workdir) as server:
            yield server
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


SLOW_LINK_RATE = 1_000_000
"""Bytes/s each way through :func:`slow_link`: a few MB take seconds, to act mid-copy."""


def amqp_url_via(port: int) -> str:
    """:data:`AMQP_URL` through a local proxy listening on ``port``."""
    parts = urlsplit(AMQP_URL)
    netloc = parts.netloc.rsplit("@", 1)
    creds = netloc[0] + "@" if len(netloc) == 2 else ""
    return urlunsplit(parts._replace(netloc=f"{creds}127.0.0.1:{port}"))


@pytest.fixture
async def broker_proxy() -> AsyncIterator[TcpProxy]:
    """A :class:`TcpProxy` in front of RabbitMQ (connect with :func:`amqp_url_via`)."""
    parts = urlsplit(AMQP_URL)
    proxy = TcpProxy(parts.hostname or "127.0.0.1", parts.port or 5672)
    await proxy.start()
    yield proxy
    await proxy.close()


@pytest.fixture
async def slow_link(ssh_server: SshServer) -> AsyncIterator[TcpProxy]:
    """A :class:`TcpProxy` in front of the test sshd at :data:`SLOW_LINK_RATE`."""
    proxy = TcpProxy(ssh_server.host, ssh_server.port, rate_bytes_per_s=SLOW_LINK_RATE)
    await proxy.start()
    yield proxy
    await proxy.close()
