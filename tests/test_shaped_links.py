"""The published link cost predicts real transfers, on links shaped with ``tc tbf``.

Three network namespaces: A runs a real agent process (transfer worker and network
profiler), B and C an sshd each. A reaches B over a veth link shaped to 8 Mbit/s (tbf on
both ends) and C over an unshaped one. RabbitMQ listens on loopback only, so the agent
reaches it through a TCP proxy on the root end of A's uplink (the broker sees a loopback
client). The profiler probes both links until each fit has several samples per probe
size; then the agent is restarted with its transfer worker alone (no probe may share the
link with a measured transfer) and real transfers of sizes inside the probed range are
timed by the worker, as the fit's samples were.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import statistics
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

from jupiter_bus.costmodel import kbit
from jupiter_bus.messages import LinkCost, TransferResult, decode
from jupiter_bus.topology import TRANSFERS_EXCHANGE, network_key, work_queue
from jupiter_bus.transport import Envelope, Transport, connect

from .conftest import AMQP_URL
from .netns import StarNetwork, Tbf, netns_unavailable_reason, star_network, tcp_counters
from .proxy import TcpProxy
from .sshd import SshServer, sshd_unavailable_reason, start_sshd
from .test_transfer_worker import request_body

pytestmark = [pytest.mark.amqp, pytest.mark.netns]

SHAPED = Tbf(rate="8mbit", burst="8kb", latency="50ms")
PROBE_SIZES_KB = (64, 512, 2048)
# several per size: the first probe of a link also pays for opening its SSH connection
SAMPLES_PER_SIZE = 4
CHECK_SIZES_KB = (128, 512, 2048)
WARM_UP_KB = PROBE_SIZES_KB[0]
REPEATS = 3
TOLERANCE = 0.10  # |predicted - median measured| <= 10% of measured (DESIGN.md section 5)
CHEAPER = 3.0  # the unshaped link costs at least this many times less at the largest size
FITS_TIMEOUT_S = 40.0
TRANSFER_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 15.0


@dataclass(frozen=True, slots=True)
class Lab:
    """The namespaces, the sshd of each peer and the broker URL as seen from A."""

    net: StarNetwork
    servers: dict[str, SshServer]
    broker: str


@contextlib.contextmanager
def peer_servers(net: StarNetwork) -> Iterator[dict[str, SshServer]]:
    """An sshd in each peer namespace, on the peer's end of its link to A."""
    # Not tmp_path: pytest's base temp is 0700, and the test users must reach their homes.
    workdir = Path(tempfile.mkdtemp(prefix="jupiter-shaped-"))
    try:
        workdir.chmod(0o711)
        with contextlib.ExitStack() as stack:
            servers = {}
            for label, peer in net.peers.items():
                folder = workdir / label
                folder.mkdir(mode=0o711)
                host = net.links[label].peer_addr
                servers[label] = stack.enter_context(start_sshd(folder, netns=peer.name, host=host))
            yield servers
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
async def lab() -> AsyncIterator[Lab]:
    for reason in (netns_unavailable_reason(), sshd_unavailable_reason()):
        if reason is not None:
            print(f"skipping the shaped-link test: {reason}")
            pytest.skip(reason)
    with (
        star_network(["b", "c"], shaped={"b": SHAPED}) as net,
        peer_servers(net) as servers,
    ):
        amqp = urlsplit(AMQP_URL)
        proxy = TcpProxy(
            amqp.hostname or "127.0.0.1", amqp.port or 5672, listen_host=net.hub.root_addr
        )
        await proxy.start()
        credentials, at, _ = amqp.netloc.rpartition("@")
        netloc = f"{credentials}{at}{net.hub.root_addr}:{proxy.port}"
        try:
            yield Lab(net, servers, urlunsplit(amqp._replace(netloc=netloc)))
        finally:
            await proxy.close()


def agent_config(lab: Lab, node: str, peers: dict[str, str], state: Path) -> str:
    """The TOML of A's agent: a transfer worker, and a profiler probing both peers.

    Also writes the known_hosts file it names (both sshds' host keys).
    """
    known_hosts = state / "known_hosts"
    known_hosts.write_text("".join(s.host_key_line + "\n" for s in lab.servers.values()))
    keys = ", ".join(f'"{s.client_key}"' for s in lab.servers.values())
    peer_tables = ", ".join(
        f'{{node = "{peers[label]}", host = "{server.host}", port = {server.port}, '
        f'user = "{server.user}"}}'
        for label, server in lab.servers.items()
    )
    return (
        f'node = "{node}"\n'
        f'broker = "{lab.broker}"\n'
        "grace = 10\n"
        "[providers.transfer]\n"
        'engine = "sftp"\n'
        "concurrency = 1\n"
        f'known_hosts = "{known_hosts}"\n'
        f"client_keys = [{keys}]\n"
        f'state_dir = "{state / "transfer"}"\n'
        "[providers.network]\n"
        'engine = "sftp"\n'
        f"probe_sizes_kb = {list(PROBE_SIZES_KB)}\n"
        "interval = 0.2\n"
        "jitter = 0.1\n"
        "fresh_seconds = 0.01\n"  # every round probes every size
        f"max_probes_per_round = {len(PROBE_SIZES_KB) * len(peers)}\n"
        "refresh_seconds = 0.0\n"  # publish every round
        'probe_dir = "probes"\n'  # in each peer user's home
        f'state_dir = "{state / "network"}"\n'
        f"peers = [{peer_tables}]\n"
    )


@contextlib.asynccontextmanager
async def agent_in(lab: Lab, config: Path, log: Path, *args: str) -> AsyncIterator[None]:
    """Run ``jupiter-bus agent --config config`` in namespace A; SIGTERM it on exit."""
    command = ("ip", "netns", "exec", lab.net.hub.name, sys.executable, "-m", "jupiter_bus.cli")
    with log.open("ab") as output:
        process = await asyncio.create_subprocess_exec(
            *command,
            *("agent", "--config", str(config), *args),
            stdout=output,
            stderr=asyncio.subprocess.STDOUT,
        )
    try:
        yield
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)  # `ip netns exec` became the agent itself
            try:
                await asyncio.wait_for(process.wait(), STOP_TIMEOUT_S)
            except TimeoutError:
                process.kill()
                await process.wait()


async def wait_for_fits(feed: AsyncIterator[Envelope], want: set[str]) -> dict[str, LinkCost]:
    """The first fit of each link in ``want`` with enough samples of every probe size."""
    fits: dict[str, LinkCost] = {}
    async with asyncio.timeout(FITS_TIMEOUT_S):
        while set(fits) != want:
            cost = decode((await anext(feed)).body, LinkCost)
            if cost.samples >= SAMPLES_PER_SIZE * len(PROBE_SIZES_KB):
                fits.setdefault(cost.dst, cost)
    return fits


@pytest.fixture
async def observer(unique: str) -> AsyncIterator[Transport]:
    """The test's own connection to the broker, in the root namespace."""
    transport = await connect(AMQP_URL, connection_name="shaped-links observer")
    yield transport
    with contextlib.suppress(Exception):
        await transport.delete_queue(work_queue(f"sl-{unique}-a"))
    await transport.close()


@dataclass(slots=True)
class Run:
    """One run of the test: A's node name, its peers' names and config, and the results."""

    lab: Lab
    observer: Transport
    node: str
    peers: dict[str, str]
    config: Path
    log: Path
    measured: dict[str, dict[int, list[float]]] = field(default_factory=dict)
    warm_ms: dict[str, float] = field(default_factory=dict)
    tcp: dict[str, str] = field(default_factory=dict)
    """What A's TCP went through in each phase: losses and timeouts explain slow outliers."""

    @contextlib.contextmanager
    def tcp_watched(self, phase: str) -> Iterator[None]:
        before = tcp_counters(self.lab.net.hub.name)
        try:
            yield
        finally:
            after = tcp_counters(self.lab.net.hub.name)
            delta = {key: after[key] - before[key] for key in ("RetransSegs", "TCPTimeouts")}
            self.tcp[phase] = (
                f"{delta['RetransSegs']} segments retransmitted, "
                f"{delta['TCPTimeouts']} retransmission timeouts"
            )

    async def profile(self) -> dict[str, LinkCost]:
        """Run the profiler until each link has a fit from enough probes; then stop it."""
        keys = [network_key(self.node, peer) for peer in self.peers.values()]
        async with (
            self.observer.subscribe(keys) as feed,
            agent_in(self.lab, self.config, self.log),
        ):
            with self.tcp_watched("probing"):
                try:
                    fits = await wait_for_fits(feed, set(self.peers.values()))
                except TimeoutError:
                    pytest.fail(
                        f"no fits in {FITS_TIMEOUT_S} s; agent log:\n{self.log.read_text()}"
                    )
        return {label: fits[peer] for label, peer in self.peers.items()}

    async def measure(self, sources: dict[int, Path]) -> None:
        """Time real transfers to each peer, sizes interleaved, with only the worker running."""
        async with agent_in(self.lab, self.config, self.log, "--providers", "transfer"):
            with self.tcp_watched("measuring"):
                for label, server in self.lab.servers.items():  # opens the pooled connection
                    warm = await self.transfer(server, sources[WARM_UP_KB], "warm.bin")
                    self.warm_ms[label] = warm
                for _ in range(REPEATS):
                    for kb in CHECK_SIZES_KB:
                        for label, server in self.lab.servers.items():
                            ms = await self.transfer(server, sources[kb], f"{kb}.bin")
                            self.measured.setdefault(label, {}).setdefault(kb, []).append(ms)

    async def transfer(self, server: SshServer, source: Path, name: str) -> float:
        """Send ``source`` through A's worker; the worker's own time for it, in milliseconds."""
        destination = str(server.home / "measured" / name)
        body = request_body(server, source, destination, engine="sftp", create_dirs=True)
        reply = await self.observer.request(
            TRANSFERS_EXCHANGE, self.node, body, timeout=TRANSFER_TIMEOUT_S
        )
        result = decode(reply.body, TransferResult)
        assert result.ok, f"{result.error}; agent log: {self.log}"
        assert result.attempts == 1
        return result.seconds * 1000

    def report(self, cost: dict[str, LinkCost]) -> str:
        """Predicted against measured, per link and size."""
        links = [
            report_link(label, cost[label], self.measured[label], self.warm_ms[label])
            for label in self.peers
        ]
        tcp = [f"TCP in A while {phase}: {counts}" for phase, counts in self.tcp.items()]
        return "\n".join([*links, *tcp])


def predicted_ms(cost: LinkCost, size_kb: int) -> float:
    x = kbit(size_kb * 1000)
    return cost.a * x * x + cost.b * x + cost.c


def report_link(label: str, cost: LinkCost, measured: dict[int, list[float]], warm: float) -> str:
    rows = [
        f"A->{label.upper()}: a={cost.a:.3g} b={cost.b:.4g} c={cost.c:.4g} ({cost.model}, "
        f"{cost.samples} samples, r2={cost.r2:.4f}); first transfer on a new connection "
        f"({WARM_UP_KB} KB): {warm:.1f} ms",
    ]
    for kb, times in measured.items():
        median = statistics.median(times)
        predicted = predicted_ms(cost, kb)
        rows.append(
            f"  {kb:5d} KB: predicted {predicted:8.1f} ms, measured median {median:8.1f} ms "
            f"({', '.join(f'{t:.1f}' for t in times)}), error {(predicted - median) / median:+.1%}"
        )
    return "\n".join(rows)


async def test_link_cost_predicts_transfers_on_shaped_links(
    lab: Lab, observer: Transport, tmp_path: Path, unique: str
) -> None:
    peers = {label: f"sl-{unique}-{label}" for label in lab.servers}
    run = Run(lab, observer, f"sl-{unique}-a", peers, tmp_path / "agent.toml", tmp_path / "log")
    run.config.write_text(agent_config(lab, run.node, peers, tmp_path))
    sources = {kb: tmp_path / f"file-{kb}.bin" for kb in (*CHECK_SIZES_KB, WARM_UP_KB)}
    for kb, path in sources.items():
        path.write_bytes(os.urandom(kb * 1000))

    cost = await run.profile()
    await run.measure(sources)

    report = run.report(cost)
    print(report)
    for kb, times in run.measured["b"].items():
        median = statistics.median(times)
        error = abs(predicted_ms(cost["b"], kb) - median) / median
        assert error <= TOLERANCE, f"A->B at {kb} KB: off by {error:.1%}\n{report}"
    largest = PROBE_SIZES_KB[-1]
    assert predicted_ms(cost["c"], largest) * CHEAPER <= predicted_ms(cost["b"], largest), report
