"""Copy engines: how a transfer worker moves one file to ``user@host:destination``.

Every engine writes to a temporary name in the destination folder and renames it
when the copy is complete, so a partial file never appears under the final name.
The temporary name is derived from the job's idempotency key: a job that is run
again after a crash overwrites what the crashed run left, and a failed copy removes
its temporary file.

Engines (selected by the request's ``engine`` field):

- ``sftp`` (default): asyncssh SFTP over a pooled connection, pipelined requests;
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
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import asyncssh

from jupiter_bus.messages import ErrorKind

from .ssh_pool import SshPool

TEMP_MARK = ".jbpart-"
SMALL_FILE_BYTES = 64 * 1024
"""Files up to this size are sent with a single SFTP write."""


class CopyFailure(Exception):
    """A copy failed; ``kind`` is the contract's error kind, ``transient`` allows a retry."""

    def __init__(self, kind: ErrorKind, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.kind: ErrorKind = kind
        self.message = message
        self.transient = transient


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
    """asyncssh SFTP with pipelined requests (the default engine)."""

    name = "sftp"

    def __init__(self, pool: SshPool, *, block_size: int = -1, max_requests: int = -1) -> None:
        super().__init__(pool)
        self.block_size = block_size
        self.max_requests = max_requests

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
