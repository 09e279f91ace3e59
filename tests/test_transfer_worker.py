"""The transfer worker against a real sshd, driven through the bus.

Requests are published as the documented JSON; on RabbitMQ one test uses a plain
aio-pika client that knows nothing of jupiter-bus, as a non-Python scheduler would.
"""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aio_pika
import orjson
import pytest

from jupiter_bus import sealing
from jupiter_bus.agent import Agent
from jupiter_bus.messages import TransferResult, decode
from jupiter_bus.plugins import TransferSample
from jupiter_bus.topology import (
    DEAD_EXCHANGE,
    ERROR_HEADER,
    TRANSFERS_EXCHANGE,
    transfer_done_key,
)
from jupiter_bus.transport import Transport

from .conftest import AMQP_URL, eventually
from .sshd import SshServer

WAIT = 30.0
TRICKY_NAME = "out put; $(touch pwned) 'q' \"dq\" `x`.bin"

Run = Callable[..., Awaitable[TransferResult]]


def request_body(server: SshServer | None, source: Path, destination: str, **fields: Any) -> bytes:
    """A transfer.request exactly as another language would write it."""
    body: dict[str, Any] = {
        "v": 1,
        "type": "transfer.request",
        "id": str(uuid.uuid4()),
        "ts": 1795680100.0,
        "host": server.host if server else "127.0.0.1",
        "port": server.port if server else 22,
        "user": server.user if server else "nobody",
        "source": str(source),
        "destination": destination,
    }
    body.update(fields)
    return orjson.dumps({k: v for k, v in body.items() if v is not None})


class Worker:
    """An agent running only the transfer provider, and a way to send it jobs."""

    def __init__(self, transport: Transport, node: str, options: dict[str, Any]) -> None:
        self.transport = transport
        self.node = node
        self.options = options
        self.agent: Agent | None = None
        self._task: asyncio.Task[None] | None = None
        self.samples: list[TransferSample] = []

    async def start(self) -> None:
        self.agent = Agent(self.node, self.transport, {"transfer": self.options}, grace=10)
        self._task = asyncio.create_task(self.agent.run())
        await asyncio.wait_for(self.agent.started(), WAIT)
        assert self.agent.context is not None
        self.agent.context.samples.listen(self.samples.append)
        provider = self.agent.provider("transfer")
        await eventually(lambda: provider.health().detail.startswith("consuming"))

    async def stop(self) -> None:
        if self.agent is not None and self._task is not None:
            self.agent.stop()
            await asyncio.wait_for(self._task, WAIT)

    async def run(self, body: bytes, timeout: float = WAIT) -> TransferResult:
        reply = await self.transport.request(TRANSFERS_EXCHANGE, self.node, body, timeout=timeout)
        return decode(reply.body, TransferResult)


@pytest.fixture
def source_file(tmp_path: Path) -> Path:
    path = tmp_path / "source data.bin"
    path.write_bytes(os.urandom(200_000))
    return path


@pytest.fixture
def remote_dir(ssh_server: SshServer, unique: str) -> Path:
    """A fresh folder in the test user's home (the user owns it)."""
    folder = ssh_server.home / f"in-{unique}"
    folder.mkdir()
    stat = ssh_server.home.stat()
    os.chown(folder, stat.st_uid, stat.st_gid)
    return folder


def worker_options(ssh_server: SshServer, tmp_path: Path, **overrides: Any) -> dict[str, Any]:
    options: dict[str, Any] = {
        "known_hosts": str(ssh_server.known_hosts),
        "client_keys": [str(ssh_server.client_key)],
        "state_dir": str(tmp_path / "state"),
        "retry_initial_seconds": 0.02,
        "retry_max_seconds": 0.05,
        "connect_timeout": 3.0,
    }
    options.update(overrides)
    return options


@pytest.fixture
async def make_worker(
    transport: Transport, ssh_server: SshServer, tmp_path: Path, unique: str
) -> AsyncIterator[Callable[..., Awaitable[Worker]]]:
    workers: list[Worker] = []

    async def factory(**overrides: Any) -> Worker:
        worker = Worker(transport, f"w-{unique}", worker_options(ssh_server, tmp_path, **overrides))
        await worker.start()
        workers.append(worker)
        return worker

    yield factory
    for worker in workers:
        await worker.stop()
    await transport.delete_queue(f"jupiter.transfer.w-{unique}")


@pytest.fixture
async def worker(make_worker: Callable[..., Awaitable[Worker]]) -> Worker:
    return await make_worker()


def leftovers(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if ".jbpart-" in p.name]


ENGINE_AUTH = [
    *((engine, auth) for engine in ("sftp", "scp", "openssh-scp") for auth in ("password", "key")),
    ("local", "key"),  # the local engine logs in nowhere
]


@pytest.mark.parametrize(("engine", "auth"), ENGINE_AUTH)
async def test_every_engine_copies_a_tricky_path_literally(
    worker: Worker,
    ssh_server: SshServer,
    source_file: Path,
    remote_dir: Path,
    engine: str,
    auth: str,
) -> None:
    destination = remote_dir / TRICKY_NAME
    password = ssh_server.password if auth == "password" else None
    result = await worker.run(
        request_body(ssh_server, source_file, str(destination), engine=engine, password=password)
    )
    assert result.ok, result.error
    assert result.bytes == source_file.stat().st_size
    assert result.attempts == 1
    assert result.node == worker.node
    assert destination.read_bytes() == source_file.read_bytes()
    assert not (remote_dir / "pwned").exists()
    assert leftovers(remote_dir) == []
    assert worker.samples[-1].size_bytes == result.bytes
    assert worker.samples[-1].engine == engine


async def test_existing_destination_is_overwritten_as_scp_does(
    worker: Worker, ssh_server: SshServer, source_file: Path, remote_dir: Path
) -> None:
    destination = remote_dir / "x.bin"
    destination.write_bytes(b"old")
    result = await worker.run(request_body(ssh_server, source_file, str(destination)))
    assert result.ok
    assert destination.read_bytes() == source_file.read_bytes()


async def test_wrong_password_fails_fast_as_auth_without_retry_or_key_fallback(
    worker: Worker, ssh_server: SshServer, source_file: Path, remote_dir: Path
) -> None:
    # a key login to the same user@host is pooled first: it must not stand in
    ok = await worker.run(request_body(ssh_server, source_file, str(remote_dir / "a.bin")))
    assert ok.ok
    for engine in ("sftp", "openssh-scp"):
        result = await worker.run(
            request_body(
                ssh_server,
                source_file,
                str(remote_dir / "b.bin"),
                password="not-the-password-42",
                engine=engine,
            )
        )
        assert not result.ok
        assert result.error is not None
        assert result.error.kind == "auth"
        assert result.attempts == 1
        assert (
            "not-the-password-42"
            not in orjson.dumps({"m": result.error.message, "r": repr(result)}).decode()
        )
        assert not (remote_dir / "b.bin").exists()


async def test_unknown_host_key_is_refused_unless_the_worker_opts_out(
    make_worker: Callable[..., Awaitable[Worker]],
    ssh_server: SshServer,
    source_file: Path,
    remote_dir: Path,
    tmp_path: Path,
) -> None:
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    strict = await make_worker(known_hosts=str(empty))
    for engine in ("sftp", "openssh-scp"):
        result = await strict.run(
            request_body(ssh_server, source_file, str(remote_dir / "k.bin"), engine=engine)
        )
        assert result.error is not None
        assert (result.error.kind, result.attempts) == ("auth", 1)
        assert "host key" in result.error.message
    await strict.stop()
    lax = await make_worker(known_hosts=str(empty), verify_host_keys=False)
    result = await lax.run(request_body(ssh_server, source_file, str(remote_dir / "k.bin")))
    assert result.ok


@pytest.mark.parametrize("engine", ["sftp", "openssh-scp", "local"])
async def test_missing_destination_folder_fails_unless_asked_to_create_it(
    worker: Worker, ssh_server: SshServer, source_file: Path, remote_dir: Path, engine: str
) -> None:
    destination = remote_dir / "new dir" / "deeper" / "f.bin"
    result = await worker.run(
        request_body(ssh_server, source_file, str(destination), engine=engine)
    )
    assert result.error is not None
    assert result.error.kind == "not_found"
    result = await worker.run(
        request_body(ssh_server, source_file, str(destination), engine=engine, create_dirs=True)
    )
    assert result.ok, result.error
    assert destination.read_bytes() == source_file.read_bytes()


@pytest.mark.parametrize("engine", ["sftp", "scp", "openssh-scp"])
async def test_remote_permission_denied_is_reported_and_leaves_nothing(
    worker: Worker, ssh_server: SshServer, source_file: Path, engine: str, unique: str
) -> None:
    locked = ssh_server.home / f"locked-{unique}"
    locked.mkdir(mode=0o755)  # owned by root: the test user cannot write here
    result = await worker.run(
        request_body(ssh_server, source_file, str(locked / "f.bin"), engine=engine)
    )
    assert result.error is not None
    assert result.error.kind == "permission", result.error
    assert list(locked.iterdir()) == []


async def test_source_problems_fail_at_once(
    make_worker: Callable[..., Awaitable[Worker]],
    ssh_server: SshServer,
    source_file: Path,
    remote_dir: Path,
    tmp_path: Path,
) -> None:
    worker = await make_worker(allow_roots=[str(source_file.parent)])
    cases = {
        "not_found": request_body(ssh_server, tmp_path / "nope.bin", str(remote_dir / "n")),
        "invalid": request_body(ssh_server, tmp_path, str(remote_dir / "d")),
        "permission": request_body(ssh_server, Path("/etc/hostname"), str(remote_dir / "h")),
    }
    for kind, body in cases.items():
        result = await worker.run(body)
        assert result.error is not None
        assert (result.error.kind, result.attempts) == (kind, result.attempts)
        assert result.error.kind == kind
        assert result.bytes == 0


async def test_unreachable_host_is_retried_a_bounded_number_of_times(
    make_worker: Callable[..., Awaitable[Worker]], ssh_server: SshServer, source_file: Path
) -> None:
    worker = await make_worker(max_attempts=3)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead_port = sock.getsockname()[1]
    result = await worker.run(request_body(ssh_server, source_file, "/tmp/x", port=dead_port))
    assert result.error is not None
    assert result.error.kind == "unreachable"
    assert result.attempts == 3


async def test_job_past_its_deadline_is_answered_timeout_without_running(
    worker: Worker, ssh_server: SshServer, source_file: Path, remote_dir: Path
) -> None:
    destination = remote_dir / "late.bin"
    result = await worker.run(
        request_body(ssh_server, source_file, str(destination), deadline=1_000_000.0)
    )
    assert result.error is not None
    assert (result.error.kind, result.attempts) == ("timeout", 0)
    assert not destination.exists()


async def test_completed_job_is_answered_from_the_store_even_after_a_restart(
    make_worker: Callable[..., Awaitable[Worker]],
    ssh_server: SshServer,
    source_file: Path,
    remote_dir: Path,
) -> None:
    destination = remote_dir / "once.bin"
    body = request_body(ssh_server, source_file, str(destination), idempotency_key="task3-run7")
    first_worker = await make_worker()
    first = await first_worker.run(body)
    assert first.ok
    destination.unlink()
    await first_worker.stop()
    second_worker = await make_worker()
    again = await second_worker.run(body)
    assert again == first  # the very same result, not a new run
    assert not destination.exists()


async def test_result_is_published_as_transfer_done(
    worker: Worker, transport: Transport, ssh_server: SshServer, source_file: Path, remote_dir: Path
) -> None:
    async with transport.subscribe([transfer_done_key(worker.node)]) as done:
        result = await worker.run(request_body(ssh_server, source_file, str(remote_dir / "d.bin")))
        event = await asyncio.wait_for(anext(done), WAIT)
    assert decode(event.body, TransferResult) == result


async def test_bad_job_is_dead_lettered_without_password_and_the_worker_goes_on(
    worker: Worker, transport: Transport, ssh_server: SshServer, source_file: Path, remote_dir: Path
) -> None:
    bad = orjson.loads(request_body(ssh_server, source_file, "/x", password="hunter2-secret"))
    bad["port"] = -1
    async with transport.subscribe(["#"], exchange=DEAD_EXCHANGE) as dead:
        await transport.publish(TRANSFERS_EXCHANGE, worker.node, orjson.dumps(bad), persistent=True)
        letter = await asyncio.wait_for(anext(dead), WAIT)
    assert letter.headers[ERROR_HEADER].startswith("port")
    assert b"hunter2-secret" not in letter.body
    result = await worker.run(request_body(ssh_server, source_file, str(remote_dir / "g.bin")))
    assert result.ok


async def test_job_redelivered_too_often_is_dead_lettered_not_run(
    make_worker: Callable[..., Awaitable[Worker]],
    transport: Transport,
    ssh_server: SshServer,
    source_file: Path,
    remote_dir: Path,
    unique: str,
) -> None:
    node = f"w-{unique}"
    queue = await transport.declare_work_queue(node)
    destination = remote_dir / "loop.bin"
    body = request_body(ssh_server, source_file, str(destination), password="hunter2-secret")
    await transport.publish(TRANSFERS_EXCHANGE, node, body, persistent=True)
    async with transport.consume(queue, prefetch=1) as consumer:  # a worker that died mid-job
        await asyncio.wait_for(anext(consumer), WAIT)
    async with transport.subscribe(["#"], exchange=DEAD_EXCHANGE) as dead:
        await make_worker(redelivery_limit=0)
        letter = await asyncio.wait_for(anext(dead), WAIT)
    assert "redelivered 1 times" in letter.headers[ERROR_HEADER]
    assert b"hunter2-secret" not in letter.body
    assert not destination.exists()


async def test_sealed_passwords(
    make_worker: Callable[..., Awaitable[Worker]],
    ssh_server: SshServer,
    source_file: Path,
    remote_dir: Path,
    tmp_path: Path,
) -> None:
    key = sealing.new_key()
    key_file = tmp_path / "seal.key"
    key_file.write_bytes(key)
    sealed = sealing.seal(ssh_server.password, key)
    worker = await make_worker(seal_key_file=str(key_file), require_sealed=True)
    ok = await worker.run(
        request_body(ssh_server, source_file, str(remote_dir / "s"), password=sealed)
    )
    assert ok.ok, ok.error
    clear = await worker.run(
        request_body(ssh_server, source_file, str(remote_dir / "c"), password=ssh_server.password)
    )
    assert clear.error is not None
    assert clear.error.kind == "invalid"
    wrong = await worker.run(
        request_body(
            ssh_server,
            source_file,
            str(remote_dir / "w"),
            password=sealing.seal("x", sealing.new_key()),
        )
    )
    assert wrong.error is not None
    assert wrong.error.kind == "invalid"


@pytest.mark.amqp
@pytest.mark.parametrize("bus_url", [AMQP_URL], indirect=False)
async def test_plain_amqp_client_gets_the_documented_reply(
    worker: Worker, ssh_server: SshServer, source_file: Path, remote_dir: Path
) -> None:
    connection = await aio_pika.connect(AMQP_URL)
    try:
        channel = await connection.channel()
        replies = await channel.declare_queue(exclusive=True)
        destination = remote_dir / "plain.bin"
        body = {
            "v": 1,
            "type": "transfer.request",
            "id": str(uuid.uuid4()),
            "ts": 1795680100.0,
            "host": ssh_server.host,
            "port": ssh_server.port,
            "user": ssh_server.user,
            "password": ssh_server.password,
            "source": str(source_file),
            "destination": str(destination),
            "idempotency_key": "plain-client-1",
            "some_future_field": {"ignored": True},
        }
        exchange = await channel.get_exchange(TRANSFERS_EXCHANGE)
        await exchange.publish(
            aio_pika.Message(
                orjson.dumps(body),
                content_type="application/json",
                reply_to=replies.name,
                correlation_id="corr-1",
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            ),
            routing_key=worker.node,
        )
        message = await replies.get(timeout=WAIT, fail=False)
        for _ in range(300):
            if message is not None:
                break
            await asyncio.sleep(0.05)
            message = await replies.get(timeout=WAIT, fail=False)
        assert message is not None
        await message.ack()
    finally:
        await connection.close()
    reply = orjson.loads(message.body)
    assert message.correlation_id == "corr-1"
    assert reply["type"] == "transfer.result"
    assert reply["v"] == 1
    assert reply["request_id"] == body["id"]
    assert reply["ok"] is True
    assert reply["bytes"] == source_file.stat().st_size
    assert reply["attempts"] == 1
    assert "password" not in reply
    assert destination.read_bytes() == source_file.read_bytes()


async def test_connections_are_pooled_per_credential_and_closed_when_idle(
    make_worker: Callable[..., Awaitable[Worker]],
    ssh_server: SshServer,
    source_file: Path,
    remote_dir: Path,
) -> None:
    worker = await make_worker(idle_seconds=0.3)
    assert worker.agent is not None
    pool = worker.agent.provider("transfer").pool  # type: ignore[attr-defined]
    for i in range(5):
        for password in (None, ssh_server.password):
            result = await worker.run(
                request_body(ssh_server, source_file, str(remote_dir / f"p{i}"), password=password)
            )
            assert result.ok, result.error
    assert pool.connects == 2  # one per credential, each reused
    await eventually(lambda: pool.open_connections == 0, 5)
    result = await worker.run(request_body(ssh_server, source_file, str(remote_dir / "again")))
    assert result.ok
    assert pool.connects == 3


@pytest.mark.parametrize("size", [0, 1, 4096, 65_536])
async def test_small_files_take_the_single_write_path_and_arrive_whole(
    worker: Worker, ssh_server: SshServer, remote_dir: Path, tmp_path: Path, size: int
) -> None:
    source = tmp_path / f"small-{size}.bin"
    source.write_bytes(os.urandom(size))
    destination = remote_dir / TRICKY_NAME
    result = await worker.run(request_body(ssh_server, source, str(destination)))
    assert result.ok, result.error
    assert result.bytes == size
    assert destination.read_bytes() == source.read_bytes()
    assert leftovers(remote_dir) == []
