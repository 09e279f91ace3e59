"""Network profiler: probe bytes and prediction error, ours against a DRUPE-style schedule.

Run it as root from the repository root, with RabbitMQ on 127.0.0.1::

    python bench/profiler.py             # default run: about 3 minutes
    python bench/profiler.py --quick     # under 90 s: DRUPE's replay capped at 1000 KB
    python bench/profiler.py --seed 7 --no-scp

Two network namespaces, A and B (``tests.netns``), are joined by a veth link shaped to
8 Mbit/s with ``tc tbf`` on both ends; B runs an ``sshd`` with a throwaway user
(``tests.sshd``). A runs a real agent process (this script with a hidden
``--agent-child``: the ``jupiter-bus agent`` of ``tests/test_shaped_links.py``, which
also reports the profiler's own byte accounting when it stops); it reaches the broker
through a TCP proxy on the root end of A's uplink (``tests.proxy``).

1. Ours: ``NetworkProvider`` with its default options, time-compressed 60x (interval,
   fresh_seconds, refresh_seconds and max_sample_age_seconds divided by 60), beside
   the transfer worker that carries its probes, until enough rounds of probes (2 with
   ``--quick``, 4 by default) are in a published fit. The provider's own accounting
   (``Peer.probe_bytes``, warm-ups included) gives the bytes of each round. Bytes per
   link per hour *at the default settings* (interval 60 s jittered, fresh_seconds 600,
   the default budget) come from replaying the provider's planner on a virtual clock
   for 24 hours (``plan_round`` and ``probe``, driven as ``run`` drives them, the
   worker answered at once with the measured fit's cost), next to the arithmetic.
2. DRUPE-style: a seeded sequence of 10 probes with sizes drawn from {1, 10, 100, 1000,
   10000} KB (KB = 1024 bytes, as DRUPE made its files), replayed through the same
   worker in A with a 0.5 s pause instead of DRUPE's minute (each probe still starts on
   an idle link, as DRUPE's did), and with one ``sshpass -e scp`` per probe as DRUPE ran
   it (a new connection each; unless ``--no-scp``); each set is fitted exactly as DRUPE
   did, ``np.polyfit(x_kbit, y_ms, 2)`` with x = KB * 8. Its bytes per link per hour are
   those of one probe a minute: 60 x the mean size of the set (always the full set).
3. Prediction error: the median of 3 real transfers of each of several sizes through
   A's worker (only the worker runs: nothing else shares the link), after idle (0.5 s
   pause: TCP restarts its window, tbf's burst is full) and back to back (sizes
   interleaved), against each model; the scp-timed DRUPE fit against ``sshpass scp``
   transfers timed the same way. Destinations are relative and one folder deep, like
   the probes' (the worker stats each folder of a path it creates).

Temporary files, namespaces, ``sshd``, its user and the worker's queue are removed at
the end, also on failure.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import platform
import random
import re
import shutil
import signal
import statistics
import sys
import tempfile
import time
import uuid
import warnings
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, cast
from unittest import mock

import numpy as np
from harness import broker
from harness.children import run_program, stop_process
from harness.environment import load_average
from harness.errors import BenchError
from harness.jupiter_scp import password_env, sshpass_scp_argv
from harness.options import bench_parser
from harness.tables import Piped, print_table, ratio_text, verdict

ROOT: Final = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # tests.netns and tests.sshd live in the repository
    sys.path.insert(0, str(ROOT))

from jupiter_providers import network as network_module  # noqa: E402
from jupiter_providers.network import WARM_UP_BYTES, NetworkProvider  # noqa: E402

from jupiter_bus.agent import Agent  # noqa: E402
from jupiter_bus.messages import LinkCost, TransferRequest, TransferResult, decode, encode  # noqa: E402
from jupiter_bus.plugins import NodeContext  # noqa: E402
from jupiter_bus.topology import TRANSFERS_EXCHANGE, network_key, work_queue  # noqa: E402
from jupiter_bus.transport import Transport, connect  # noqa: E402
from tests.netns import (  # noqa: E402
    StarNetwork,
    Tbf,
    netns_unavailable_reason,
    star_network,
    tcp_counters,
)
from tests.proxy import TcpProxy  # noqa: E402
from tests.sshd import SshServer, sshd_unavailable_reason, start_sshd  # noqa: E402

SCRIPT: Final = str(Path(__file__).resolve())
SHAPED: Final = Tbf(rate="8mbit", burst="8kb", latency="50ms")
COMPRESSION: Final = 60.0
"""Our profiler's time settings are divided by this in the real run."""
MB: Final = 1_000_000
OUR_KB: Final = 1000  # probe_sizes_kb and kbit() count 1000 bytes a KB
DRUPE_SIZES_KB: Final = (1, 10, 100, 1000, 10000)
DRUPE_QUICK_CAP_KB: Final = 1000
DRUPE_KB: Final = 1024  # DRUPE's generated files: "K = 1024"
DRUPE_POINTS: Final = 10  # its capped Mongo collection kept the last 10
DRUPE_PROBES_PER_HOUR: Final = 60  # one probe per link every minute
REPEATS: Final = 3
AIM_ERROR: Final = 0.10  # DESIGN.md section 5: within 10 % over the probed range
SIM_HOURS: Final = 24
REQUEST_TIMEOUT_S: Final = 60.0
WARM_UP_TIMEOUT_S: Final = 30.0
STOP_TIMEOUT_S: Final = 20.0
SCP_TIMEOUT_S: Final = 60.0
FITS_TIMEOUT_PER_ROUND_S: Final = 20.0
IDLE_GAP_S: Final = 0.5
"""Pause before each DRUPE probe and each "after idle" copy through the worker: longer
than TCP's retransmission timeout (200 ms or more), so the connection restarts from its
initial window as after any idle spell, and tbf's 8 KB burst is full again (8 ms), as
DRUPE's probes a minute apart found the link. "Back to back" copies have no pause: a
copy right after another starts on a warm window and an empty bucket."""
IDLE: Final = "after idle"
BUSY: Final = "back to back"

log = logging.getLogger("bench.profiler")


@dataclass(frozen=True, slots=True)
class Settings:
    """What one run measures."""

    url: str
    quick: bool
    seed: int
    rounds: int
    """Probing rounds of ours (each probes every size) before its fit is taken."""
    drupe_sizes_kb: tuple[int, ...]
    check_sizes_kb: tuple[int, ...]
    scp: bool


def settings_for(url: str, quick: bool, seed: int, scp: bool) -> Settings:
    if quick:
        capped = tuple(kb for kb in DRUPE_SIZES_KB if kb <= DRUPE_QUICK_CAP_KB)
        return Settings(url, True, seed, 2, capped, (16, 64, 256, 1000), scp)
    return Settings(url, False, seed, 4, DRUPE_SIZES_KB, (16, 64, 512, 2048, 4096), scp)


# ---------------------------------------------------------------------------- models


@dataclass(frozen=True, slots=True)
class Model:
    """A quadratic cost model, cost_ms = a*x^2 + b*x + c, x = size in the model's Kbit."""

    label: str
    kind: str
    a: float
    b: float
    c: float
    samples: int
    lo_kbit: float
    hi_kbit: float
    bytes_per_kb: int
    """How the model's x is made from bytes: x = bytes / bytes_per_kb * 8."""

    def x(self, size_bytes: float) -> float:
        return size_bytes / self.bytes_per_kb * 8.0

    def cost_ms(self, size_bytes: float) -> float:
        x = self.x(size_bytes)
        return (self.a * x + self.b) * x + self.c

    def covers(self, size_bytes: float) -> bool:
        return self.lo_kbit * (1 - 1e-9) <= self.x(size_bytes) <= self.hi_kbit * (1 + 1e-9)

    def _grid(self) -> np.ndarray[Any, np.dtype[np.float64]]:
        xs = np.linspace(self.lo_kbit, self.hi_kbit, 2001)
        return np.asarray((self.a * xs + self.b) * xs + self.c, dtype=np.float64)

    def negative_in_range(self) -> bool:
        return bool(np.any(self._grid() < 0))

    def decreasing_in_range(self) -> bool:
        # the slope 2ax + b is linear in x: its ends tell
        return min(2 * self.a * self.lo_kbit + self.b, 2 * self.a * self.hi_kbit + self.b) < 0


def ours_model(label: str, cost: LinkCost) -> Model:
    return Model(
        label,
        cost.model or "unknown",
        cost.a,
        cost.b,
        cost.c,
        cost.samples,
        cost.min_kbit,
        cost.max_kbit,
        OUR_KB,
    )


def drupe_model(label: str, sizes_kb: Sequence[int], times_ms: Sequence[float]) -> Model:
    """DRUPE's regression as it was: ``np.polyfit(KB * 8, seconds * 1000, 2)``."""
    x = np.asarray(sizes_kb, dtype=np.float64) * 8.0
    y = np.asarray(times_ms, dtype=np.float64)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        a, b, c = (float(v) for v in np.polyfit(x, y, 2))
    kind = "np.polyfit" + (" (rank warning)" if caught else "")
    return Model(label, kind, a, b, c, len(y), float(x.min()), float(x.max()), DRUPE_KB)


# ---------------------------------------------------------------------------- the lab


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


# ---------------------------------------------------------------------------- agent in A


def transfer_options(lab: Lab, state: Path) -> dict[str, Any]:
    known_hosts = lab.workdir / "known_hosts"
    known_hosts.write_text(lab.server.host_key_line + "\n")
    return {
        "engine": "sftp",
        "concurrency": 1,
        "known_hosts": str(known_hosts),
        "client_keys": [str(lab.server.client_key)],
        "state_dir": str(state),
    }


def compressed_profiler_options(lab: Lab, defaults: NetworkProvider, state: Path) -> dict[str, Any]:
    """Our profiler's defaults with every duration divided by :data:`COMPRESSION`."""
    server = lab.server
    return {
        "interval": defaults.interval / COMPRESSION,
        "fresh_seconds": defaults.fresh_seconds / COMPRESSION,
        "refresh_seconds": defaults.refresh_seconds / COMPRESSION,
        "max_sample_age_seconds": defaults.max_sample_age / COMPRESSION,
        "state_dir": str(state),
        "peers": [
            {"node": lab.peer, "host": server.host, "port": server.port, "user": server.user}
        ],
    }


class AgentProcess:
    """An agent (this script's ``--agent-child``) running in namespace A."""

    def __init__(self, lab: Lab, name: str, providers: dict[str, dict[str, Any]]) -> None:
        self.lab = lab
        self.config = lab.workdir / f"{name}.json"
        self.out = lab.workdir / f"{name}.out.json"
        self.log = lab.workdir / f"{name}.log"
        self.config.write_text(
            json.dumps({"node": lab.node, "broker": lab.broker, "providers": providers})
        )
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        command = ("ip", "netns", "exec", self.lab.hub, sys.executable, SCRIPT)
        with self.log.open("ab") as output:
            self.process = await asyncio.create_subprocess_exec(
                *command,
                *("--agent-child", str(self.config), "--out", str(self.out)),
                stdout=output,
                stderr=asyncio.subprocess.STDOUT,
            )

    async def stop(self) -> dict[str, Any]:
        """SIGTERM the agent, wait for it, and return what it reported."""
        if self.process is not None:  # `ip netns exec` became the agent itself
            await stop_process(self.process, STOP_TIMEOUT_S)
        return read_json(self.out) if self.out.exists() else {}

    def tail(self, lines: int = 30) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else "(no log)"
        return "\n".join(text.splitlines()[-lines:])


async def agent_child(config_path: Path, out: Path) -> None:
    """The agent in A: run until SIGTERM, then write the profiler's byte accounting."""
    config = read_json(config_path)
    agent = Agent(config["node"], config["broker"], config["providers"], grace=10.0)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, agent.stop)
    await agent.run()
    report: dict[str, Any] = {}
    if "network" in config["providers"]:
        provider = agent.provider("network")
        assert isinstance(provider, NetworkProvider)
        report = {
            "probes": [[t, size] for p in provider.peers.values() for t, size in p.probe_bytes],
            "probes_sent": provider.probes_sent,
            "probe_failures": provider.probe_failures,
            "errors": {p.node: p.last_error for p in provider.peers.values() if p.last_error},
            "samples": [
                [sample.size_kbit, sample.cost_ms]
                for p in provider.peers.values()
                for sample in p.model.samples
            ],
        }
    write_json(out, report)


def read_json(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data))


# ---------------------------------------------------------------------------- phase 1: ours


@dataclass(frozen=True, slots=True)
class Ours:
    """What the time-compressed run of our profiler produced."""

    fits: list[LinkCost]
    rounds: list[list[int]]
    """Probe sizes of each round, warm-up first, from the provider's own accounting."""
    round_starts_s: list[float]
    report: dict[str, Any]
    wire: WireWatch
    seconds: float


def split_rounds(probes: Sequence[Sequence[float]]) -> tuple[list[list[int]], list[float]]:
    """Group (monotonic, size) probe entries into rounds: each round opens with a warm-up."""
    rounds: list[list[int]] = []
    starts: list[float] = []
    for t, size in sorted(probes, key=lambda entry: entry[0]):
        if size == WARM_UP_BYTES or not rounds:
            rounds.append([])
            starts.append(t)
        rounds[-1].append(int(size))
    t0 = starts[0] if starts else 0.0
    return rounds, [t - t0 for t in starts]


async def run_ours(
    lab: Lab, observer: Transport, defaults: NetworkProvider, settings: Settings
) -> Ours:
    state = lab.workdir / "state-ours"
    providers = {
        "transfer": transfer_options(lab, state / "transfer"),
        "network": compressed_profiler_options(lab, defaults, state / "network"),
    }
    agent = AgentProcess(lab, "agent-ours", providers)
    wanted = len(defaults.probe_sizes) * settings.rounds
    fits: list[LinkCost] = []
    started = time.monotonic()
    async with (
        observer.subscribe([network_key(lab.node, lab.peer)]) as feed,
        WireWatch(lab) as wire,
    ):
        await agent.start()
        try:
            async with asyncio.timeout(FITS_TIMEOUT_PER_ROUND_S * (settings.rounds + 1)):
                while not fits or fits[-1].samples < wanted:
                    fits.append(decode((await anext(feed)).body, LinkCost))
        except TimeoutError:
            await agent.stop()
            raise BenchError(
                f"ours: no fit with {wanted} samples in time; agent log:\n{agent.tail()}"
            ) from None
        finally:
            report = await agent.stop()
    seconds = time.monotonic() - started
    if not report:
        raise BenchError(f"ours: the agent wrote no report; agent log:\n{agent.tail()}")
    rounds, starts = split_rounds(report["probes"])
    return Ours(fits, rounds, starts, report, wire, seconds)


# ------------------------------------------------------------ ours at the default interval


class VirtualClock:
    """Stands in for the ``time`` module of the profiler: seconds since the replay began."""

    def __init__(self) -> None:
        self.now = 0.0
        self.epoch = time.time()

    def monotonic(self) -> float:
        return self.now

    def time(self) -> float:
        return self.epoch + self.now


@dataclass(frozen=True, slots=True)
class Reply:
    body: bytes


def file_size(path: str) -> int:
    return os.stat(path).st_size


class InstantWorker:
    """Answers the profiler's probe requests at once, moving the virtual clock by their cost."""

    def __init__(self, clock: VirtualClock, cost_ms: Callable[[int], float]) -> None:
        self.clock = clock
        self.cost_ms = cost_ms
        # durations only place the samples' timestamps; a fit may dip below 0 under its range
        self.floor_ms = 1.0

    async def request(self, exchange: str, routing_key: str, body: bytes, **_: Any) -> Reply:
        request = decode(body, TransferRequest)
        size = file_size(request.source)
        seconds = max(self.cost_ms(size), self.floor_ms) / 1000
        self.clock.now += seconds
        result = TransferResult(
            request_id=request.id,
            node=routing_key,
            ok=True,
            bytes=size,
            seconds=seconds,
            attempts=1,
        )
        return Reply(encode(result))


@dataclass(frozen=True, slots=True)
class Schedule:
    """Probe bytes of our profiler at its default settings, hour by hour of a replay."""

    hours: list[int]
    """Probe bytes sent in each hour of the replay (warm-ups included)."""
    round_bytes: Counter[int]
    """How many probing rounds sent how many bytes."""
    last_hour_report: int
    """``budget_report()`` at the end: the provider's own count of the last hour."""


def profiler_for(state: Path, transport: object) -> NetworkProvider:
    """A NetworkProvider with its default options and one peer, not started."""
    context = NodeContext(node="sim-a", transport=cast(Transport, transport))
    peer = {"node": "sim-b", "host": "10.0.0.2", "user": "sim"}
    return NetworkProvider(context, {"state_dir": str(state), "peers": [peer]})


async def one_round(provider: NetworkProvider, monotonic: Callable[[], float]) -> None:
    """The round body of ``NetworkProvider.run``: plan, one warm-up per peer, the probes."""
    warmed: set[str] = set()
    for peer, size in provider.plan_round():
        if peer.node not in warmed:
            warmed.add(peer.node)
            await provider.probe(peer, WARM_UP_BYTES, record=False)
        if monotonic() >= peer.next_probe_at:
            await provider.probe(peer, size)


async def replay_defaults(state: Path, cost_ms: Callable[[int], float], seed: int) -> Schedule:
    """Run our planner at its default settings for :data:`SIM_HOURS` on a virtual clock."""
    clock = VirtualClock()
    rng = random.Random(seed)
    probes: list[tuple[float, int]] = []
    round_bytes: Counter[int] = Counter()
    # The profiler reads time.monotonic()/time.time() through its module's `time`:
    # swapping it makes an hour of its schedule pass in milliseconds.
    with mock.patch.object(network_module, "time", clock):
        provider = profiler_for(state, InstantWorker(clock, cost_ms))
        peer = next(iter(provider.peers.values()))
        clock.now = rng.uniform(0, provider.jitter * provider.interval)
        while clock.now < SIM_HOURS * 3600:
            start = clock.now
            await one_round(provider, clock.monotonic)
            new = [(t, size) for t, size in peer.probe_bytes if t >= start]
            if new:
                probes.extend(new)
                round_bytes[sum(size for _, size in new)] += 1
            jitter = provider.jitter
            clock.now += provider.interval * rng.uniform(1 - jitter, 1 + jitter)
        last_hour = provider.budget_report()[peer.node]
        if provider.probe_failures:
            raise BenchError(f"the replay of our schedule failed: {peer.last_error}")
    hours = [0] * SIM_HOURS
    for t, size in probes:
        if t < SIM_HOURS * 3600:
            hours[int(t // 3600)] += size
    return Schedule(hours, round_bytes, last_hour)


# ---------------------------------------------------------------------------- phase 2-3


@dataclass(frozen=True, slots=True)
class WorkerRun:
    """DRUPE's probes replayed through A's worker, then the real transfers."""

    drupe_ms: list[float]
    drupe_wire: WireWatch
    measured_ms: dict[str, dict[int, list[float]]]
    """Per condition (:data:`IDLE`, :data:`BUSY`), the times of each size, in ms."""
    measure_wire: WireWatch
    warm_up_ms: float


def write_random(path: Path, size: int) -> Path:
    path.write_bytes(os.urandom(size))
    return path


async def send(
    lab: Lab, observer: Transport, source: Path, name: str, *, idle_s: float = IDLE_GAP_S
) -> float:
    """After ``idle_s``, copy ``source`` to B through A's worker; the worker's time in ms."""
    await asyncio.sleep(idle_s)
    server = lab.server
    request = TransferRequest(
        host=server.host,
        port=server.port,
        user=server.user,
        source=str(source),
        # relative, one folder deep, like the profiler's probes: with create_dirs the
        # worker stats each folder of the path, one SFTP round trip apiece
        destination=f"jupiter-bench/{name}",
        engine="sftp",
        create_dirs=True,
    )
    reply = await observer.request(
        TRANSFERS_EXCHANGE, lab.node, encode(request), timeout=REQUEST_TIMEOUT_S
    )
    result = decode(reply.body, TransferResult)
    if not result.ok or result.attempts != 1:
        raise BenchError(f"transfer of {source.name} to B: {result.error} ({result.attempts})")
    return result.seconds * 1000


async def warm_up(lab: Lab, observer: Transport, source: Path) -> float:
    """One unrecorded copy that opens the worker's pooled connection (retried until up)."""
    async with asyncio.timeout(WARM_UP_TIMEOUT_S):
        while True:
            try:
                return await send(lab, observer, source, "warm-up.bin", idle_s=0.0)
            except Exception as exc:  # the worker may not consume yet
                log.info("warm-up not answered yet: %s", exc)
                await asyncio.sleep(0.5)


async def run_worker(
    lab: Lab,
    observer: Transport,
    drupe_files: list[Path],
    check_files: dict[int, Path],
) -> WorkerRun:
    state = lab.workdir / "state-worker"
    agent = AgentProcess(lab, "agent-worker", {"transfer": transfer_options(lab, state)})
    await agent.start()
    try:
        warm = await warm_up(lab, observer, write_random(lab.workdir / "warm.bin", WARM_UP_BYTES))
        async with WireWatch(lab) as drupe_wire:
            drupe_ms = [
                await send(lab, observer, path, f"drupe-{i}.bin")
                for i, path in enumerate(drupe_files)
            ]
        gaps = {IDLE: IDLE_GAP_S, BUSY: 0.0}
        measured = {c: {kb: list[float]() for kb in check_files} for c in gaps}
        async with WireWatch(lab) as measure_wire:
            for _ in range(REPEATS):  # sizes interleaved: slow drift hits every size alike
                for condition, gap in gaps.items():
                    for kb, path in check_files.items():
                        ms = await send(lab, observer, path, f"check-{kb}.bin", idle_s=gap)
                        measured[condition][kb].append(ms)
    except BenchError as exc:
        raise BenchError(f"{exc}; worker log:\n{agent.tail()}") from None
    finally:
        await agent.stop()
    return WorkerRun(drupe_ms, drupe_wire, measured, measure_wire, warm)


def scp_argv(lab: Lab, source: Path, name: str) -> list[str]:
    """Jupiter's ``sshpass scp`` (:mod:`harness.jupiter_scp`), run in namespace A."""
    server = lab.server
    target = f"{server.user}@{server.host}:{name}"
    return ["ip", "netns", "exec", lab.hub, *sshpass_scp_argv(server.port, source, target)]


async def scp_copy(lab: Lab, source: Path, name: str) -> float:
    """One ``sshpass scp`` from A (a new connection each), timed around the process as
    DRUPE did; milliseconds."""
    argv, env = scp_argv(lab, source, name), password_env(lab.server.password)
    started = time.perf_counter()
    await run_program(argv, timeout_s=SCP_TIMEOUT_S, env=env)
    return (time.perf_counter() - started) * 1000


@dataclass(frozen=True, slots=True)
class ScpRun:
    """DRUPE's probes as it ran them, then the real transfers the same way."""

    drupe_ms: list[float]
    drupe_wire: WireWatch
    measured_ms: dict[int, list[float]]


async def run_scp(lab: Lab, drupe_files: list[Path], check_files: dict[int, Path]) -> ScpRun:
    """DRUPE's way: one ``sshpass scp`` process (a new SSH connection) per file."""
    async with WireWatch(lab) as wire:
        drupe_ms = [
            await scp_copy(lab, path, f"drupe-scp-{i}.bin") for i, path in enumerate(drupe_files)
        ]
    measured: dict[int, list[float]] = {kb: [] for kb in check_files}
    for _ in range(REPEATS):
        for kb, path in check_files.items():
            measured[kb].append(await scp_copy(lab, path, f"check-scp-{kb}.bin"))
    return ScpRun(drupe_ms, wire, measured)


# ---------------------------------------------------------------------------- printing


def ms_list(times: Sequence[float], digits: int = 0) -> str:
    return ", ".join(f"{t:.{digits}f}" for t in times)


def pct(value: float) -> str:
    return f"{value:+.1%}"


def describe_round(sizes: Sequence[int]) -> str:
    parts = [f"{s:,} (warm-up)" if s == WARM_UP_BYTES else f"{s:,}" for s in sizes]
    return f"{' + '.join(parts)} = {sum(sizes):,} B"


def print_ours(ours: Ours) -> None:
    print("  probing rounds (the provider's own probe_bytes accounting, warm-ups included):")
    for i, (sizes, start) in enumerate(zip(ours.rounds, ours.round_starts_s, strict=True), 1):
        print(f"    round {i} at +{start:5.1f} s: {describe_round(sizes)}")
    total = sum(map(sum, ours.rounds))
    report = ours.report
    errors = f" ({report['errors']})" if report["errors"] else ""
    print(
        f"  {total:,} B in {len(ours.rounds)} probing rounds; {report['probes_sent']} recorded "
        f"probes, {report['probe_failures']} failed{errors}"
    )
    first, last = ours.fits[0], ours.fits[-1]
    by_size: dict[float, list[float]] = {}
    for size_kbit, ms in report["samples"]:
        by_size.setdefault(size_kbit, []).append(ms)
    samples = "; ".join(
        f"{x * 1000 / 8 / OUR_KB:g} KB: {ms_list(times, 1)}" for x, times in sorted(by_size.items())
    )
    print(f"  its samples (ms, the worker's own time per probe): {samples}")
    print(
        f"  {len(ours.fits)} fits published; first {first.model} from {first.samples} samples, "
        f"last {last.model} from {last.samples} samples; {ours.seconds:.0f} s"
    )
    print(f"  {ours.wire}")


def print_bytes(
    defaults: NetworkProvider, ours: Ours, schedule: Schedule, settings: Settings
) -> tuple[float, float]:
    """The bytes table; returns (ours, DRUPE) bytes per link per hour."""
    hours = schedule.hours[1:]  # the first hour holds the start-up round as well
    ours_hour = statistics.mean(hours)
    interval, jitter = defaults.interval, defaults.jitter
    # renewal: the first round past fresh_seconds comes E[X^2] / (2 E[X]) later on average
    overshoot = interval / 2 * (1 + jitter**2 / 3)
    period = defaults.fresh_seconds + overshoot
    full_round = WARM_UP_BYTES + sum(defaults.probe_sizes)
    arithmetic = 3600 / period * full_round
    drupe_probe = statistics.mean(DRUPE_SIZES_KB) * DRUPE_KB
    drupe_hour = DRUPE_PROBES_PER_HOUR * drupe_probe
    probing_rounds = sum(schedule.round_bytes.values())
    mean_round = sum(b * n for b, n in schedule.round_bytes.items()) / max(probing_rounds, 1)
    rows = [
        [
            f"ours, defaults: planner replayed {SIM_HOURS} h on a virtual clock",
            f"{mean_round:,.0f}",
            f"{probing_rounds / SIM_HOURS:.2f}",
            f"{ours_hour / MB:.2f} ({min(hours) / MB:.1f}-{max(hours) / MB:.1f})",
            ratio_text(ours_hour / drupe_hour, 3),
        ],
        [
            f"ours, arithmetic: 3600 / ({defaults.fresh_seconds:g} + {overshoot:.1f}) s",
            f"{full_round:,}",
            f"{3600 / period:.2f}",
            f"{arithmetic / MB:.2f}",
            ratio_text(arithmetic / drupe_hour, 3),
        ],
        [
            f"DRUPE-style: {DRUPE_PROBES_PER_HOUR}/h x mean of {DRUPE_SIZES_KB} KiB",
            f"{drupe_probe:,.0f}",
            f"{DRUPE_PROBES_PER_HOUR}",
            f"{drupe_hour / MB:.2f}",
            "1.000x",
        ],
    ]
    print_table(
        [
            "schedule",
            "B per probing round",
            "probing rounds/h",
            "MB/link/h (hours min-max)",
            "/ DRUPE",
        ],
        rows,
        Piped(),
        title="Probe bytes per link per hour (payload; ours at its default settings)",
    )
    mix = ", ".join(f"{b:,} B x {n}" for b, n in sorted(schedule.round_bytes.items()))
    print(
        f"  ours: interval {interval:g} s +-{jitter:.0%}, "
        f"fresh_seconds {defaults.fresh_seconds:g}, "
        f"max_probes_per_round {defaults.max_probes_per_round}, budget "
        f"{defaults.budget / MB:g} MB/link/h (not reached), probe sizes "
        f"{[s // OUR_KB for s in defaults.probe_sizes]} KB + a {WARM_UP_BYTES:,} B warm-up per "
        f"probing round. A link is re-probed only once its samples are older than "
        f"fresh_seconds, at the first round after that: every {period:.0f} s on average. "
        f"Rounds of the replay: {mix} (a round that lands between the samples' ages "
        f"splits a re-probe in two). budget_report() at the end: "
        f"{schedule.last_hour_report:,} B. Passive samples (real transfers to the peer) "
        f"would lower this further; none are counted. The first hour (with the start-up "
        f"round, left out of the mean): {schedule.hours[0] / MB:.2f} MB."
    )
    capped = (
        "; the --quick replay is capped at 1000 KB, this figure is not" if settings.quick else ""
    )
    print(
        f"  DRUPE: one probe a minute, KB = {DRUPE_KB} B, no warm-up; each probe also opens "
        f"an SSH connection (not counted){capped}."
    )
    return ours_hour, drupe_hour


def print_errors(
    title: str, models: Sequence[Model], measured: dict[int, list[float]]
) -> dict[str, list[float]]:
    """The per-size table; returns each model's relative errors."""
    errors: dict[str, list[float]] = {m.label: [] for m in models}
    rows = []
    for kb, times in measured.items():
        size = kb * OUR_KB
        median = statistics.median(times)
        row = [f"{kb:,}", f"{median:.1f} ({', '.join(f'{t:.1f}' for t in times)})"]
        for model in models:
            predicted = model.cost_ms(size)
            error = (predicted - median) / median
            errors[model.label].append(error)
            outside = "" if model.covers(size) else "*"
            row.append(f"{predicted:.1f} {pct(error)}{outside}")
        rows.append(row)
    print_table(
        ["KB", "measured ms (runs)", *(m.label for m in models)],
        rows,
        Piped(),
        title=f"{title} (predicted ms, error; * = outside that model's probed sizes)",
    )
    return errors


def print_models(models: Sequence[Model]) -> None:
    rows = []
    for m in models:
        lo, hi = m.lo_kbit * m.bytes_per_kb / 8 / 1000, m.hi_kbit * m.bytes_per_kb / 8 / 1000
        rows.append(
            [
                m.label,
                m.kind,
                str(m.samples),
                f"{lo:,.0f}-{hi:,.0f}",
                f"{m.a:.3g}",
                f"{m.b:.4g}",
                f"{m.c:.4g}",
                "yes" if m.a < 0 else "no",
                "yes" if m.negative_in_range() else "no",
                "yes" if m.decreasing_in_range() else "no",
            ]
        )
    print_table(
        [
            "model",
            "type",
            "points",
            "probed KB",
            "a",
            "b",
            "c",
            "a < 0",
            "negative in range",
            "decreasing in range",
        ],
        rows,
        Piped(),
        title="Models (x in Kbit: ours bytes*8/1000; DRUPE KB*8 with KB = 1024 B, "
        "as it sized files)",
    )


def print_error_summary(errors: dict[tuple[str, str], list[float]]) -> None:
    rows = [
        [label, against, f"{max(map(abs, e)):.1%}", f"{statistics.mean(map(abs, e)):.1%}"]
        for (label, against), e in errors.items()
    ]
    print_table(
        ["model", "held against", "max |err|", "mean |err|"],
        rows,
        Piped(),
        title="Prediction error per model (|predicted - median| / median over the checked sizes)",
    )


def print_environment(settings: Settings) -> None:
    mode = "--quick" if settings.quick else "default"
    print(
        f"profiler bench ({mode}): Python {platform.python_version()}, numpy {np.__version__}, "
        f"{os.cpu_count()} CPUs, load average {load_average()}; seed {settings.seed}; link A->B "
        f"tc tbf rate {SHAPED.rate} burst {SHAPED.burst} latency {SHAPED.latency} (both ends); "
        f"broker {broker.address(settings.url)}"
    )


def print_summary(ours_errors: dict[str, list[float]], ours_hour: float, drupe_hour: float) -> None:
    ratio = ours_hour / drupe_hour
    print("\nSummary (DESIGN.md section 5: within 10 % of measured, fewer probe bytes than DRUPE)")
    for condition, errors in ours_errors.items():
        worst = max(abs(e) for e in errors)
        print(
            f"  ours (last fit), max |error| over the checked sizes, transfers {condition}: "
            f"{worst:.1%} (aim <= {AIM_ERROR:.0%}): {verdict(worst <= AIM_ERROR)}"
        )
    print(
        f"  probe bytes per link per hour, ours / DRUPE-style: {ratio_text(ratio, 3)} "
        f"({drupe_hour / ours_hour:.1f}x fewer; aim < 1): {verdict(ratio < 1)}"
    )


# ---------------------------------------------------------------------------- the run


def drupe_sequence(settings: Settings) -> list[int]:
    rng = random.Random(settings.seed)
    return [rng.choice(settings.drupe_sizes_kb) for _ in range(DRUPE_POINTS)]


def make_sources(
    folder: Path, sequence: Sequence[int], settings: Settings
) -> tuple[list[Path], dict[int, Path]]:
    """DRUPE's probe files (one per size, KB = 1024 B) and the files of the real transfers."""
    folder.mkdir()
    by_size = {kb: write_random(folder / f"drupe-{kb}K.bin", kb * DRUPE_KB) for kb in sequence}
    checks = {
        kb: write_random(folder / f"check-{kb}.bin", kb * OUR_KB) for kb in settings.check_sizes_kb
    }
    return [by_size[kb] for kb in sequence], checks


async def measure_all(lab: Lab, observer: Transport, settings: Settings) -> None:
    sequence = drupe_sequence(settings)
    drupe_files, checks = make_sources(lab.workdir / "sources", sequence, settings)
    defaults = profiler_for(lab.workdir / "defaults", object())

    print(
        f"\n[1] ours: NetworkProvider, default options time-compressed {COMPRESSION:g}x "
        f"(interval {defaults.interval / COMPRESSION:g} s, fresh_seconds "
        f"{defaults.fresh_seconds / COMPRESSION:g} s, refresh_seconds "
        f"{defaults.refresh_seconds / COMPRESSION:g} s), until a fit holds {settings.rounds} "
        "samples of each size ..."
    )
    ours = await run_ours(lab, observer, defaults, settings)
    print_ours(ours)
    last = ours_model("ours, last fit", ours.fits[-1])
    schedule = await replay_defaults(
        lab.workdir / "replay", lambda b: last.cost_ms(b), settings.seed
    )

    capped = " (capped at 1000 KB: --quick)" if settings.quick else ""
    print(
        f"\n[2] DRUPE-style: seed {settings.seed}, {DRUPE_POINTS} probes{capped}, KB "
        f"(x{DRUPE_KB} B): {sequence}; {sum(sequence) * DRUPE_KB:,} B in all (10 minutes of "
        f"DRUPE: {sum(sequence) * DRUPE_KB * 6 / MB:.1f} MB/h for this draw; the bytes table "
        "uses the expectation)"
    )
    print(
        f"[3] real transfers: {REPEATS} x {list(settings.check_sizes_kb)} KB (x{OUR_KB} B), "
        f"{IDLE} ({IDLE_GAP_S:g} s pause before each) and {BUSY}; DRUPE's probes first, "
        f"each {IDLE} ..."
    )
    worker = await run_worker(lab, observer, drupe_files, checks)
    print(
        f"  warm-up {worker.warm_up_ms:.1f} ms (opens the worker's pooled connection; not counted)"
    )
    print(f"  DRUPE via the worker: {ms_list(worker.drupe_ms)} ms; {worker.drupe_wire}")
    print(f"  real transfers: {worker.measure_wire}")
    models = [last, ours_model("ours, first fit", ours.fits[0])]
    models.append(drupe_model("DRUPE, worker", sequence, worker.drupe_ms))
    scp: ScpRun | None = None
    if settings.scp:
        print(f"[4] DRUPE as it ran: sshpass scp per probe, then {REPEATS} x each size ...")
        scp = await run_scp(lab, drupe_files, checks)
        print(f"  DRUPE via sshpass scp: {ms_list(scp.drupe_ms)} ms; {scp.drupe_wire}")

    ours_hour, drupe_hour = print_bytes(defaults, ours, schedule, settings)
    errors: dict[tuple[str, str], list[float]] = {}
    for condition, measured in worker.measured_ms.items():
        table = print_errors(
            f"Prediction against the median of {REPEATS} transfers through A's worker, {condition}",
            models,
            measured,
        )
        errors |= {(label, f"worker, {condition}"): e for label, e in table.items()}
    if scp is not None:
        models.append(drupe_model("DRUPE, sshpass scp", sequence, scp.drupe_ms))
        table = print_errors(
            f"DRUPE as it ran: its scp-timed fit against the median of {REPEATS} "
            "sshpass scp transfers",
            models[-1:],
            scp.measured_ms,
        )
        errors |= {(label, "sshpass scp"): e for label, e in table.items()}
    print_models(models)
    print_error_summary(errors)
    print(
        "  ours, last fit: what the agent published after the last round; first fit: after "
        "its first probing round. DRUPE, worker: its probes timed by the same worker as ours "
        "(after a warm-up); DRUPE, sshpass scp: timed around each scp process, as DRUPE "
        "did (a new SSH connection each), held against scp transfers timed the same way."
    )
    ours_errors = {c: errors[(last.label, f"worker, {c}")] for c in worker.measured_ms}
    print_summary(ours_errors, ours_hour, drupe_hour)


async def run(settings: Settings) -> None:
    for reason in (netns_unavailable_reason(), sshd_unavailable_reason()):
        if reason is not None:
            raise SystemExit(f"profiler bench cannot run: {reason}")
    started = time.monotonic()
    run_id = uuid.uuid4().hex[:8]
    task = asyncio.current_task()
    assert task is not None
    # SIGTERM cancels like Ctrl-C does: namespaces, sshd, its user and agents go away
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    observer = await connect(settings.url, connection_name="profiler bench observer")
    try:
        async with open_lab(settings.url, run_id) as lab:
            try:
                await measure_all(lab, observer, settings)
            finally:
                with contextlib.suppress(Exception):
                    await observer.delete_queue(work_queue(lab.node))
    finally:
        await observer.close()
    print(f"  (measured in {time.monotonic() - started:.0f} s)")


def main(argv: Sequence[str] | None = None) -> None:
    parser = bench_parser(__doc__, "under 90 s; DRUPE capped at 1000 KB")
    parser.add_argument("--seed", type=int, default=0, help="seed of DRUPE's size sequence")
    parser.add_argument("--no-scp", action="store_true", help="skip the sshpass scp replay")
    parser.add_argument("--agent-child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.agent_child is not None:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
        asyncio.run(agent_child(args.agent_child, args.out))
        return
    settings = settings_for(args.url, args.quick, args.seed, not args.no_scp)
    print_environment(settings)
    try:
        asyncio.run(run(settings))
    except (KeyboardInterrupt, asyncio.CancelledError):
        raise SystemExit(
            "profiler bench interrupted (namespaces, sshd and agents removed)"
        ) from None
    except BenchError as exc:
        raise SystemExit(f"profiler bench failed: {exc}") from None


if __name__ == "__main__":
    main()
