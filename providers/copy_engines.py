"""Copy engines: how a transfer worker moves one file to ``user@host:destination``.

Every engine writes to a temporary name in the destination folder and renames it
when the copy is complete, so a partial file never appears under the final name.
The temporary name is derived from the job's idempotency key: a job that is run
again after a crash overwrites what the crashed run left, and a failed copy removes
its temporary file.

Engines (selected by the request's ``engine`` field):

- ``sftp`` (default): SFTP over a pooled connection, pipelined requests; a file of
  one write goes through a lean SFTP channel of its own (:class:`SmallFileChannel`);
- ``scp``: asyncssh's SCP over a pooled connection (rename through SFTP);
- ``openssh-scp``: the OpenSSH ``scp`` program (legacy); a password goes to
  ``sshpass -e`` through the environment, never the command line;
- ``local``: a local copy on the executing node (tests, demos, single-host setups).
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import errno
import hashlib
import os
import posixpath
import shlex
import shutil
import socket
import struct
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import asyncssh

from jupiter_bus.errors import CopyFailure

from .ssh_pool import SshPool

TEMP_MARK = ".jbpart-"
SMALL_FILE_BYTES = 64 * 1024
"""Files up to this size are sent with a single SFTP write."""


@dataclass(frozen=True, slots=True, kw_only=True)
class CopyJob:
    """One file to copy: local ``source`` to ``destination`` on ``user@host:port``."""

    host: str
    port: int
    user: str
    password: str | None = field(default=None, repr=False)
    source: str
    destination: str
    idempotency_key: str
    create_dirs: bool = False
    size_bytes: int = -1
    """The source's size when the caller knows it (-1: unknown)."""

    @property
    def where(self) -> str:
        """``user@host:port``, for messages (never with a secret)."""
        return f"{self.user}@{self.host}:{self.port}"

    @property
    def temp_destination(self) -> str:
        """The temporary name the copy is written to before the final rename."""
        digest = hashlib.sha256(self.idempotency_key.encode()).hexdigest()[:16]
        folder, name = posixpath.split(self.destination)
        return posixpath.join(folder, f".{name}{TEMP_MARK}{digest}")


def classify(exc: BaseException, job: CopyJob) -> CopyFailure:
    """Map an exception from SSH, SFTP or the local file system to a :class:`CopyFailure`."""
    if isinstance(exc, CopyFailure):
        return exc
    where = job.where
    if isinstance(exc, asyncssh.HostKeyNotVerifiable):
        return CopyFailure("auth", f"host key of {job.host}:{job.port} is not in known_hosts")
    if isinstance(exc, asyncssh.PermissionDenied):
        return CopyFailure("auth", f"authentication failed for {where}")
    if isinstance(exc, asyncssh.SFTPNoSuchFile):
        return CopyFailure("not_found", f"no such file or folder on {where}: {exc.reason}")
    if isinstance(exc, asyncssh.SFTPPermissionDenied):
        return CopyFailure("permission", f"permission denied on {where}: {exc.reason}")
    if isinstance(exc, asyncssh.SFTPError):
        # asyncssh's SCP reports the remote scp's own words as a generic failure
        reason = str(exc.reason)
        if "permission denied" in reason.lower():
            return CopyFailure("permission", f"permission denied on {where}: {reason}")
        if "no such file" in reason.lower():
            return CopyFailure("not_found", f"no such file or folder on {where}: {reason}")
        return CopyFailure("remote", f"SFTP error on {where}: {reason}")
    if isinstance(exc, asyncssh.DisconnectError | asyncssh.ConnectionLost):
        return CopyFailure(
            "unreachable", f"SSH connection to {where} lost: {exc.reason}", transient=True
        )
    if isinstance(exc, TimeoutError):
        return CopyFailure("timeout", f"timed out talking to {where}", transient=True)
    if isinstance(exc, socket.gaierror):
        return CopyFailure("unreachable", f"cannot resolve {job.host}", transient=True)
    if isinstance(exc, FileNotFoundError):
        return CopyFailure("not_found", f"no such file: {exc.filename or job.source}")
    if isinstance(exc, PermissionError):
        return CopyFailure("permission", f"permission denied: {exc.filename or job.source}")
    if isinstance(exc, IsADirectoryError):
        return CopyFailure("invalid", f"is a folder, not a file: {exc.filename or job.source}")
    if isinstance(exc, ConnectionError | OSError) and (
        isinstance(exc, ConnectionError)
        or exc.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH, errno.ECONNREFUSED, errno.ETIMEDOUT)
    ):
        return CopyFailure(
            "unreachable",
            f"cannot reach {job.host}:{job.port}: {exc.strerror or exc}",
            transient=True,
        )
    return CopyFailure("remote", f"{type(exc).__name__} copying to {where}")


_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")
_FXP_INIT, _FXP_VERSION, _FXP_OPEN, _FXP_CLOSE, _FXP_WRITE = 1, 2, 3, 4, 6
_FXP_REMOVE, _FXP_EXTENDED, _FXP_STATUS, _FXP_HANDLE = 13, 200, 101, 102
_OPEN_FOR_WRITING = 0x02 | 0x08 | 0x10  # WRITE | CREAT | TRUNC; mode left to the umask
_NO_ATTRS = _U32.pack(0)
_POSIX_RENAME = b"posix-rename@openssh.com"


def _string(value: bytes) -> bytes:
    return _U32.pack(len(value)) + value


def _status_error(code: int, reason: str) -> asyncssh.SFTPError:
    if code == 2:  # SSH_FX_NO_SUCH_FILE
        return asyncssh.SFTPNoSuchFile(reason)
    if code == 3:  # SSH_FX_PERMISSION_DENIED
        return asyncssh.SFTPPermissionDenied(reason)
    return asyncssh.SFTPError(code, reason)


class SmallFileChannel(asyncssh.SSHClientSession[bytes]):
    """A minimal SFTP v3 client on a channel of its own, for files sent in one write.

    asyncssh's SFTP client spends about 0.1 ms of CPU per request (a future, log
    records, one SSH packet per request and an SSH_MSG_IGNORE before each); a small
    copy takes four requests. Here the requests made in one event-loop iteration go
    out in one channel write and answers are parsed as they arrive, which cut the
    client's CPU per 4 KB file from about 0.5 to 0.2 ms. It speaks only what
    :meth:`put` needs: open, write, close, the OpenSSH ``posix-rename`` extension and
    remove; :meth:`start` returns None when the server lacks that extension.

    Example::

        channel = await SmallFileChannel.start(connection, timeout=10)
        if channel is not None:
            await channel.put(b"data", "/srv/.f.jbpart-1", "/srv/f")
    """

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._channel: asyncssh.SSHClientChannel[bytes] | None = None
        self._inbox = bytearray()
        self._outbox: list[bytes] = []
        self._waiters: dict[int, asyncio.Future[bytes | None]] = {}
        self._next_id = 0
        self._lost: Exception | None = None
        self._version: asyncio.Future[bytes] = self._loop.create_future()

    @classmethod
    async def start(
        cls, connection: asyncssh.SSHClientConnection, *, timeout: float
    ) -> SmallFileChannel | None:
        """Start the ``sftp`` subsystem on a new channel; None without ``posix-rename``."""
        channel, session = await asyncio.wait_for(
            connection.create_session(cls, subsystem="sftp", encoding=None), timeout
        )
        assert isinstance(session, cls)
        session._post(bytes((_FXP_INIT,)) + _U32.pack(3))
        try:
            version = await asyncio.wait_for(session._version, timeout)
        except BaseException:
            channel.close()
            raise
        if not _has_posix_rename(version):
            channel.close()
            return None
        return session

    @property
    def closed(self) -> bool:
        """Whether the channel has gone (a new one is opened for later copies)."""
        return self._lost is not None

    async def put(self, data: bytes, temp: str, destination: str) -> None:
        """Write ``data`` to ``temp`` and rename it to ``destination`` (replacing it)."""
        path = temp.encode()
        open_body = _string(path) + _U32.pack(_OPEN_FOR_WRITING) + _NO_ATTRS
        handle = await self._request(_FXP_OPEN, open_body)
        assert handle is not None
        # Write and close go out together: OpenSSH's sftp-server runs a channel's
        # requests one at a time in the order received, and a server that ran the close
        # first would fail the write (bad handle). The rename waits for both answers,
        # so a file that was not completely written is never renamed.
        written = self._request(_FXP_WRITE, _string(handle) + _U64.pack(0) + _string(data))
        closed = self._request(_FXP_CLOSE, _string(handle))
        for outcome in await asyncio.gather(written, closed, return_exceptions=True):
            if isinstance(outcome, BaseException):
                raise outcome
        await self._request(
            _FXP_EXTENDED, _string(_POSIX_RENAME) + _string(path) + _string(destination.encode())
        )

    async def remove(self, path: str) -> None:
        """Remove ``path`` on the server."""
        await self._request(_FXP_REMOVE, _string(path.encode()))

    def close(self) -> None:
        """Close the channel; requests still waiting fail."""
        if self._channel is not None:
            self._channel.close()

    def _request(self, kind: int, body: bytes) -> asyncio.Future[bytes | None]:
        """Send a request; the future gets its answer."""
        waiter: asyncio.Future[bytes | None] = self._loop.create_future()
        self._waiters[self._send(kind, body)] = waiter
        return waiter

    def _send(self, kind: int, body: bytes) -> int:
        """Send a request whose answer nobody waits for; return its id."""
        if self._lost is not None:
            raise self._lost
        request_id = self._next_id
        self._next_id = (request_id + 1) & 0xFFFFFFFF
        self._post(bytes((kind,)) + _U32.pack(request_id) + body)
        return request_id

    def _post(self, payload: bytes) -> None:
        if not self._outbox:
            self._loop.call_soon(self._flush)
        self._outbox.append(_U32.pack(len(payload)) + payload)

    def _flush(self) -> None:
        data = b"".join(self._outbox)
        self._outbox.clear()
        if self._channel is None or self._lost is not None:
            return
        try:
            self._channel.write(data)
        except (OSError, asyncssh.Error) as exc:
            self._fail(asyncssh.ConnectionLost(f"SFTP channel failed: {exc}"))
            self._channel.close()

    def connection_made(self, chan: asyncssh.SSHClientChannel[bytes]) -> None:
        """Keep the channel the answers come from."""
        self._channel = chan

    def connection_lost(self, exc: Exception | None) -> None:
        """Fail whatever still waits for an answer."""
        self._fail(asyncssh.ConnectionLost(f"SFTP channel closed: {exc or 'by the server'}"))

    def data_received(self, data: bytes, datatype: asyncssh.DataType) -> None:
        """Answer the waiting requests from every complete packet received."""
        inbox = self._inbox
        inbox += data
        start = 0
        while len(inbox) - start >= 4:
            (length,) = _U32.unpack_from(inbox, start)
            end = start + 4 + length
            if end > len(inbox):
                break
            try:
                self._answer(bytes(inbox[start + 4 : end]))
            except (struct.error, IndexError):
                self._fail(asyncssh.ConnectionLost("SFTP server sent a malformed packet"))
                self.close()
                return
            start = end
        del inbox[:start]

    def _answer(self, packet: bytes) -> None:
        kind = packet[0]
        if kind == _FXP_VERSION:
            if not self._version.done():
                self._version.set_result(packet[1:])
            return
        (request_id,) = _U32.unpack_from(packet, 1)
        waiter = self._waiters.pop(request_id, None)
        if waiter is None or waiter.done():
            if kind == _FXP_HANDLE and waiter is not None and self._lost is None:
                # its copy was cancelled while opening: the handle would stay open
                (size,) = _U32.unpack_from(packet, 5)
                self._send(_FXP_CLOSE, _string(packet[9 : 9 + size]))
            return
        if kind == _FXP_HANDLE:
            (size,) = _U32.unpack_from(packet, 5)
            waiter.set_result(packet[9 : 9 + size])
        elif kind == _FXP_STATUS:
            (code,) = _U32.unpack_from(packet, 5)
            if code == 0:
                waiter.set_result(None)
            else:
                (size,) = _U32.unpack_from(packet, 9) if len(packet) >= 13 else (0,)
                reason = packet[13 : 13 + size].decode(errors="replace")
                waiter.set_exception(_status_error(code, reason))
        else:
            waiter.set_exception(asyncssh.SFTPBadMessage(f"unexpected SFTP answer {kind}"))

    def _fail(self, exc: Exception) -> None:
        if self._lost is None:
            self._lost = exc
        waiters: list[asyncio.Future[Any]] = [self._version, *self._waiters.values()]
        self._waiters = {}
        for waiter in waiters:
            if not waiter.done():
                waiter.set_exception(exc)
        if self._version.done() and not self._version.cancelled():
            self._version.exception()  # retrieved: nobody may be waiting for it any more


def _has_posix_rename(version: bytes) -> bool:
    """Whether an SSH_FXP_VERSION body (version, then name/data pairs) offers posix-rename."""
    if len(version) < 4 or _U32.unpack_from(version, 0)[0] < 3:
        return False
    position, names = 4, []
    while position + 4 <= len(version):
        (size,) = _U32.unpack_from(version, position)
        names.append(version[position + 4 : position + 4 + size])
        position += 4 + size
    return _POSIX_RENAME in names[::2]


class _SmallFileSlot:
    """A connection's small-file channel, opened when first needed and after it closed."""

    def __init__(self, connection: asyncssh.SSHClientConnection) -> None:
        self._connection = connection
        self._channel: SmallFileChannel | None = None
        self._lock = asyncio.Lock()
        self._unsupported = False

    async def channel(self, timeout: float) -> SmallFileChannel | None:
        """The open channel; None when the server lacks ``posix-rename``."""
        channel = self._channel
        if (channel is None or channel.closed) and not self._unsupported:
            async with self._lock:
                if (self._channel is None or self._channel.closed) and not self._unsupported:
                    self._channel = await SmallFileChannel.start(self._connection, timeout=timeout)
                    self._unsupported = self._channel is None
            channel = self._channel
        return channel


class Engine(abc.ABC):
    """One way of copying a file; engines are shared by all jobs of a worker."""

    name: ClassVar[str]

    @abc.abstractmethod
    async def copy(self, job: CopyJob) -> None:
        """Copy ``job.source`` to its destination, atomically; raise :class:`CopyFailure`."""


class LocalEngine(Engine):
    """Copies on the executing node itself (``host`` is not contacted)."""

    name = "local"

    async def copy(self, job: CopyJob) -> None:
        """Copy through a temporary file in the destination folder, then rename."""
        try:
            await asyncio.to_thread(self._copy, job)
        except Exception as exc:
            raise classify(exc, job) from None

    @staticmethod
    def _copy(job: CopyJob) -> None:
        folder = os.path.dirname(job.destination) or "."
        if job.create_dirs:
            os.makedirs(folder, exist_ok=True)
        elif not os.path.isdir(folder):
            raise CopyFailure("not_found", f"destination folder does not exist: {folder}")
        temp = job.temp_destination
        try:
            shutil.copyfile(job.source, temp)
            os.replace(temp, job.destination)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temp)
            raise


class _PooledSshEngine(Engine):
    """Shared by the asyncssh engines: pooled connections, atomic rename over SFTP."""

    def __init__(self, pool: SshPool) -> None:
        self.pool = pool

    async def copy(self, job: CopyJob) -> None:
        """Copy over a pooled connection; a broken connection is dropped from the pool."""
        try:
            async with self.pool.lease(job.host, job.port, job.user, job.password) as conn:
                sftp = await conn.sftp()
                folder = posixpath.dirname(job.destination) or "."
                if job.create_dirs:
                    await sftp.makedirs(folder, exist_ok=True)
                temp = job.temp_destination
                try:
                    await self._send(conn.connection, sftp, job, temp)
                    await self._rename(sftp, temp, job.destination)
                except BaseException:
                    await _remove_quietly(sftp, temp)
                    raise
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            raise classify(exc, job) from None

    @abc.abstractmethod
    async def _send(
        self,
        connection: asyncssh.SSHClientConnection,
        sftp: asyncssh.SFTPClient,
        job: CopyJob,
        temp: str,
    ) -> None: ...

    @staticmethod
    async def _rename(sftp: asyncssh.SFTPClient, temp: str, destination: str) -> None:
        try:
            await sftp.posix_rename(temp, destination)  # atomic, replaces the destination
        except asyncssh.SFTPOpUnsupported:  # pragma: no cover - servers without the extension
            if await sftp.exists(destination):
                await sftp.remove(destination)
            await sftp.rename(temp, destination)


async def _remove_quietly(sftp: asyncssh.SFTPClient, path: str) -> None:
    with contextlib.suppress(asyncssh.Error, OSError, asyncio.CancelledError):
        await asyncio.shield(sftp.remove(path))


class SftpEngine(_PooledSshEngine):
    """SFTP with pipelined requests (the default engine).

    A file of at most :data:`SMALL_FILE_BYTES` goes through the connection's
    :class:`SmallFileChannel` (``small_file_channel=False``: asyncssh's SFTP client, as
    for larger files, which go through its ``put``).
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
        self._slots: weakref.WeakKeyDictionary[asyncssh.SSHClientConnection, _SmallFileSlot] = (
            weakref.WeakKeyDictionary()
        )

    async def copy(self, job: CopyJob) -> None:
        """Copy ``job``: a small file through a lean channel, others through ``put``."""
        try:
            data = _read_if_small(job) if self.small_file_channel else None
            if data is not None and await self._put_small(job, data):
                return
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            raise classify(exc, job) from None
        await super().copy(job)

    async def _put_small(self, job: CopyJob, data: bytes) -> bool:
        """Send ``data`` over a small-file channel; False if the server cannot take it."""
        timeout = self.pool.options.connect_timeout
        async with self.pool.lease(job.host, job.port, job.user, job.password) as conn:
            slot = self._slots.get(conn.connection)
            if slot is None:
                slot = self._slots[conn.connection] = _SmallFileSlot(conn.connection)
            channel = await slot.channel(timeout)
            if channel is None:
                return False
            if job.create_dirs:
                sftp = await conn.sftp()
                await sftp.makedirs(posixpath.dirname(job.destination) or ".", exist_ok=True)
            temp = job.temp_destination
            try:
                await channel.put(data, temp, job.destination)
            except BaseException:
                with contextlib.suppress(asyncssh.Error, OSError, asyncio.CancelledError):
                    await asyncio.shield(channel.remove(temp))
                raise
            return True

    async def _send(
        self,
        connection: asyncssh.SSHClientConnection,
        sftp: asyncssh.SFTPClient,
        job: CopyJob,
        temp: str,
    ) -> None:
        # A block above the server's write limit makes OpenSSH drop the session.
        limit = sftp.limits.max_write_len
        block = min(self.block_size, limit) if self.block_size > 0 else -1
        if 0 <= job.size_bytes <= SMALL_FILE_BYTES:
            # One open/write/close: sftp.put() would also stat the target first, and
            # for small files those round trips and asyncssh's per-request cost dominate.
            with open(job.source, "rb") as file:  # noqa: ASYNC230 - at most 64 KiB, measured faster
                data = file.read()
            async with sftp.open(temp, "wb") as remote:
                await remote.write(data)
            return
        await sftp.put(job.source, temp, block_size=block, max_requests=self.max_requests)


def _read_if_small(job: CopyJob) -> bytes | None:
    """The source's bytes if it is at most :data:`SMALL_FILE_BYTES` long, else None."""
    if job.size_bytes > SMALL_FILE_BYTES:
        return None
    # At most 64 KiB from the page cache: measured cheaper than a thread hop.
    with open(job.source, "rb") as file:
        data = file.read(SMALL_FILE_BYTES + 1)
    return data if len(data) <= SMALL_FILE_BYTES else None


class ScpEngine(_PooledSshEngine):
    """asyncssh's SCP client over a pooled connection.

    The SCP protocol starts ``scp -t PATH`` on the server through the user's login
    shell, and asyncssh puts the path in that command as it is: a path with spaces
    would break and one with ``$(...)`` would run. The path is therefore quoted for a
    POSIX shell (and kept from looking like an option), so it is taken literally.
    The default ``sftp`` engine involves no remote shell at all.
    """

    name = "scp"

    async def _send(
        self,
        connection: asyncssh.SSHClientConnection,
        sftp: asyncssh.SFTPClient,
        job: CopyJob,
        temp: str,
    ) -> None:
        target = temp if temp.startswith("/") else "./" + temp
        await asyncssh.scp(job.source, (connection, shlex.quote(target)))


@dataclass(frozen=True, slots=True)
class OpenSshOptions:
    """How the OpenSSH programs are run."""

    known_hosts: str | None = None
    verify_host_keys: bool = True
    identity_files: Sequence[str] = ()
    connect_timeout: float = 10.0
    ciphers: str | None = None


class OpenSshScpEngine(Engine):
    """The OpenSSH ``scp`` program (legacy engine); a password goes through ``sshpass -e``."""

    name = "openssh-scp"

    def __init__(self, options: OpenSshOptions) -> None:
        self.options = options

    def _ssh_options(self, job: CopyJob) -> list[str]:
        opts = self.options
        args = [
            "-o",
            f"ConnectTimeout={max(1, round(opts.connect_timeout))}",
            "-o",
            "LogLevel=ERROR",
        ]
        if opts.verify_host_keys:
            args += ["-o", "StrictHostKeyChecking=yes"]
            if opts.known_hosts:
                args += ["-o", f"UserKnownHostsFile={opts.known_hosts}"]
        else:
            # The explicit per-worker opt-out reproducing Jupiter's original behaviour.
            args += ["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null"]
        if job.password is not None:
            # sshpass tells a wrong password by a second prompt (exit 5), so the prompts
            # keep their default count; BatchMode=no comes before sftp's "-b", which
            # would otherwise turn password prompts off.
            for option in (
                "PreferredAuthentications=password,keyboard-interactive",
                "PubkeyAuthentication=no",
                "IdentitiesOnly=yes",
                "BatchMode=no",
            ):
                args += ["-o", option]
        else:
            args += ["-o", "BatchMode=yes"]
            for identity in opts.identity_files:
                args += ["-i", identity]
        if opts.ciphers:
            args += ["-c", opts.ciphers]
        return args

    @staticmethod
    def _remote(job: CopyJob, path: str) -> str:
        host = f"[{job.host}]" if ":" in job.host else job.host
        return f"{job.user}@{host}:{path}"

    async def _run(self, job: CopyJob, argv: list[str], stdin: bytes | None = None) -> None:
        env = dict(os.environ)
        if job.password is not None:
            env["SSHPASS"] = job.password
            argv = ["sshpass", "-e", *argv]
        try:
            process = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
                env=env,
            )
        except FileNotFoundError:
            raise CopyFailure("invalid", f"{argv[0]} is not installed on this worker") from None
        try:
            _, stderr = await process.communicate(stdin)
        except asyncio.CancelledError:
            if process.returncode is None:
                process.kill()
                await process.wait()
            raise
        if process.returncode != 0:
            raise _openssh_failure(
                job, argv[0], process.returncode or 0, stderr.decode(errors="replace")
            )

    async def copy(self, job: CopyJob) -> None:
        """``scp`` to the temporary name, then ``sftp`` renames it (no remote shell)."""
        ssh_options = self._ssh_options(job)
        temp = job.temp_destination
        batch: list[str] = []
        if job.create_dirs:
            folder = posixpath.dirname(job.destination)
            parts = [p for p in folder.split("/") if p]
            prefix = "/" if folder.startswith("/") else ""
            for i in range(1, len(parts) + 1):
                batch.append("-mkdir " + _sftp_quote(prefix + "/".join(parts[:i])))
        port = ["-P", str(job.port)]
        sftp_argv = ["sftp", "-q", *port, *ssh_options, "-b", "-", self._remote(job, "")[:-1]]
        if batch:
            await self._run(job, sftp_argv, ("\n".join(batch) + "\n").encode())
        # no "-q" for scp: it would also silence ssh's reason for failing
        scp_argv = ["scp", *port, *ssh_options, "--", job.source, self._remote(job, temp)]
        await self._run(job, scp_argv)
        try:
            await self._run(
                job,
                sftp_argv,
                f"rename {_sftp_quote(temp)} {_sftp_quote(job.destination)}\n".encode(),
            )
        except BaseException:
            await asyncio.shield(self._remove_temp(job, sftp_argv, temp))
            raise

    async def _remove_temp(self, job: CopyJob, sftp_argv: list[str], temp: str) -> None:
        with contextlib.suppress(CopyFailure):
            await self._run(job, sftp_argv, f"-rm {_sftp_quote(temp)}\n".encode())


def _sftp_quote(path: str) -> str:
    """Quote a path for an ``sftp -b`` batch line: taken literally, spaces and quotes kept."""
    return '"' + path.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _openssh_failure(job: CopyJob, program: str, code: int, stderr: str) -> CopyFailure:
    text = stderr.strip().splitlines()[-1] if stderr.strip() else f"exit status {code}"
    lowered = stderr.lower()
    if (program == "sshpass" and code == 5) or "permission denied (" in lowered:
        return CopyFailure("auth", f"authentication failed for {job.where}")
    if (program == "sshpass" and code == 6) or "host key verification failed" in lowered:
        return CopyFailure("auth", f"host key of {job.host}:{job.port} is not in known_hosts")
    if (
        "connection refused" in lowered
        or "no route to host" in lowered
        or "could not resolve" in lowered
    ):
        return CopyFailure(
            "unreachable", f"cannot reach {job.host}:{job.port}: {text}", transient=True
        )
    if "timed out" in lowered:
        return CopyFailure("timeout", f"timed out talking to {job.where}", transient=True)
    if (
        "connection reset" in lowered
        or "connection closed" in lowered
        or "lost connection" in lowered
    ):
        return CopyFailure("unreachable", f"connection to {job.where} lost: {text}", transient=True)
    if "no such file" in lowered:
        return CopyFailure("not_found", f"no such file or folder: {text}")
    if "permission denied" in lowered:
        return CopyFailure("permission", f"permission denied: {text}")
    return CopyFailure("remote", f"{program} failed: {text}")


def local_file_size(path: str) -> int:
    """Size of the local source file; raises :class:`CopyFailure` when it is not a readable file."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise CopyFailure("not_found", f"no such file on the executing node: {path}") from None
    except PermissionError:
        raise CopyFailure("permission", f"cannot read {path} on the executing node") from None
    except OSError as exc:
        raise CopyFailure("invalid", f"cannot use {path}: {exc.strerror}") from None
    if not Path(path).is_file():
        raise CopyFailure("invalid", f"not a regular file: {path}")
    return info.st_size
