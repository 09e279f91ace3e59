"""``data_transfer`` across a lost facade connection: the result still arrives, once.

The facade reaches RabbitMQ through a TCP proxy the test cuts while a real SFTP
transfer runs (its SSH link throttled so it is still running); the worker's own
connection stays up. A direct reply sent while the facade was away is gone with its
channel: the facade must get the result from the job's ``transfer.done`` event or by
asking again once it is back (the worker answers from its job store), never raise
``NoReply`` for a job that ran, and the job must not run twice.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from jupiter_bus.facade import JupiterInterface
from jupiter_bus.topology import work_queue
from jupiter_bus.transport import connect
from jupiter_bus.transport.amqp import AmqpTransport

from .conftest import AMQP_URL, amqp_url_via, eventually
from .proxy import TcpProxy
from .sshd import SshServer
from .test_transfer_worker import Worker, worker_options
from .test_worker_lifecycle import remote_folder

pytestmark = pytest.mark.amqp
WAIT = 30.0
SIZE = 2_000_000


@pytest.fixture
async def worker(
    ssh_server: SshServer, slow_link: TcpProxy, tmp_path: Path, unique: str
) -> AsyncIterator[Worker]:
    known_hosts = ssh_server.known_hosts_via(slow_link.port, tmp_path / "known_hosts")
    transport = await connect(AMQP_URL, connection_name=f"failover worker {unique}")
    options = worker_options(ssh_server, tmp_path, known_hosts=str(known_hosts), engine="sftp")
    running = Worker(transport, f"fo-{unique}", options)
    await running.start()
    yield running
    await running.stop()
    await transport.delete_queue(work_queue(running.node))
    await transport.close()


@pytest.mark.parametrize("away", ["until-done", "briefly"])
async def test_data_transfer_returns_the_result_of_a_job_that_ran_while_it_was_cut_off(
    away: str,
    worker: Worker,
    broker_proxy: TcpProxy,
    ssh_server: SshServer,
    slow_link: TcpProxy,
    tmp_path: Path,
    unique: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """``until-done``: the facade cannot reconnect until the job has ended (its reply and
    its ``transfer.done`` event are both lost); ``briefly``: it is back while the job
    still runs (the worker's reply still goes to the old, dead reply address)."""
    caplog.set_level(logging.INFO, logger="jupiter_providers.transfer")
    source = tmp_path / "big.bin"
    source.write_bytes(os.urandom(SIZE))
    folder = remote_folder(ssh_server, unique)
    destination = folder / "big.bin"
    transport = AmqpTransport(
        amqp_url_via(broker_proxy.port), reconnect_interval=0.2, connection_name="failover facade"
    )
    await transport.connect()
    try:
        async with JupiterInterface(transport, node=worker.node) as facade:
            call = asyncio.create_task(
                facade.data_transfer(
                    ssh_server.host,
                    ssh_server.user,
                    None,
                    str(source),
                    str(destination),
                    port=slow_link.port,
                    timeout=WAIT,
                )
            )
            await eventually(lambda: any(".jbpart-" in p.name for p in folder.iterdir()), WAIT)
            broker_proxy.refusing = True
            assert broker_proxy.cut() >= 1
            if away == "until-done":
                await eventually(destination.exists, WAIT)
                await asyncio.sleep(0.5)  # the reply and the event went out meanwhile
                assert not call.done()
            broker_proxy.refusing = False
            result = await asyncio.wait_for(call, WAIT)
    finally:
        await transport.close()
    assert result.ok
    assert result.bytes == SIZE
    assert destination.read_bytes() == source.read_bytes()
    assert not [p for p in folder.iterdir() if ".jbpart-" in p.name]
    copies = [s for s in worker.samples if s.size_bytes == SIZE]
    assert len(copies) == 1, f"the job ran {len(copies)} times"
    if away == "until-done":
        assert "answering from the job store" in caplog.text
