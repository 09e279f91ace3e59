"""Issue 12 item 5: a transfer's password appears nowhere but in the request itself.

Transfers with the sshd user's password run through every engine, through
``JupiterInterface.data_transfer`` and through the legacy layer, on RabbitMQ. Meanwhile
a separate process scans every ``/proc/*/cmdline``; logs are captured at DEBUG (asyncssh,
aiormq and aio-pika included); failed transfers' exceptions and results, the
``transfer.done`` bodies and a dead-lettered malformed request are searched as well.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncssh
import orjson
import pytest

from jupiter_bus import JupiterInterface, legacy
from jupiter_bus.errors import AuthError
from jupiter_bus.topology import DEAD_EXCHANGE, TRANSFERS_EXCHANGE
from jupiter_bus.transport import Transport, connect

from ..conftest import AMQP_URL
from ..sshd import SshServer
from ..test_transfer_worker import request_body
from .conftest import ENGINES, MakeWorker

pytestmark = pytest.mark.amqp

SAMPLER = r"""
import json, os, select, sys
secret = sys.stdin.buffer.readline().rstrip(b"\n")
me, scans, leaks, programs = str(os.getpid()), 0, [], set()
while not select.select([sys.stdin], [], [], 0)[0]:
    scans += 1
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or pid == me:
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read()
        except OSError:
            continue
        if argv:
            programs.add(os.path.basename(argv.split(b"\0")[0]).decode(errors="replace"))
        if secret in argv:
            leaks.append(argv.replace(b"\0", b" ").decode(errors="replace"))
print(json.dumps({"scans": scans, "leaks": leaks, "programs": sorted(programs)}))
"""


async def start_sampler(secret: str) -> asyncio.subprocess.Process:
    """The /proc scanner, told the secret on stdin (its own argv must not hold it)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", SAMPLER,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert process.stdin is not None
    process.stdin.write(secret.encode() + b"\n")
    await process.stdin.drain()
    return process


async def stop_sampler(process: asyncio.subprocess.Process) -> dict[str, object]:
    assert process.stdin is not None
    process.stdin.write(b"stop\n")
    out, _ = await asyncio.wait_for(process.communicate(), 30)
    report: dict[str, object] = json.loads(out)
    return report


@pytest.fixture
async def amqp_bus() -> AsyncIterator[Transport]:
    transport = await connect(AMQP_URL, connection_name="reliability secrets")
    yield transport
    await transport.close()


async def test_password_never_leaks(
    amqp_bus: Transport,  # first: it must outlive the worker
    make_worker: MakeWorker,
    ssh_server: SshServer,
    source_file: Path,
    remote_dir: Path,
    unique: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    secret = ssh_server.password
    wrong = f"wrong-{uuid.uuid4().hex}"
    caplog.set_level(logging.DEBUG)
    for name in ("asyncssh", "aiormq", "aio_pika", "jupiter_bus", "jupiter_providers"):
        caplog.set_level(logging.DEBUG, logger=name)
    asyncssh.set_debug_level(2)
    node = f"sec-{unique}"
    await make_worker(transport=amqp_bus, node=node)
    surfaces: list[str] = []  # everything a secret must not be in
    sampler = await start_sampler(secret)
    try:
        async with amqp_bus.subscribe([f"transfer.done.{node}"]) as done:
            async with JupiterInterface(AMQP_URL, node=node, snapshot=False) as bus:
                for engine in ENGINES:
                    for attempt in range(3):  # openssh-scp's processes live briefly
                        destination = str(remote_dir / f"facade-{engine}-{attempt}.bin")
                        result = await bus.data_transfer(
                            ssh_server.host, ssh_server.user, secret, str(source_file),
                            destination, port=ssh_server.port, engine=engine, timeout=30,
                        )  # fmt: skip
                        assert result.ok
                        surfaces += [str(result), repr(result)]
                    for password in (wrong, secret):
                        # a wrong password, and the right one on a failing copy
                        with pytest.raises(AuthError if password == wrong else Exception) as exc:
                            await bus.data_transfer(
                                ssh_server.host, ssh_server.user, password,
                                str(source_file) if password == wrong else "/nonexistent",
                                str(remote_dir / "never.bin"), port=ssh_server.port,
                                engine=engine, timeout=30,
                            )  # fmt: skip
                        surfaces += [str(exc.value), repr(exc.value)]
                        surfaces += [str(getattr(exc.value, "result", "")), repr(exc.value.args)]
                        surfaces.append(repr(getattr(exc.value, "result", None)))
            legacy.configure(AMQP_URL, node=node, timeout=30)
            try:
                for engine in ENGINES:
                    transfer = legacy.transfer_mapping_decorator(engine)
                    destination = str(remote_dir / f"legacy-{engine}.bin")
                    result = await asyncio.to_thread(
                        transfer, ssh_server.host, ssh_server.user, secret,
                        str(source_file), destination, port=ssh_server.port,
                    )  # fmt: skip
                    assert result.ok
                    with pytest.raises(AuthError) as failure:
                        await asyncio.to_thread(
                            transfer, ssh_server.host, ssh_server.user, wrong,
                            str(source_file), destination, port=ssh_server.port,
                        )  # fmt: skip
                    surfaces += [str(failure.value), repr(failure.value)]
                    surfaces.append(repr(failure.value.result))
            finally:
                await asyncio.to_thread(legacy.shutdown)
            done_bodies = []
            for _ in range(len(ENGINES) * (3 + 2 + 2)):
                event = await asyncio.wait_for(anext(done), 30)
                done_bodies.append(event.body.decode(errors="replace"))
            surfaces += done_bodies
        # a malformed request holding the password, straight to the work queue
        async with amqp_bus.subscribe(["#"], exchange=DEAD_EXCHANGE) as dead:
            for malformed in _malformed_requests(ssh_server, source_file, secret):
                await amqp_bus.publish(TRANSFERS_EXCHANGE, node, malformed, persistent=True)
                letter = await asyncio.wait_for(anext(dead), 30)
                assert secret.encode() in malformed  # the case holds the secret
                surfaces.append(letter.body.decode(errors="replace"))
                surfaces.append(repr(letter.headers))
    finally:
        asyncssh.set_debug_level(1)
        report = await stop_sampler(sampler)
    surfaces.append(caplog.text)
    surfaces += [repr(record.args) for record in caplog.records]
    print(f"/proc: {report['scans']} scans; programs seen include "
          f"{[p for p in report['programs'] if p in ('ssh', 'scp', 'sftp', 'sshpass')]}; "  # type: ignore[attr-defined]
          f"{len(caplog.records)} log records; {len(surfaces)} surfaces searched")  # fmt: skip
    assert report["leaks"] == [], "the password was on a command line"
    assert {"sshpass", "scp"} <= set(report["programs"]), "the sampler missed openssh-scp"  # type: ignore[call-overload]
    for secret_word in (secret, wrong):
        leaks = [_around(s, secret_word) for s in surfaces if secret_word in s]
        assert not leaks, f"the password leaked into {len(leaks)} place(s): {leaks}"
    assert len(caplog.records) > 50, "DEBUG logs were not captured"


def _around(text: str, secret: str) -> str:
    """Where in ``text`` the secret is, with the secret itself masked (the report is logged)."""
    at = text.index(secret)
    return text[max(0, at - 300) : at].replace(secret, "<SECRET>") + "<SECRET>"


def _malformed_requests(server: SshServer, source: Path, secret: str) -> list[bytes]:
    good = orjson.loads(request_body(server, source, "/x", password=secret))
    bad_port = {**good, "port": -1}
    bad_type = {**good, "password": [secret]}
    return [
        orjson.dumps(bad_port),
        orjson.dumps(bad_type),
        orjson.dumps(good)[1:],  # its start cut off: not JSON any more
        b"\xff" + orjson.dumps(good),  # not UTF-8
    ]
