"""The engines on asyncssh's pooled connections: ``sftp`` (the default) and ``scp``.

Both lease a connection from the worker's :class:`~jupiter_providers.ssh_pool.SshPool`,
write the file to the job's temporary name and rename it over SFTP; they differ only in
how the bytes get to the temporary name (:meth:`_PooledSshEngine._send`). A file of at
most :data:`SMALL_FILE_BYTES` goes to ``sftp`` through the connection's
:class:`~jupiter_providers.sftp_small.SmallFileChannel` instead, which writes and renames
in one batch of requests.

Both report progress to the job's :attr:`~jupiter_providers.copy_job.CopyJob.progress`:
through asyncssh's ``progress_handler`` as blocks are acknowledged, and a file sent in one
write once, when it is written.
"""

from __future__ import annotations

import abc
import asyncio
import logging
import posixpath
import shlex
import weakref
from collections.abc import Awaitable, Callable

import asyncssh

from .copy_job import CopyJob, Engine, Leftovers, classify, refuse_line_breaks
from .sftp_small import SmallFileSlot
from .ssh_pool import PooledConnection, SshPool

__all__ = ["CLEANUP_SECONDS", "SMALL_FILE_BYTES", "ScpEngine", "SftpEngine"]

log = logging.getLogger(__name__)

SMALL_FILE_BYTES = 64 * 1024
"""Files up to this size are sent with a single SFTP write."""

CLEANUP_SECONDS = 2.0
"""Longest wait for removing a failed copy's temporary file: the peer may have stopped
answering, and the job's deadline must still hold."""


class _PooledSshEngine(Engine):
    """Shared by the asyncssh engines: pooled connections, atomic rename over SFTP."""

    def __init__(self, pool: SshPool) -> None:
        self.pool = pool
        self.leftovers = Leftovers()
        """Temporary files failed copies left on their servers, removed by the next copy
        to the same endpoint."""

    async def copy(self, job: CopyJob) -> None:
        """Copy over a pooled connection; a broken connection is dropped from the pool."""
        try:
            await self._copy(job)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            raise classify(exc, job) from None

    async def _copy(self, job: CopyJob) -> None:
        """Send to the temporary name, then rename it; on any failure remove it again."""
        async with self.pool.lease(job.host, job.port, job.user, job.password) as conn:
            await conn.run(self._copy_on(conn, job))

    async def _copy_on(self, conn: PooledConnection, job: CopyJob) -> None:
        sftp = await conn.sftp()
        temp = job.temp_destination
        await self.leftovers.claim(job, temp)
        await _sweep(self.leftovers, job, sftp.remove)
        await _make_folder(conn, job)
        try:
            await self._send(conn, job, temp)
            await _rename(sftp, temp, job.destination)
        except BaseException:
            if not await _remove_quietly(sftp.remove, temp):
                self.leftovers.add(job, temp)
            raise

    @abc.abstractmethod
    async def _send(self, conn: PooledConnection, job: CopyJob, temp: str) -> None:
        """Write ``job.source`` to ``temp`` on the server."""


async def _make_folder(conn: PooledConnection, job: CopyJob) -> None:
    """Create the destination's folder (and its parents) if the job asks for it."""
    if job.create_dirs:
        sftp = await conn.sftp()
        await sftp.makedirs(posixpath.dirname(job.destination) or ".", exist_ok=True)


async def _rename(sftp: asyncssh.SFTPClient, temp: str, destination: str) -> None:
    try:
        await sftp.posix_rename(temp, destination)  # atomic, replaces the destination
    except asyncssh.SFTPOpUnsupported:  # pragma: no cover - servers without the extension
        if await sftp.exists(destination):
            await sftp.remove(destination)
        await sftp.rename(temp, destination)


async def _remove_quietly(remove: Callable[[str], Awaitable[None]], path: str) -> bool:
    """Remove a temporary file after a failure; the failure, not this, is what is reported.
    Whether it is gone (removed, or it never existed).

    Bounded by :data:`CLEANUP_SECONDS`: over a connection that stopped answering, an
    unbounded (or shielded) remove kept a cancelled copy alive, so a job's deadline
    did not stop it. What is left is noted in the engine's :class:`Leftovers` and
    removed by its next copy to that server.
    """
    try:
        await asyncio.wait_for(remove(path), CLEANUP_SECONDS)
    except asyncssh.SFTPNoSuchFile:
        return True
    except (asyncssh.Error, OSError, TimeoutError, asyncio.CancelledError):
        return False
    return True


async def _sweep(
    leftovers: Leftovers, job: CopyJob, remove: Callable[[str], Awaitable[None]]
) -> None:
    """Remove the temporary files earlier copies left on ``job``'s server (at most
    :data:`CLEANUP_SECONDS` in all); note again the ones that stay."""
    paths = leftovers.take(job)
    if not paths:
        return
    gone: list[bool] = []
    try:
        gone = await asyncio.gather(*(_remove_quietly(remove, path) for path in paths))
    finally:
        kept = [p for p, g in zip(paths, gone, strict=True) if not g] if gone else paths
        leftovers.settle(job, paths, kept=kept)
    log.info(
        "removed %d of %d temporary files left on %s by stopped copies",
        len(paths) - len(kept),
        len(paths),
        job.where,
    )


def _progress_handler(job: CopyJob) -> Callable[[bytes, bytes, int, int], None] | None:
    """asyncssh's ``progress_handler(srcpath, dstpath, bytes_copied, total_bytes)`` for
    the job's progress callback (``None`` when the job has none: asyncssh then skips it)."""
    progress = job.progress
    if progress is None:
        return None

    def handler(_src: bytes, _dst: bytes, bytes_copied: int, _total: int) -> None:
        progress(bytes_copied)

    return handler


def _read_if_small(job: CopyJob) -> bytes | None:
    """The source's bytes if it is at most :data:`SMALL_FILE_BYTES` long, else None."""
    if job.size_bytes > SMALL_FILE_BYTES:
        return None
    # At most 64 KiB from the page cache: measured cheaper than a thread hop.
    with open(job.source, "rb") as file:
        data = file.read(SMALL_FILE_BYTES + 1)
    return data if len(data) <= SMALL_FILE_BYTES else None


class SftpEngine(_PooledSshEngine):
    """SFTP with pipelined requests (the default engine).

    A file of at most :data:`SMALL_FILE_BYTES` goes through the connection's
    :class:`~jupiter_providers.sftp_small.SmallFileChannel` (``small_file_channel=False``:
    asyncssh's SFTP client, as for larger files, which go through its ``put``).

    Example::

        engine = SftpEngine(SshPool(SshOptions(known_hosts="/etc/jupiter/known_hosts")))
        await engine.copy(job)
    """

    name = "sftp"

    def __init__(
        self,
        pool: SshPool,
        *,
        block_size: int = -1,
        max_requests: int = -1,
        small_file_channel: bool = True,
    ) -> None:
        super().__init__(pool)
        self.block_size = block_size
        self.max_requests = max_requests
        self.small_file_channel = small_file_channel
        self._slots: weakref.WeakKeyDictionary[asyncssh.SSHClientConnection, SmallFileSlot] = (
            weakref.WeakKeyDictionary()
        )

    async def _copy(self, job: CopyJob) -> None:
        """A small file through a lean channel, others (and refused ones) through ``put``."""
        data = _read_if_small(job) if self.small_file_channel else None
        if data is None or not await self._put_small(job, data):
            await super()._copy(job)

    async def _put_small(self, job: CopyJob, data: bytes) -> bool:
        """Send ``data`` over a small-file channel; False if the server cannot take it."""
        timeout = self.pool.options.connect_timeout
        async with self.pool.lease(job.host, job.port, job.user, job.password) as conn:
            return await conn.run(self._put_small_on(conn, job, data, timeout))

    async def _put_small_on(
        self, conn: PooledConnection, job: CopyJob, data: bytes, timeout: float
    ) -> bool:
        slot = self._slots.get(conn.connection)
        if slot is None:
            slot = self._slots[conn.connection] = SmallFileSlot(conn.connection)
        channel = await slot.channel(timeout)
        if channel is None:
            return False
        temp = job.temp_destination
        await self.leftovers.claim(job, temp)
        await _sweep(self.leftovers, job, channel.remove)
        await _make_folder(conn, job)
        try:
            await channel.put(data, temp, job.destination)
        except BaseException:
            if not await _remove_quietly(channel.remove, temp):
                self.leftovers.add(job, temp)
            raise
        job.report(len(data))
        return True

    async def _send(self, conn: PooledConnection, job: CopyJob, temp: str) -> None:
        sftp = await conn.sftp()
        # One open/write/close: sftp.put() would also stat the target first, and for
        # small files those round trips and asyncssh's per-request cost dominate.
        data = _read_if_small(job) if job.size_bytes >= 0 else None
        if data is not None:
            async with sftp.open(temp, "wb") as remote:
                await remote.write(data)
            job.report(len(data))
            return
        # A block above the server's write limit makes OpenSSH drop the session.
        limit = sftp.limits.max_write_len
        block = min(self.block_size, limit) if self.block_size > 0 else -1
        await sftp.put(
            job.source,
            temp,
            block_size=block,
            max_requests=self.max_requests,
            progress_handler=_progress_handler(job),
        )


class ScpEngine(_PooledSshEngine):
    """asyncssh's SCP client over a pooled connection.

    The SCP protocol starts ``scp -t PATH`` on the server through the user's login
    shell, and asyncssh puts the path in that command as it is: a path with spaces
    would break and one with ``$(...)`` would run. The path is therefore quoted for a
    POSIX shell (and kept from looking like an option), so it is taken literally.
    The default ``sftp`` engine involves no remote shell at all.

    Example::

        engine = ScpEngine(pool)  # the same pool as the worker's SftpEngine
        await engine.copy(job)
    """

    name = "scp"

    async def copy(self, job: CopyJob) -> None:
        """Refuse paths the SCP protocol cannot carry, then copy as every pooled engine."""
        refuse_line_breaks(job, self.name)
        await super().copy(job)

    async def _send(self, conn: PooledConnection, job: CopyJob, temp: str) -> None:
        target = temp if temp.startswith("/") else "./" + temp
        await asyncssh.scp(
            job.source,
            (conn.connection, shlex.quote(target)),
            progress_handler=_progress_handler(job),
        )
