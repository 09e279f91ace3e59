"""SftpEngine's small-file channel against a real sshd: whole files, atomic renames,
clean failures, and a lost channel that costs a retry, not a job."""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import psutil
import pytest
from jupiter_providers.copy_engines import (
    TEMP_MARK,
    CopyJob,
    SftpEngine,
    SmallFileChannel,
    _has_posix_rename,
)
from jupiter_providers.ssh_pool import SshOptions, SshPool

from jupiter_bus.errors import CopyFailure

from .sshd import SshServer


@pytest.fixture
async def pool(ssh_server: SshServer) -> AsyncIterator[SshPool]:
    pool = SshPool(
        SshOptions(
            known_hosts=str(ssh_server.known_hosts),
            client_keys=[str(ssh_server.client_key)],
            connect_timeout=5.0,
        )
    )
    yield pool
    await pool.close()


@pytest.fixture
def remote_dir(ssh_server: SshServer) -> Path:
    """A fresh folder in the test user's home, owned by the user."""
    folder = ssh_server.home / f"small-{uuid.uuid4().hex[:10]}"
    folder.mkdir()
    owner = ssh_server.home.stat()
    os.chown(folder, owner.st_uid, owner.st_gid)
    return folder


def make_sources(folder: Path, count: int, size: int) -> list[Path]:
    folder.mkdir(exist_ok=True)
    sources = []
    for i in range(count):
        path = folder / f"f{i:03d}.bin"
        path.write_bytes(os.urandom(size))
        sources.append(path)
    return sources


def job(server: SshServer, source: Path, destination: Path, **fields: object) -> CopyJob:
    return CopyJob(
        host=server.host,
        port=server.port,
        user=server.user,
        source=str(source),
        destination=str(destination),
        idempotency_key=f"key-{destination.name}",
        **fields,
    )


def leftovers(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if TEMP_MARK in p.name]


def server_files_open_in(server: SshServer, folder: Path) -> list[str]:
    """Files under ``folder`` (removed ones too) held open by the test user's processes."""
    held = []
    for process in psutil.process_iter(["username"]):
        if process.info["username"] != server.user:
            continue
        fds = Path(f"/proc/{process.pid}/fd")
        with contextlib.suppress(OSError):
            targets = [os.readlink(fd) for fd in fds.iterdir()]
            held += [t for t in targets if t.startswith(f"{folder}/")]
    return held


def only_connection(pool: SshPool) -> object:
    (pooled,) = pool._idle.values()
    return pooled


async def test_many_small_files_arrive_whole_over_one_connection_and_channel(
    ssh_server: SshServer, pool: SshPool, remote_dir: Path, tmp_path: Path
) -> None:
    sources = make_sources(tmp_path / "src", 120, 4096)
    sources += make_sources(tmp_path / "edge", 1, 0) + make_sources(tmp_path / "max", 1, 65_536)
    engine = SftpEngine(pool)
    jobs = [
        # the size is known to the worker; other callers may leave it unknown (-1)
        job(ssh_server, s, remote_dir / f"{s.parent.name}-{s.name}", size_bytes=i % 2 - 1)
        for i, s in enumerate(sources)
    ]
    await asyncio.gather(*(engine.copy(j) for j in jobs))
    for j in jobs:
        assert Path(j.destination).read_bytes() == Path(j.source).read_bytes()
    assert leftovers(remote_dir) == []
    assert pool.connects == 1
    # asyncssh's own SFTP client was never started: every file took the small-file channel
    assert only_connection(pool)._sftp is None  # type: ignore[attr-defined]


async def test_existing_destination_is_replaced_and_a_folder_is_created_on_request(
    ssh_server: SshServer, pool: SshPool, remote_dir: Path, tmp_path: Path
) -> None:
    (source,) = make_sources(tmp_path / "src", 1, 4096)
    engine = SftpEngine(pool)
    existing = remote_dir / "existing.bin"
    existing.write_bytes(b"old")
    await engine.copy(job(ssh_server, source, existing))
    assert existing.read_bytes() == source.read_bytes()
    deeper = remote_dir / "new dir" / "deeper" / "f.bin"
    with pytest.raises(CopyFailure) as failure:
        await engine.copy(job(ssh_server, source, deeper))
    assert failure.value.kind == "not_found"
    await engine.copy(job(ssh_server, source, deeper, create_dirs=True))
    assert deeper.read_bytes() == source.read_bytes()


async def test_failures_are_classified_and_leave_no_temporary_file(
    ssh_server: SshServer, pool: SshPool, remote_dir: Path, tmp_path: Path
) -> None:
    (source,) = make_sources(tmp_path / "src", 1, 4096)
    engine = SftpEngine(pool)
    locked = ssh_server.home / f"locked-{uuid.uuid4().hex[:10]}"
    locked.mkdir(mode=0o755)  # owned by root: the test user cannot write here
    with pytest.raises(CopyFailure) as failure:
        await engine.copy(job(ssh_server, source, locked / "f.bin"))
    assert failure.value.kind == "permission"
    assert list(locked.iterdir()) == []
    # the temporary file is written, then the rename fails: it is removed again
    folder_in_the_way = remote_dir / "taken"
    (folder_in_the_way / "child").mkdir(parents=True)
    with pytest.raises(CopyFailure) as failure:
        await engine.copy(job(ssh_server, source, folder_in_the_way))
    assert failure.value.kind == "remote"
    assert leftovers(remote_dir) == []
    with pytest.raises(CopyFailure) as failure:
        await engine.copy(job(ssh_server, tmp_path / "absent.bin", remote_dir / "a.bin"))
    assert failure.value.kind == "not_found"


async def test_lost_channel_fails_jobs_in_flight_as_transient_and_a_retry_completes_them(
    ssh_server: SshServer, pool: SshPool, remote_dir: Path, tmp_path: Path
) -> None:
    sources = make_sources(tmp_path / "src", 60, 4096)
    engine = SftpEngine(pool)
    await engine.copy(job(ssh_server, sources[0], remote_dir / "warm.bin"))
    (slot,) = engine._slots.values()
    first = slot._channel
    assert isinstance(first, SmallFileChannel)
    jobs = [job(ssh_server, s, remote_dir / s.name) for s in sources]
    copies = [asyncio.create_task(engine.copy(j)) for j in jobs]
    await asyncio.sleep(0)  # every copy has sent its open request
    first.close()
    outcomes = await asyncio.gather(*copies, return_exceptions=True)
    failed = [j for j, o in zip(jobs, outcomes, strict=True) if isinstance(o, BaseException)]
    assert failed, "closing the channel should have cut some copies short"
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            assert isinstance(outcome, CopyFailure)
            assert (outcome.kind, outcome.transient) == ("unreachable", True), outcome
    # the worker retries transient failures: the same jobs now go over a new channel
    await asyncio.gather(*(engine.copy(j) for j in failed))
    assert slot._channel is not first
    for j in jobs:
        assert Path(j.destination).read_bytes() == Path(j.source).read_bytes()
    assert leftovers(remote_dir) == []  # a retry reuses and renames its temporary name
    assert pool.connects == 1


@pytest.mark.parametrize("small_file_channel", [True, False])
async def test_a_cancelled_copy_leaves_no_temporary_file(
    ssh_server: SshServer,
    pool: SshPool,
    remote_dir: Path,
    tmp_path: Path,
    small_file_channel: bool,
) -> None:
    sources = make_sources(tmp_path / "src", 20, 4096)
    engine = SftpEngine(pool, small_file_channel=small_file_channel)
    await engine.copy(job(ssh_server, sources[0], remote_dir / "warm.bin"))
    copies = [
        asyncio.create_task(engine.copy(job(ssh_server, s, remote_dir / s.name))) for s in sources
    ]
    await asyncio.sleep(0)  # cancelled while their open requests are on the way
    for copy in copies:
        copy.cancel()
    await asyncio.gather(*copies, return_exceptions=True)
    await engine.copy(job(ssh_server, sources[0], remote_dir / "after.bin"))  # still usable
    assert leftovers(remote_dir) == []
    for source in sources:
        target = remote_dir / source.name
        assert not target.exists() or target.read_bytes() == source.read_bytes()
    if small_file_channel:  # a handle opened for a cancelled copy is closed again
        assert server_files_open_in(ssh_server, remote_dir) == []


def test_posix_rename_is_found_among_the_server_extensions() -> None:
    def string(value: bytes) -> bytes:
        return len(value).to_bytes(4, "big") + value

    offered = (3).to_bytes(4, "big") + string(b"posix-rename@openssh.com") + string(b"1")
    assert _has_posix_rename(offered)
    other = (3).to_bytes(4, "big") + string(b"statvfs@openssh.com") + string(b"2")
    assert not _has_posix_rename(other)
    assert not _has_posix_rename((2).to_bytes(4, "big") + string(b"posix-rename@openssh.com"))
