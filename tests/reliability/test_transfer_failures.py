"""Issue 12 item 4: every transfer failure ends with its documented kind, in bounded time.

Each case runs through the worker (the bus, the job store, the retry loop) on each engine
it applies to, against the session's real sshd. Where connection attempts matter they
are counted as accepted TCP connections at a :class:`FaultyProxy` in front of the server:
a refused login is tried once, a dead peer at most ``max_attempts`` times with backoff.
Elapsed-time bounds are generous (they catch storms and hangs, not slowness).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from jupiter_bus.messages import TransferResult

from ..sshd import SshServer
from ..test_transfer_worker import request_body
from .conftest import ENGINES, MakeWorker, temp_names
from .faulty_proxy import FaultyProxy

MakeProxy = Callable[..., Awaitable[tuple[FaultyProxy, Path]]]
TEST_NET = "192.0.2.1"  # RFC 5737: never routed
FAST_RETRY = {"retry_initial_seconds": 0.2, "retry_max_seconds": 1.0}


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def expect_failure(result: TransferResult, kind: str) -> None:
    assert not result.ok, "the transfer should have failed"
    assert result.error is not None
    assert result.error.kind == kind, result.error
    assert result.bytes == 0


async def timed(run: Awaitable[TransferResult]) -> tuple[TransferResult, float]:
    started = time.monotonic()
    result = await run
    return result, time.monotonic() - started


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("case", ["wrong password", "unknown user"])
async def test_refused_login_is_auth_after_one_connection(
    make_worker: MakeWorker,
    make_proxy: MakeProxy,
    ssh_server: SshServer,
    source_file: Path,
    remote_dir: Path,
    engine: str,
    case: str,
) -> None:
    proxy, known_hosts = await make_proxy()
    worker = await make_worker(known_hosts=str(known_hosts), max_attempts=4, **FAST_RETRY)
    user = ssh_server.user if case == "wrong password" else "nosuchuser42"
    password = "not-the-password-42" if case == "wrong password" else ssh_server.password
    body = request_body(
        ssh_server, source_file, str(remote_dir / "a.bin"),
        port=proxy.port, user=user, password=password, engine=engine,
    )  # fmt: skip
    result, elapsed = await timed(worker.run(body))
    print(f"{case} / {engine}: {result.error} in {elapsed:.2f} s, {proxy.accepted} connection(s)")
    expect_failure(result, "auth")
    assert result.attempts == 1
    assert proxy.accepted == 1, "a refused login must not be retried"
    assert elapsed < 15
    assert not (remote_dir / "a.bin").exists()


@pytest.mark.parametrize("engine", ENGINES)
async def test_peer_that_drops_connections_is_retried_max_attempts_with_backoff(
    make_worker: MakeWorker,
    make_proxy: MakeProxy,
    ssh_server: SshServer,
    source_file: Path,
    engine: str,
) -> None:
    # the proxy accepts and, its target port being closed, drops each connection
    proxy, known_hosts = await make_proxy(target_port=closed_port())
    worker = await make_worker(known_hosts=str(known_hosts), max_attempts=3, **FAST_RETRY)
    body = request_body(ssh_server, source_file, "/tmp/x", port=proxy.port, engine=engine)
    result, elapsed = await timed(worker.run(body))
    print(f"dropped / {engine}: {result.error} in {elapsed:.2f} s, {proxy.accepted} connection(s)")
    expect_failure(result, "unreachable")
    assert result.attempts == 3
    assert proxy.accepted == 3
    # two backoff waits of at least 0.1 and 0.2 s (jitter halves at most), and no storm
    assert 0.3 <= elapsed < 20


@pytest.mark.parametrize("engine", ENGINES)
async def test_closed_port_is_unreachable_after_bounded_retries(
    make_worker: MakeWorker, ssh_server: SshServer, source_file: Path, engine: str
) -> None:
    worker = await make_worker(max_attempts=3, **FAST_RETRY)
    body = request_body(ssh_server, source_file, "/tmp/x", port=closed_port(), engine=engine)
    result, elapsed = await timed(worker.run(body))
    print(f"closed port / {engine}: {result.error} in {elapsed:.2f} s")
    expect_failure(result, "unreachable")
    assert result.attempts == 3
    assert 0.3 <= elapsed < 20


@pytest.mark.parametrize("engine", ENGINES)
async def test_unroutable_host_is_unreachable_not_timeout(
    make_worker: MakeWorker, ssh_server: SshServer, source_file: Path, engine: str
) -> None:
    worker = await make_worker(max_attempts=2, connect_timeout=1.0, **FAST_RETRY)
    body = request_body(ssh_server, source_file, "/tmp/x", host=TEST_NET, engine=engine)
    result, elapsed = await timed(worker.run(body))
    print(f"{TEST_NET} / {engine}: {result.error} in {elapsed:.2f} s")
    expect_failure(result, "unreachable")
    assert result.attempts == 2
    # two connect timeouts of 1 s and one backoff wait, far from the 30 s request timeout
    assert elapsed < 15


@pytest.mark.parametrize("engine", ENGINES)
async def test_silent_server_is_unreachable_after_connect_timeouts(
    make_worker: MakeWorker, make_proxy: MakeProxy, ssh_server: SshServer, source_file: Path,
    engine: str,
) -> None:  # fmt: skip
    # accepts TCP and never sends a banner: each attempt ends at connect_timeout
    proxy, known_hosts = await make_proxy(silent=True)
    worker = await make_worker(
        known_hosts=str(known_hosts), max_attempts=2, connect_timeout=1.0, **FAST_RETRY
    )
    body = request_body(ssh_server, source_file, "/tmp/x", port=proxy.port, engine=engine)
    result, elapsed = await timed(worker.run(body))
    print(f"silent / {engine}: {result.error} in {elapsed:.2f} s, {proxy.accepted} connection(s)")
    expect_failure(result, "unreachable")  # docs/messages.md: "... or timed out after retries"
    assert result.attempts == 2
    assert proxy.accepted == 2
    assert 2.0 <= elapsed < 15


@pytest.mark.parametrize("engine", [*ENGINES, "local"])
async def test_missing_source_is_not_found_without_connecting(
    make_worker: MakeWorker,
    make_proxy: MakeProxy,
    ssh_server: SshServer,
    tmp_path: Path,
    remote_dir: Path,
    engine: str,
) -> None:
    proxy, known_hosts = await make_proxy()
    worker = await make_worker(known_hosts=str(known_hosts))
    body = request_body(
        ssh_server, tmp_path / "no such file", str(remote_dir / "a.bin"),
        port=proxy.port, engine=engine, password=ssh_server.password,
    )  # fmt: skip
    result, elapsed = await timed(worker.run(body))
    expect_failure(result, "not_found")
    assert result.attempts == 0  # refused before any attempt (docs/messages.md)
    assert proxy.accepted == 0
    assert elapsed < 10


@pytest.mark.parametrize("engine", ENGINES)
async def test_unwritable_destination_is_permission_and_leaves_nothing(
    make_worker: MakeWorker,
    make_proxy: MakeProxy,
    ssh_server: SshServer,
    source_file: Path,
    remote_dir: Path,
    engine: str,
) -> None:
    locked = remote_dir / "locked"
    locked.mkdir(mode=0o755)  # owned by root: the user may look but not write
    proxy, known_hosts = await make_proxy()
    worker = await make_worker(known_hosts=str(known_hosts), **FAST_RETRY)
    body = request_body(
        ssh_server, source_file, str(locked / "a.bin"),
        port=proxy.port, engine=engine, password=ssh_server.password,
    )  # fmt: skip
    result, elapsed = await timed(worker.run(body))
    print(f"unwritable / {engine}: {result.error} in {elapsed:.2f} s, {proxy.accepted} conn")
    expect_failure(result, "permission")
    assert result.attempts == 1
    assert elapsed < 15
    assert list(locked.iterdir()) == []


@contextlib.contextmanager
def tiny_tmpfs(folder: Path, owner: Path) -> Iterator[Path]:
    """A 64 KiB tmpfs on ``folder``, owned like ``owner``; skips where mounting is impossible."""
    folder.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root and mount(8)")
    stat = owner.stat()
    options = f"size=64k,mode=0755,uid={stat.st_uid},gid={stat.st_gid}"
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True, check=False)


@pytest.mark.parametrize("engine", [*ENGINES, "local"])
async def test_full_destination_disk_is_remote_and_leaves_no_file(
    make_worker: MakeWorker,
    ssh_server: SshServer,
    source_file: Path,
    remote_dir: Path,
    engine: str,
) -> None:
    with tiny_tmpfs(remote_dir / "full", ssh_server.home) as full:
        worker = await make_worker(**FAST_RETRY)
        destination = full / "a.bin"
        body = request_body(
            ssh_server, source_file, str(destination),
            engine=engine, password=ssh_server.password,
        )  # fmt: skip
        result, elapsed = await timed(worker.run(body))
        print(f"disk full / {engine}: {result.error} in {elapsed:.2f} s")
        expect_failure(result, "remote")  # docs/messages.md: "remote ... (disk full, ...)"
        assert result.attempts == 1
        assert elapsed < 15
        assert not destination.exists()
        assert temp_names(full) == [], "the temporary file must be removed"


@pytest.mark.parametrize("engine", ENGINES)
async def test_server_hanging_mid_transfer_is_timeout_by_the_deadline(
    make_worker: MakeWorker,
    make_proxy: MakeProxy,
    ssh_server: SshServer,
    tmp_path: Path,
    remote_dir: Path,
    engine: str,
) -> None:
    source = tmp_path / "big.bin"
    source.write_bytes(os.urandom(4_000_000))
    proxy, known_hosts = await make_proxy(stall_after_bytes=400_000)
    worker = await make_worker(known_hosts=str(known_hosts), **FAST_RETRY)
    destination = remote_dir / "big.bin"
    deadline_s = 3.0
    body = request_body(
        ssh_server, source, str(destination), port=proxy.port, engine=engine,
        password=ssh_server.password, deadline=time.time() + deadline_s,
    )  # fmt: skip
    result, elapsed = await timed(worker.run(body))
    print(f"hang / {engine}: {result.error} in {elapsed:.2f} s, left {temp_names(remote_dir)}")
    expect_failure(result, "timeout")
    assert proxy.stalled >= 1, "the proxy never stalled: the case did not happen"
    assert elapsed < deadline_s + 10, "the deadline did not bound the copy"
    assert not destination.exists()
    # the stalled connection must not be reused: the next job gets a fresh one
    proxy.stall_after_bytes = None
    body = request_body(
        ssh_server, source, str(destination), port=proxy.port, engine=engine,
        password=ssh_server.password, deadline=time.time() + 20,
    )  # fmt: skip
    result, elapsed = await timed(worker.run(body))
    assert result.ok, result.error
    assert destination.read_bytes() == source.read_bytes()
    # what the stopped copy left there (a stalled server took no removal) is gone now
    assert temp_names(remote_dir) == []
