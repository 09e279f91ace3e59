"""Transfer workers as real processes: killed mid-transfer, or stopped with SIGTERM.

The SSH link goes through a slow TCP proxy so a transfer is still running when the
worker is killed or told to stop.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from jupiter_bus.messages import TransferResult, decode
from jupiter_bus.topology import TRANSFERS_EXCHANGE, transfer_done_key, work_queue
from jupiter_bus.transport import Transport, connect

from .conftest import AMQP_URL, eventually
from .proxy import TcpProxy
from .sshd import SshServer
from .test_transfer_worker import request_body

pytestmark = pytest.mark.amqp
SIZE = 3_000_000


@pytest.fixture
async def observer(unique: str) -> AsyncIterator[Transport]:
    transport = await connect(AMQP_URL, connection_name="lifecycle observer")
    yield transport
    await transport.delete_queue(work_queue(f"lc-{unique}"))
    await transport.close()


AgentFactory = Callable[[], Awaitable[asyncio.subprocess.Process]]


@pytest.fixture
async def start_agent(
    ssh_server: SshServer, slow_link: TcpProxy, tmp_path: Path, unique: str
) -> AsyncIterator[AgentFactory]:
    known_hosts = ssh_server.known_hosts_via(slow_link.port, tmp_path / "known_hosts")
    config = tmp_path / "agent.toml"
    config.write_text(
        f'node = "lc-{unique}"\n'
        f'broker = "{AMQP_URL}"\n'
        "[providers.transfer]\n"
        "concurrency = 1\n"
        f'known_hosts = "{known_hosts}"\n'
        f'client_keys = ["{ssh_server.client_key}"]\n'
        f'state_dir = "{tmp_path / "state"}"\n'
    )
    processes: list[asyncio.subprocess.Process] = []

    async def factory() -> asyncio.subprocess.Process:
        log = open(tmp_path / f"agent-{len(processes)}.log", "wb")  # noqa: SIM115, ASYNC230
        process = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "jupiter_bus.cli", "agent", "--config", str(config)),
            stdout=log,
            stderr=asyncio.subprocess.STDOUT,
        )
        log.close()
        processes.append(process)
        return process

    yield factory
    for process in processes:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def wait_for_queue(transport: Transport, name: str) -> None:
    for _ in range(500):
        try:
            await transport.queue_length(name)
            return
        except Exception:
            await asyncio.sleep(0.02)
    pytest.fail(f"worker never declared {name}")


def remote_folder(ssh_server: SshServer, unique: str) -> Path:
    folder = ssh_server.home / f"lc-{unique}"
    folder.mkdir()
    stat = ssh_server.home.stat()
    os.chown(folder, stat.st_uid, stat.st_gid)
    return folder


async def send_big_job_and_wait_until_halfway(
    observer: Transport, ssh_server: SshServer, slow_link: TcpProxy, tmp_path: Path, unique: str
) -> tuple[Path, Path, Path]:
    """Publish a transfer of SIZE bytes over the slow link; return once its temp file shows.

    Returns (source, remote folder, destination).
    """
    source = tmp_path / "big.bin"
    source.write_bytes(os.urandom(SIZE))
    folder = remote_folder(ssh_server, unique)
    destination = folder / "big.bin"
    await wait_for_queue(observer, work_queue(f"lc-{unique}"))
    body = request_body(
        ssh_server, source, str(destination), port=slow_link.port, idempotency_key=unique
    )
    await observer.publish(
        TRANSFERS_EXCHANGE, f"lc-{unique}", body, persistent=True, mandatory=True
    )
    await eventually(lambda: any(".jbpart-" in p.name for p in folder.iterdir()), 20)
    return source, folder, destination


async def test_worker_killed_mid_transfer_job_is_redone_and_no_partial_file_shows(
    ssh_server: SshServer,
    slow_link: TcpProxy,
    observer: Transport,
    start_agent: AgentFactory,
    tmp_path: Path,
    unique: str,
) -> None:
    node = f"lc-{unique}"
    first = await start_agent()
    async with observer.subscribe([transfer_done_key(node)]) as done:
        source, folder, destination = await send_big_job_and_wait_until_halfway(
            observer, ssh_server, slow_link, tmp_path, unique
        )
        first.kill()  # SIGKILL: no chance to clean up
        await first.wait()
        assert not destination.exists()  # a partial file never has the final name
        await start_agent()
        result = decode((await asyncio.wait_for(anext(done), 60)).body, TransferResult)
    assert result.ok, result.error
    assert destination.read_bytes() == source.read_bytes()
    assert [p.name for p in folder.iterdir()] == ["big.bin"]


async def test_sigterm_lets_the_running_transfer_finish(
    ssh_server: SshServer,
    slow_link: TcpProxy,
    observer: Transport,
    start_agent: AgentFactory,
    tmp_path: Path,
    unique: str,
) -> None:
    node = f"lc-{unique}"
    agent = await start_agent()
    async with observer.subscribe([transfer_done_key(node)]) as done:
        source, _, destination = await send_big_job_and_wait_until_halfway(
            observer, ssh_server, slow_link, tmp_path, unique
        )
        agent.send_signal(signal.SIGTERM)
        result = decode((await asyncio.wait_for(anext(done), 60)).body, TransferResult)
        assert await asyncio.wait_for(agent.wait(), 30) == 0
    assert result.ok, result.error
    assert destination.read_bytes() == source.read_bytes()
    assert await observer.queue_length(work_queue(node)) == 0
