"""A pool of asyncssh client connections, reused per (host, port, user, credential).

- A request that carries a password logs in with that password only: its
  connection offers no keys and no agent, and it is pooled under a key derived from
  that password, so neither a login made with other credentials nor the worker's
  keys can stand in for it.
- A request without a password uses the worker's keys (or agent).
- Host keys are verified against known_hosts unless the worker opts out.
- Connections are closed after ``idle_seconds`` unused; a broken one is dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import time
from collections.abc import AsyncIterator, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import asyncssh

from jupiter_bus.errors import CopyFailure

__all__ = [
    "CANCEL_GRACE_SECONDS",
    "FAST_CIPHERS",
    "PooledConnection",
    "SshOptions",
    "SshPool",
]

log = logging.getLogger(__name__)

_T = TypeVar("_T")

CANCEL_GRACE_SECONDS = 2.0
"""How long cancelled work on a connection may take to stop before the connection is aborted."""

FAST_CIPHERS = (
    "aes128-gcm@openssh.com",
    "aes256-gcm@openssh.com",
    "chacha20-poly1305@openssh.com",
    "aes128-ctr",
    "aes256-ctr",
)
"""Preferred ciphers, fastest first on hardware with AES instructions."""


@dataclass(frozen=True, slots=True)
class SshOptions:
    """How a worker connects: host-key policy, its own keys, timeouts, ciphers.

    ``known_hosts`` is a file (``None``: ``~/.ssh/known_hosts``); ``verify_host_keys``
    False is the explicit opt-out reproducing Jupiter's ``StrictHostKeyChecking=no``.
    ``client_keys`` are the worker's private key files (``None``: asyncssh's defaults
    and the SSH agent).
    """

    known_hosts: str | None = None
    verify_host_keys: bool = True
    client_keys: Sequence[str] | None = None
    connect_timeout: float = 10.0
    idle_seconds: float = 60.0
    ciphers: Sequence[str] = FAST_CIPHERS
    keepalive_seconds: float = 30.0


@dataclass(slots=True)
class PooledConnection:
    """A pooled connection and its lazily opened, shared SFTP client."""

    connection: asyncssh.SSHClientConnection
    key: tuple[str, int, str, str]
    in_use: int = 0
    retired: bool = False
    """Taken out of the pool: closed when its last job lets go of it."""
    last_used: float = field(default_factory=time.monotonic)
    _sftp: asyncssh.SFTPClient | None = None
    _sftp_lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def sftp(self) -> asyncssh.SFTPClient:
        """The connection's SFTP client (one per connection, shared by concurrent jobs)."""
        if self._sftp is None:
            async with self._sftp_lock:
                if self._sftp is None:
                    self._sftp = await self.connection.start_sftp_client()
        return self._sftp

    async def run(self, work: Coroutine[Any, Any, _T]) -> _T:
        """Await ``work`` on this connection, so that cancelling it always stops it.

        asyncssh's own clean-up on cancellation (closing a remote file, for one) waits
        for answers that a peer which stopped talking never sends, which kept a copy
        running past its deadline. Cancelled work that has not stopped within
        :data:`CANCEL_GRACE_SECONDS` has its connection aborted, which fails every wait.
        """
        task = asyncio.ensure_future(work)
        task.add_done_callback(_retrieve)
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            task.cancel()
            _, pending = await asyncio.wait({task}, timeout=CANCEL_GRACE_SECONDS)
            if pending:
                log.warning(
                    "ssh connection to %s stuck after a cancelled copy: aborted", self.key[:3]
                )
                self.connection.abort()
                await asyncio.wait({task}, timeout=CANCEL_GRACE_SECONDS)
            raise

    @property
    def broken(self) -> bool:
        """Whether the transport under this connection has gone."""
        return self.connection.is_closed()


def _retrieve(task: asyncio.Future[Any]) -> None:
    """Mark the outcome of work whose canceller stopped waiting as seen (no loop warning)."""
    if not task.cancelled():
        task.exception()


class SshPool:
    """Connections shared by the jobs of one transfer worker.

    Example::

        pool = SshPool(SshOptions(known_hosts="/etc/jupiter/known_hosts"))
        async with pool.lease("10.0.0.12", 22, "jupiter", None) as conn:
            sftp = await conn.sftp()
    """

    def __init__(self, options: SshOptions | None = None) -> None:
        self.options = options or SshOptions()
        self._salt = os.urandom(16)
        self._idle: dict[tuple[str, int, str, str], PooledConnection] = {}
        self._connecting: dict[tuple[str, int, str, str], asyncio.Task[PooledConnection]] = {}
        self._reaper: asyncio.Task[None] | None = None
        self.connects = 0
        """How many SSH connections this pool has opened (for tests and benchmarks)."""

    def _key(
        self, host: str, port: int, user: str, password: str | None
    ) -> tuple[str, int, str, str]:
        if password is None:
            credential = "keys"
        else:
            credential = "pw:" + hashlib.sha256(self._salt + password.encode()).hexdigest()
        return (host, port, user, credential)

    @contextlib.asynccontextmanager
    async def lease(
        self, host: str, port: int, user: str, password: str | None
    ) -> AsyncIterator[PooledConnection]:
        """Borrow a connection for one job; a connection that broke meanwhile is dropped."""
        key = self._key(host, port, user, password)
        pooled = self._idle.get(key)
        if pooled is None or pooled.broken:
            if pooled is not None:
                self._drop(pooled)
            pooled = await self._connect(key, password)
        pooled.in_use += 1
        try:
            yield pooled
        except BaseException as exc:
            # A copy stopped by its deadline (or cancelled) may have left the connection
            # stuck, e.g. on a peer that stopped answering: no later job may lease it.
            if pooled.broken or isinstance(exc, asyncio.CancelledError | TimeoutError):
                self._retire(pooled)
            raise
        finally:
            pooled.in_use -= 1
            pooled.last_used = time.monotonic()
            if pooled.retired and pooled.in_use == 0:
                pooled.connection.close()

    async def _connect(
        self, key: tuple[str, int, str, str], password: str | None
    ) -> PooledConnection:
        task = self._connecting.get(key)
        if task is None:
            task = asyncio.create_task(self._open(key, password))
            self._connecting[key] = task
            task.add_done_callback(lambda _: self._connecting.pop(key, None))
        return await asyncio.shield(task)

    async def _open(self, key: tuple[str, int, str, str], password: str | None) -> PooledConnection:
        host, port, user, _ = key
        opts = self.options
        kwargs: dict[str, object] = {
            "username": user,
            "encryption_algs": list(opts.ciphers),
            "connect_timeout": opts.connect_timeout,
            "keepalive_interval": opts.keepalive_seconds,
            "config": [],
        }
        if not opts.verify_host_keys:
            kwargs["known_hosts"] = None  # the worker's explicit opt-out
        elif opts.known_hosts is not None:
            kwargs["known_hosts"] = opts.known_hosts
        # else: asyncssh's default, ~/.ssh/known_hosts
        if password is not None:
            kwargs.update(
                password=password,
                client_keys=None,
                agent_path=None,
                preferred_auth="password,keyboard-interactive",
            )
        else:
            kwargs.update(password=None, preferred_auth="publickey")
            if opts.client_keys is not None:
                kwargs.update(client_keys=list(opts.client_keys), agent_path=None)
        try:
            connection = await asyncssh.connect(host, port, **kwargs)
        except TimeoutError:
            # docs/messages.md: a peer that does not answer in time is `unreachable`;
            # `timeout` is the job's own deadline.
            raise CopyFailure(
                "unreachable",
                f"no SSH answer from {host}:{port} within {opts.connect_timeout:g} s",
                transient=True,
            ) from None
        self.connects += 1
        log.debug("ssh connection opened to %s@%s:%s", user, host, port)
        pooled = PooledConnection(connection, key)
        self._idle[key] = pooled
        self._start_reaper()
        return pooled

    def _drop(self, pooled: PooledConnection) -> None:
        if self._idle.get(pooled.key) is pooled:
            del self._idle[pooled.key]
        pooled.connection.close()

    def _retire(self, pooled: PooledConnection) -> None:
        """Lease ``pooled`` no more; it closes when its last job lets go of it."""
        if self._idle.get(pooled.key) is pooled:
            del self._idle[pooled.key]
        pooled.retired = True

    def _start_reaper(self) -> None:
        if self._reaper is None or self._reaper.done():
            self._reaper = asyncio.create_task(self._reap())

    async def _reap(self) -> None:
        interval = max(0.05, self.options.idle_seconds / 2)
        while self._idle:
            await asyncio.sleep(interval)
            now = time.monotonic()
            for pooled in list(self._idle.values()):
                if pooled.broken or (
                    pooled.in_use == 0 and now - pooled.last_used > self.options.idle_seconds
                ):
                    log.debug("closing idle ssh connection to %s", pooled.key[:3])
                    self._drop(pooled)

    @property
    def open_connections(self) -> int:
        """How many connections the pool holds now."""
        return len(self._idle)

    async def close(self) -> None:
        """Close every connection and stop the idle reaper."""
        if self._reaper is not None:
            self._reaper.cancel()
            await asyncio.gather(self._reaper, return_exceptions=True)
        for task in list(self._connecting.values()):
            task.cancel()
        await asyncio.gather(*self._connecting.values(), return_exceptions=True)
        connections = [p.connection for p in self._idle.values()]
        self._idle.clear()
        for connection in connections:
            connection.close()
        for connection in connections:
            with contextlib.suppress(Exception):
                await connection.wait_closed()
