"""Fixtures of the reliability suite: in-process transfer workers, sshd folders, proxies,
a RabbitMQ cluster of our own."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from jupiter_bus.messages import TransferEngine
from jupiter_bus.transport import Transport, connect
from jupiter_bus.transport.memory import drop_memory_broker

from ..sshd import SshServer
from ..test_transfer_worker import Worker, worker_options
from .faulty_proxy import FaultyProxy
from .rabbit_cluster import RabbitCluster, cluster_unavailable_reason, running_cluster

MakeWorker = Callable[..., Awaitable[Worker]]
MakeProxy = Callable[..., Awaitable[FaultyProxy]]
ENGINES: tuple[TransferEngine, ...] = ("sftp", "scp", "openssh-scp")
"""The engines that log in somewhere; ``local`` is added where a case means something to it."""


@pytest.fixture
async def memory_bus(unique: str) -> AsyncIterator[Transport]:
    """An in-memory bus of this test only (the transfer cases need no broker)."""
    url = f"memory://reliability-{unique}"
    transport = await connect(url, connection_name="reliability")
    yield transport
    await transport.close()
    drop_memory_broker(url)


@pytest.fixture
async def make_worker(
    memory_bus: Transport, ssh_server: SshServer, tmp_path: Path, unique: str
) -> AsyncIterator[MakeWorker]:
    """Start transfer workers (an in-process agent each) with the sshd's known_hosts and key.

    ``transport=`` runs one on another bus (RabbitMQ); other keywords are transfer options.
    """
    started: list[Worker] = []

    async def factory(
        transport: Transport | None = None, node: str | None = None, **overrides: Any
    ) -> Worker:
        n = len(started)
        overrides.setdefault("state_dir", str(tmp_path / f"state-{n}"))
        options = worker_options(ssh_server, tmp_path, **overrides)
        worker = Worker(transport or memory_bus, node or f"rel-{unique}-{n}", options)
        started.append(worker)
        await worker.start()
        return worker

    yield factory
    for worker in started:
        await worker.stop()
        await worker.transport.delete_queue(f"jupiter.transfer.{worker.node}")


def user_folder(server: SshServer, name: str) -> Path:
    """A fresh folder in the test user's home, owned by the user."""
    folder = server.home / name
    folder.mkdir()
    stat = server.home.stat()
    os.chown(folder, stat.st_uid, stat.st_gid)
    return folder


@pytest.fixture
def remote_dir(ssh_server: SshServer, unique: str) -> Path:
    return user_folder(ssh_server, f"rel-{unique}")


@pytest.fixture
def source_file(tmp_path: Path) -> Path:
    """200 KB: more than one SFTP write, so the engines' streaming paths are taken."""
    path = tmp_path / "source.bin"
    path.write_bytes(os.urandom(200_000))
    return path


@pytest.fixture
async def make_proxy(
    ssh_server: SshServer, tmp_path: Path
) -> AsyncIterator[Callable[..., Awaitable[tuple[FaultyProxy, Path]]]]:
    """A :class:`FaultyProxy` (to sshd unless told otherwise) and a known_hosts for its port."""
    proxies: list[FaultyProxy] = []

    async def factory(
        target_port: int | None = None, *, silent: bool = False, **kwargs: Any
    ) -> tuple[FaultyProxy, Path]:
        port = None if silent else target_port or ssh_server.port
        proxy = FaultyProxy(ssh_server.host, port, **kwargs)
        await proxy.start()
        proxies.append(proxy)
        key = ssh_server.host_key_line.split(" ", 1)[1]
        known_hosts = tmp_path / f"known_hosts-{proxy.port}"
        known_hosts.write_text(f"[{ssh_server.host}]:{proxy.port} {key}\n")
        return proxy, known_hosts

    yield factory
    for proxy in proxies:
        await proxy.close()


def temp_names(folder: Path) -> list[str]:
    """The engines' temporary files (``.<name>.jbpart-<digest>``) left in ``folder``."""
    return sorted(p.name for p in folder.iterdir() if ".jbpart-" in p.name)


@pytest.fixture(scope="session")
def rabbit_cluster() -> Iterator[RabbitCluster]:
    """Three clustered RabbitMQ nodes of our own (5781-5783), removed after the session."""
    if (reason := cluster_unavailable_reason()) is not None:
        pytest.skip(reason)
    with running_cluster() as cluster:
        yield cluster
