"""What every copy engine works on: the job, the engine interface and how failures are named.

A :class:`CopyJob` is one file to copy; its :attr:`~CopyJob.temp_destination` is the
name an engine writes to before renaming, derived from the job's idempotency key so a
rerun after a crash reuses (and replaces) what the crashed run left. Engines tell how far
they got through the job's optional :attr:`~CopyJob.progress` callback. :func:`classify`
turns whatever SSH, SFTP or the local file system raised into a :class:`CopyFailure`
with the contract's error kind.
"""

from __future__ import annotations

import abc
import asyncio
import errno
import hashlib
import os
import posixpath
import socket
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import asyncssh

from jupiter_bus.errors import CopyFailure

__all__ = [
    "TEMP_MARK",
    "CopyJob",
    "Engine",
    "Leftovers",
    "classify",
    "local_file_size",
    "refuse_line_breaks",
]

TEMP_MARK = ".jbpart-"
"""Marks a temporary name: ``.<name>.jbpart-<digest of the idempotency key>``."""


@dataclass(frozen=True, slots=True, kw_only=True)
class CopyJob:
    """One file to copy: local ``source`` to ``destination`` on ``user@host:port``.

    ``progress``, when given, is called on the event loop with the bytes copied so far;
    how often depends on the engine (each attempt counts from 0 again). It must be cheap
    and must not raise: the worker rate-limits it, publishes in the background and
    ignores what comes after the job ended (a cancelled local copy's thread goes on).

    Example::

        job = CopyJob(host="10.0.0.12", port=22, user="jupiter", source="/data/a.bin",
                      destination="/srv/in/a.bin", idempotency_key="job-17",
                      progress=lambda done: print(done, "bytes"))
        job.temp_destination  # '/srv/in/.a.bin.jbpart-...'
    """

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
    progress: Callable[[int], None] | None = field(default=None, repr=False, compare=False)
    """Called with the bytes copied so far, on the event loop (``None``: nobody asks)."""

    def report(self, bytes_done: int) -> None:
        """Tell :attr:`progress`, if any, that ``bytes_done`` bytes are copied.

        Example::

            job.report(len(data))  # a small file, sent in one write
        """
        if self.progress is not None:
            self.progress(bytes_done)

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


class Leftovers:
    """Temporary files that failed copies could not remove, by endpoint (host, port, user).

    A copy stopped on a server that had stopped answering (its deadline passed) cannot
    remove its temporary file there. The engine notes it here (:meth:`add`) and removes
    it on its next copy to the same endpoint (:meth:`take`, then :meth:`settle`), once
    that server answers again. A run that starts with a noted name owns it
    (:meth:`claim`, which waits while a removal of that name is under way): it either
    renames it or notes it again. Kept in memory, at most ``limit`` names per endpoint
    (the oldest are forgotten): a worker restarted meanwhile forgets them, and a later
    run of the same job still replaces its own.

    Example::

        leftovers = Leftovers()
        leftovers.add(job, job.temp_destination)   # the removal failed
        paths = leftovers.take(next_job)           # same endpoint: remove them now
        leftovers.settle(next_job, paths, kept=[]) # all gone
    """

    def __init__(self, limit: int = 1000) -> None:
        self._limit = limit
        self._paths: dict[tuple[str, int, str], dict[str, None]] = {}
        self._removing: dict[str, asyncio.Future[None]] = {}

    @staticmethod
    def _endpoint(job: CopyJob) -> tuple[str, int, str]:
        return (job.host, job.port, job.user)

    def add(self, job: CopyJob, path: str) -> None:
        """Note ``path`` on ``job``'s endpoint as left behind."""
        paths = self._paths.setdefault(self._endpoint(job), {})
        paths[path] = None
        while len(paths) > self._limit:
            del paths[next(iter(paths))]

    async def claim(self, job: CopyJob, path: str) -> None:
        """``job`` writes ``path`` now: once a removal of it under way has ended, it is
        no leftover for others to remove."""
        removing = self._removing.get(path)
        if removing is not None:
            await asyncio.shield(removing)
        paths = self._paths.get(self._endpoint(job))
        if paths is not None:
            paths.pop(path, None)
            if not paths:
                del self._paths[self._endpoint(job)]

    def take(self, job: CopyJob) -> list[str]:
        """The names left behind on ``job``'s endpoint, to remove now: forgotten here and
        marked as being removed until :meth:`settle` (a :meth:`claim` of one waits)."""
        paths = list(self._paths.pop(self._endpoint(job), {}))
        loop = asyncio.get_running_loop()
        for path in paths:
            self._removing[path] = loop.create_future()
        return paths

    def settle(self, job: CopyJob, paths: Sequence[str], *, kept: Iterable[str]) -> None:
        """The removal of ``paths`` (from :meth:`take`) is over; those ``kept`` are still
        there, and noted again."""
        for path in kept:
            self.add(job, path)
        for path in paths:
            removing = self._removing.pop(path, None)
            if removing is not None and not removing.done():
                removing.set_result(None)

    def __len__(self) -> int:
        return sum(len(paths) for paths in self._paths.values())


class Engine(abc.ABC):
    """One way of copying a file; engines are shared by all jobs of a worker.

    Example::

        engine: Engine = LocalEngine()
        await engine.copy(job)  # raises CopyFailure when the copy fails
    """

    name: ClassVar[str]

    @abc.abstractmethod
    async def copy(self, job: CopyJob) -> None:
        """Copy ``job.source`` to its destination, atomically; raise :class:`CopyFailure`."""


def classify(exc: BaseException, job: CopyJob) -> CopyFailure:
    """Map an exception from SSH, SFTP or the local file system to a :class:`CopyFailure`.

    Example::

        try:
            await sftp.put(job.source, temp)
        except Exception as exc:
            raise classify(exc, job) from None
    """
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


def refuse_line_breaks(job: CopyJob, engine: str) -> None:
    """Refuse (``invalid``) a source or destination with a line break, for line-based protocols.

    The SCP protocol sends the file name in a line of its own, and an ``sftp -b``
    batch is one command per line: a newline in a path would desynchronise the one
    (the copy then hangs) and start a new command in the other. The ``sftp`` and
    ``local`` engines take such names literally.

    Example::

        refuse_line_breaks(job, "scp")  # before connecting
    """
    for what, path in (("source", job.source), ("destination", job.destination)):
        if "\n" in path or "\r" in path:
            raise CopyFailure(
                "invalid",
                f"the {engine} engine cannot carry a line break in the {what} path; "
                "use the sftp engine for such names",
            )


def local_file_size(path: str) -> int:
    """Size of the local source file; raises :class:`CopyFailure` when it is not a readable file.

    Example::

        size = local_file_size("/data/a.bin")  # before building the CopyJob
    """
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
