"""The lab: namespaces A and B on a shaped link, B's ``sshd``, the broker as A sees it."""

from __future__ import annotations

import contextlib
import re
import shutil
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from harness.children import run_program
from harness.errors import BenchError

from profiler_parts.settings import SHAPED
from tests.netns import StarNetwork, star_network, tcp_counters
from tests.proxy import TcpProxy
from tests.sshd import SshServer, start_sshd


@dataclass(frozen=True, slots=True)
class Lab:
    """Namespaces A and B, B's sshd, the broker as A sees it, and the run's folders."""

    net: StarNetwork
    server: SshServer
    broker: str
    workdir: Path
    node: str
    peer: str

    @property
    def hub(self) -> str:
        return self.net.hub.name


def broker_seen_from_a(url: str, proxy: TcpProxy, root_addr: str) -> str:
    scheme, rest = url.split("://", 1)
    credentials, at, hostpart = rest.rpartition("@")
    path = hostpart.partition("/")[2]
    return f"{scheme}://{credentials}{at}{root_addr}:{proxy.port}/{path}"


def make_workdir() -> Path:
    """A private folder for the run; o+x, as the sshd user's home lives under it."""
    workdir = Path(tempfile.mkdtemp(prefix="jupiter-profiler-bench-"))
    workdir.chmod(0o711)
    (workdir / "b").mkdir(mode=0o711)
    return workdir


@contextlib.asynccontextmanager
async def open_lab(url: str, run_id: str) -> AsyncIterator[Lab]:
    """The namespaces, B's sshd and the proxy; all removed on exit, also on failure."""
    workdir = make_workdir()
    try:
        with (
            star_network(["b"], shaped={"b": SHAPED}) as net,
            start_sshd(
                workdir / "b", netns=net.peers["b"].name, host=net.links["b"].peer_addr
            ) as server,
        ):
            host, _, port = url.split("@")[-1].split("/")[0].partition(":")
            proxy = TcpProxy(host, int(port or 5672), listen_host=net.hub.root_addr)
            await proxy.start()
            try:
                broker = broker_seen_from_a(url, proxy, net.hub.root_addr)
                yield Lab(net, server, broker, workdir, f"pb{run_id}a", f"pb{run_id}b")
            finally:
                await proxy.close()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


async def sent_bytes(namespace: str, device: str) -> int:
    """Bytes the qdisc of ``device`` in ``namespace`` has sent: A->B on the wire."""
    argv = ("tc", "-s", "-n", namespace, "qdisc", "show", "dev", device)
    out = await run_program(argv, timeout_s=10.0, keep_stdout=True)
    match = re.search(rb"Sent (\d+) bytes", out)
    if match is None:
        raise BenchError(f"tc -s qdisc show in {namespace}: no byte count in {out[:200]!r}")
    return int(match.group(1))


@dataclass(slots=True)
class WireWatch:
    """A->B bytes on the wire and A's TCP retransmissions over one phase."""

    lab: Lab
    wire_bytes: int = 0
    retransmits: int = 0
    timeouts: int = 0
    _start: tuple[int, dict[str, int]] | None = None

    async def __aenter__(self) -> WireWatch:
        self._start = (await sent_bytes(self.lab.hub, "to-b"), tcp_counters(self.lab.hub))
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._start is not None
        wire, counters = self._start
        now = tcp_counters(self.lab.hub)
        self.wire_bytes = await sent_bytes(self.lab.hub, "to-b") - wire
        self.retransmits = now["RetransSegs"] - counters["RetransSegs"]
        self.timeouts = now["TCPTimeouts"] - counters["TCPTimeouts"]

    def __str__(self) -> str:
        return (
            f"{self.wire_bytes:,} B A->B on the wire (tc), {self.retransmits} TCP segments "
            f"retransmitted, {self.timeouts} retransmission timeouts"
        )
