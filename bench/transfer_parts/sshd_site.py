"""The site the copies go to: a fresh ``sshd`` and user, the source files, the pools."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import tempfile
import uuid
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from harness.children import run_program
from harness.errors import BenchError
from jupiter_providers.copy_engines import CopyJob, OpenSshOptions
from jupiter_providers.ssh_pool import FAST_CIPHERS, SshOptions, SshPool

from tests.sshd import SshServer, sshd_unavailable_reason, start_sshd
from transfer_parts.settings import PROGRAM_TIMEOUT_S, Settings


@dataclass(frozen=True, slots=True)
class Site:
    """The sshd, its user, the local source files and helpers to reach them."""

    server: SshServer
    local: Path
    big: Path
    small: tuple[Path, ...]
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:8])

    def remote_dir(self, name: str) -> Path:
        """An empty folder ``name`` in the user's home, owned by the user."""
        folder = self.server.home / name
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir()
        owner = self.server.home.stat()
        os.chown(folder, owner.st_uid, owner.st_gid)
        return folder

    def emptier(self, folder: Path) -> Callable[[], Awaitable[None]]:
        """A case's ``prepare``: empty ``folder`` of the user's home, in a thread (it blocks)."""

        async def prepare() -> None:
            await asyncio.to_thread(self.remote_dir, folder.name)

        return prepare

    def job(self, source: Path, destination: Path, key: str | None = None) -> CopyJob:
        return CopyJob(
            host=self.server.host,
            port=self.server.port,
            user=self.server.user,
            source=str(source),
            destination=str(destination),
            idempotency_key=key or uuid.uuid4().hex,
        )

    def ssh_options(self, ciphers: Sequence[str] = FAST_CIPHERS) -> SshOptions:
        return SshOptions(
            known_hosts=str(self.server.known_hosts),
            client_keys=[str(self.server.client_key)],
            ciphers=tuple(ciphers),
        )

    def openssh_options(self) -> OpenSshOptions:
        return OpenSshOptions(
            known_hosts=str(self.server.known_hosts),
            identity_files=(str(self.server.client_key),),
        )

    def target(self, path: Path) -> str:
        return f"{self.server.user}@{self.server.host}:{path}"

    def scp_argv(self, sources: Sequence[Path], target: str, *extra: str) -> list[str]:
        """OpenSSH ``scp`` with the key, strict host key checking, no prompts."""
        s = self.server
        return [
            "scp",
            "-q",
            "-P",
            str(s.port),
            "-i",
            str(s.client_key),
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            f"UserKnownHostsFile={s.known_hosts}",
            *extra,
            "--",
            *map(str, sources),
            target,
        ]


def _write_random(path: Path, size: int) -> None:
    chunk = 4 * 1024 * 1024
    with path.open("wb") as out:
        for start in range(0, size, chunk):
            out.write(os.urandom(min(chunk, size - start)))


def make_sources(local: Path, settings: Settings) -> tuple[Path, tuple[Path, ...]]:
    big = local / "big.bin"
    _write_random(big, settings.big_bytes)
    folder = local / "small"
    folder.mkdir()
    small = []
    for i in range(settings.small_count):
        path = folder / f"f{i:04d}.bin"
        path.write_bytes(os.urandom(settings.small_bytes))
        small.append(path)
    return big, tuple(small)


@contextlib.contextmanager
def open_site(settings: Settings) -> Iterator[Site]:
    """A fresh sshd and user and the source files; all removed on exit."""
    if (reason := sshd_unavailable_reason()) is not None:
        raise SystemExit(f"cannot run: {reason}")
    # Not under a 0700 folder: the sshd's user must reach its home in here.
    workdir = Path(tempfile.mkdtemp(prefix="jupiter-bench-transfer-"))
    try:
        workdir.chmod(0o711)
        local = workdir / "local"
        local.mkdir()
        big, small = make_sources(local, settings)
        with start_sshd(workdir) as server:
            yield Site(server, local, big, small)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


async def run_openssh(argv: Sequence[str], env: Mapping[str, str] | None = None) -> None:
    """Run an OpenSSH program to its end; :class:`ChildFailed` with its stderr if it fails."""
    await run_program(argv, timeout_s=PROGRAM_TIMEOUT_S, env=env)


def expect_files(paths: Sequence[Path], size: int) -> Callable[[], None]:
    """A check that every path exists with ``size`` bytes (a fast failure is no result)."""

    def check() -> None:
        wrong = [p for p in paths if not p.is_file() or p.stat().st_size != size]
        if wrong:
            raise BenchError(f"{len(wrong)} copies missing or wrong, e.g. {wrong[0]}")

    return check


class Pools:
    """Every SshPool the benchmark opens, closed at the end."""

    def __init__(self, site: Site) -> None:
        self.site = site
        self._pools: list[SshPool] = []

    def new(self, ciphers: Sequence[str] = FAST_CIPHERS) -> SshPool:
        pool = SshPool(self.site.ssh_options(ciphers))
        self._pools.append(pool)
        return pool

    async def close(self) -> None:
        for pool in self._pools:
            await pool.close()
