"""The demo's peers: real SSH servers (asyncssh, SFTP only) on loopback, with shaped links.

Each demo node gets an SFTP server on ``127.0.0.1`` with its own host key, rooted in the
node's folder. The other nodes log in to it by public key **as their own node name**, so
the server knows which link a byte travels on: writes from user ``node1`` to node
``node2``'s server are held to the ``node1 -> node2`` rate by a token bucket, and each
file opened for writing waits that link's latency first. Real bytes move over real SSH;
the profiler's fits therefore come out different per link, as on a real network.

Nothing here is for production: it serves SFTP only (no shell, no port forwarding) and
accepts only the keys it generated.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import asyncssh

__all__ = [
    "BURST_BYTES",
    "DemoKeys",
    "DemoServer",
    "LinkShape",
    "RateLimiter",
    "link_shapes",
    "serve_nodes",
]

BURST_BYTES: Final = 8 * 1024
"""Bytes a shaped link may send at once before its rate applies (the bucket's depth)."""

LOCAL_HOST: Final = "127.0.0.1"


@dataclass(frozen=True, slots=True)
class LinkShape:
    """What one ordered link ``src -> dst`` is made to look like."""

    mbit_per_s: float
    latency_ms: float

    @property
    def bytes_per_s(self) -> float:
        """The rate in bytes per second."""
        return self.mbit_per_s * 1e6 / 8


def link_shapes(
    nodes: Sequence[str],
    *,
    mbit_range: tuple[float, float] = (8.0, 64.0),
    latency_range: tuple[float, float] = (5.0, 40.0),
    seed: int = 1,
) -> dict[tuple[str, str], LinkShape]:
    """A rate and a latency for every ordered pair of distinct nodes, reproducible by seed.

    Example::

        >>> shapes = link_shapes(["n1", "n2"])
        >>> sorted(shapes)
        [('n1', 'n2'), ('n2', 'n1')]
        >>> 8.0 <= shapes["n1", "n2"].mbit_per_s <= 64.0
        True
    """
    rng = random.Random(seed)
    shapes = {}
    for src in nodes:
        for dst in nodes:
            if src != dst:
                shapes[src, dst] = LinkShape(
                    mbit_per_s=round(rng.uniform(*mbit_range), 1),
                    latency_ms=round(rng.uniform(*latency_range), 1),
                )
    return shapes


class RateLimiter:
    """A token bucket: :meth:`take` waits until ``n`` bytes fit in the link's rate.

    Concurrent writers share the rate: each reserves its bytes at once and sleeps off
    the debt, so the bucket never lets more than ``burst`` bytes ahead of the rate.

    Example::

        limiter = RateLimiter(1_000_000)       # 1 MB/s
        await limiter.take(len(data))          # returns when the data may go
    """

    def __init__(self, bytes_per_s: float, burst: int = BURST_BYTES) -> None:
        if bytes_per_s <= 0:
            raise ValueError(f"bytes_per_s: expected a positive rate, got {bytes_per_s}")
        self.rate = float(bytes_per_s)
        self.burst = float(burst)
        self._tokens = float(burst)
        self._at = time.monotonic()

    async def take(self, n: int) -> None:
        """Wait until ``n`` more bytes are within the rate."""
        now = time.monotonic()
        self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
        self._at = now
        self._tokens -= n
        if self._tokens < 0:
            await asyncio.sleep(-self._tokens / self.rate)


@dataclass(frozen=True, slots=True)
class DemoKeys:
    """Host and client keys of the demo's nodes, and the ``known_hosts`` file for them.

    ``client_key(node)`` is the private key node ``node`` logs in with (as user
    ``node``); ``host_key(node)`` is its server's key. Create them with :meth:`create`.
    """

    folder: Path

    @classmethod
    def create(cls, folder: Path, nodes: Iterable[str]) -> DemoKeys:
        """Generate ed25519 host and client keys for ``nodes`` under ``folder`` (mode 0700)."""
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        keys = cls(folder)
        for node in nodes:
            for path in (keys.host_key(node), keys.client_key(node)):
                asyncssh.generate_private_key("ssh-ed25519").write_private_key(path)
                path.chmod(0o600)
        return keys

    def host_key(self, node: str) -> Path:
        """Private host key of ``node``'s server."""
        return self.folder / f"{node}-host"

    def client_key(self, node: str) -> Path:
        """Private key ``node`` logs in to the other servers with."""
        return self.folder / f"{node}-client"

    @property
    def known_hosts(self) -> Path:
        """``known_hosts`` naming every running server (written by :func:`serve_nodes`)."""
        return self.folder / "known_hosts"

    def public_line(self, private: Path) -> str:
        """The OpenSSH public-key line of ``private``."""
        key = asyncssh.read_private_key(private)
        return key.export_public_key("openssh").decode().strip()


@dataclass(frozen=True, slots=True)
class DemoServer:
    """One node's running SFTP server: where it listens and the folder it serves."""

    node: str
    port: int
    root: Path


class _ShapedSftp(asyncssh.SFTPServer):
    """SFTP rooted in the node's folder; writes held to the logged-in node's link."""

    def __init__(
        self,
        chan: asyncssh.SSHServerChannel[bytes],
        root: Path,
        limiter: RateLimiter,
        latency_s: float,
    ) -> None:
        super().__init__(chan, chroot=str(root).encode())
        self._limiter = limiter
        self._latency_s = latency_s

    async def open(self, path: bytes, pflags: int, attrs: asyncssh.SFTPAttrs) -> object:
        """Open a file; one written to waits the link's latency first."""
        if pflags & asyncssh.FXF_WRITE:
            await asyncio.sleep(self._latency_s)
        return super().open(path, pflags, attrs)

    async def write(self, file_obj: object, offset: int, data: bytes) -> int:
        """Write once the link's rate allows it."""
        await self._limiter.take(len(data))
        return super().write(file_obj, offset, data)  # type: ignore[return-value]


class _NodeLogins(asyncssh.SSHServer):
    """Public-key logins only, user name = the node logging in, with that node's key."""

    def __init__(self, authorized: Mapping[str, str]) -> None:
        self._authorized = authorized
        self._conn: asyncssh.SSHServerConnection | None = None

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self._conn = conn

    def begin_auth(self, username: str) -> bool:
        line = self._authorized.get(username)
        if line is not None and self._conn is not None:
            self._conn.set_authorized_keys(asyncssh.import_authorized_keys(line))
        return True

    def password_auth_supported(self) -> bool:
        return False


def _shaped_factory(
    root: Path,
    limiters: Mapping[str, RateLimiter],
    latencies: Mapping[str, float],
) -> Any:
    def factory(chan: asyncssh.SSHServerChannel[bytes]) -> asyncssh.SFTPServer:
        user = chan.get_extra_info("username")
        return _ShapedSftp(chan, root, limiters[user], latencies[user])

    return factory


@contextlib.asynccontextmanager
async def serve_nodes(
    keys: DemoKeys,
    roots: Mapping[str, Path],
    shapes: Mapping[tuple[str, str], LinkShape],
) -> AsyncIterator[dict[str, DemoServer]]:
    """Run an SFTP server per node of ``roots`` on loopback until the block ends.

    ``shapes[src, dst]`` shapes what ``src`` writes to ``dst``'s server; a pair without
    a shape may not log in. On entry :attr:`DemoKeys.known_hosts` names every server.

    Example::

        keys = DemoKeys.create(tmp / "keys", ["n1", "n2"])
        async with serve_nodes(keys, {"n1": tmp / "n1", "n2": tmp / "n2"},
                               link_shapes(["n1", "n2"])) as servers:
            servers["n2"].port   # n1 logs in there as user "n1" with keys.client_key("n1")
    """
    servers: dict[str, DemoServer] = {}
    listeners: list[asyncssh.SSHAcceptor] = []
    known: list[str] = []
    try:
        for node, root in roots.items():
            root.mkdir(parents=True, exist_ok=True)
            senders = [src for (src, dst) in shapes if dst == node]
            authorized = {src: keys.public_line(keys.client_key(src)) for src in senders}
            limiters = {src: RateLimiter(shapes[src, node].bytes_per_s) for src in senders}
            latencies = {src: shapes[src, node].latency_ms / 1000 for src in senders}
            listener = await asyncssh.listen(
                LOCAL_HOST,
                0,
                server_host_keys=[str(keys.host_key(node))],
                server_factory=lambda authorized=authorized: _NodeLogins(authorized),
                sftp_factory=_shaped_factory(root, limiters, latencies),
                allow_scp=False,
                x509_trusted_certs=None,
            )
            listeners.append(listener)
            port = listener.get_port()
            servers[node] = DemoServer(node, port, root)
            known.append(f"[{LOCAL_HOST}]:{port} {keys.public_line(keys.host_key(node))}")
        keys.known_hosts.write_text("\n".join(known) + "\n")
        yield servers
    finally:
        for listener in listeners:
            listener.close()
        for listener in listeners:
            await listener.wait_closed()
