"""Connections lost mid-stream, and a worker killed mid-transfer (issue 12, items 1 and 2).

Item 1: while transfer jobs (``local`` engine, small files) and a stream of resource
events flow, every connection (agents' and facade's) is cut at a TCP proxy, twice.
Each job runs once (counted at the engine), its file arrives once with its content,
its result is collected once, and events published after a cut reach the facade. The
same scenario against a real broker restart (``rabbitmqctl stop_app``/``start_app``,
10,000 jobs) is marked ``soak``: ``scripts/test.sh -m soak tests/reliability/test_restarts.py``.

Item 2: an agent process is SIGKILLed during a 100 MB SFTP transfer over a throttled
link; a second agent of the same node takes the redelivered job and completes it,
while the destination is polled: it never exists with less than the full content.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from jupiter_providers.copy_engines import CopyJob
from jupiter_providers.transfer import TransferProvider

from jupiter_bus.agent import Agent
from jupiter_bus.facade import JupiterInterface
from jupiter_bus.messages import ResourceSample, TransferResult, decode, encode
from jupiter_bus.topology import TRANSFERS_EXCHANGE, resource_key, transfer_done_key, work_queue
from jupiter_bus.transport import Transport, connect
from jupiter_bus.transport.amqp import AmqpTransport

from ..conftest import AMQP_URL, amqp_url_via, eventually
from ..proxy import TcpProxy
from ..sshd import SshServer
from ..test_transfer_worker import request_body
from .conftest import temp_names, user_folder

pytestmark = pytest.mark.amqp

AGENTS = 3
SLOW_EVERY = 50
"""Every this many jobs copies slowly, so that each cut finds copies in flight."""
SLOW_SECONDS = 1.0
IN_FLIGHT = 300
EVENT_PERIOD = 0.02


class CountingEngine:
    """The real ``local`` engine, counting its runs per idempotency key (slow for some)."""

    name = "local"

    def __init__(self, inner: Any, runs: Counter[str]) -> None:
        self.inner = inner
        self.runs = runs

    async def copy(self, job: CopyJob) -> None:
        self.runs[job.idempotency_key] += 1
        if "slow" in os.path.basename(job.source):
            await asyncio.sleep(SLOW_SECONDS)
        await self.inner.copy(job)


@dataclass
class Stream:
    """What flowed: when each job was submitted and collected, each event sent and seen."""

    submitted: dict[str, float] = field(default_factory=dict)
    collected: dict[str, float] = field(default_factory=dict)
    results: list[TransferResult] = field(default_factory=list)
    sent: dict[tuple[str, int], float] = field(default_factory=dict)
    seen: list[tuple[float, str, int]] = field(default_factory=list)

    def first_event_after(self, moment: float) -> float | None:
        times = [t for t, node, seq in self.seen if self.sent.get((node, seq), 0) > moment]
        return min(times, default=None)

    def first_result_after(self, moment: float) -> float | None:
        times = [self.collected.get(j) for j, t in self.submitted.items() if t > moment]
        return min((t for t in times if t is not None), default=None)

    def rate(self, start: float, end: float) -> float:
        done = sum(1 for t in self.collected.values() if start <= t < end)
        return done / max(end - start, 1e-9)


Outage = Callable[[], Awaitable[None]]


@dataclass
class Figures:
    jobs: int
    seconds: float
    rate_before: float
    rate_after: float
    reconnected: list[float]
    event_recovery: list[float]
    result_recovery: list[float]
    transfer_done: int
    transfer_done_missed: int = 0
    """Jobs whose ``transfer.done`` event the observer missed while it reconnected."""


def sample(node: str, seq: int) -> bytes:
    return encode(
        ResourceSample(
            node=node,
            cpu_percent=1.0,
            cpu_count=1,
            memory_percent=1.0,
            memory_total_bytes=1 << 40,
            memory_available_bytes=seq,
        )
    )


async def _publish_events(agent: Agent, stream: Stream, stop: asyncio.Event) -> None:
    assert agent.context is not None
    seq = 0
    while not stop.is_set():
        seq += 1
        stream.sent[(agent.node, seq)] = time.monotonic()
        await agent.context.publish_event(resource_key(agent.node), sample(agent.node, seq))
        await asyncio.sleep(EVENT_PERIOD)


async def _watch_events(facade: JupiterInterface, nodes: list[str], stream: Stream) -> None:
    async with facade.watch_resources(node=nodes) as feed:
        async for update in feed:
            stream.seen.append((time.monotonic(), update.node, update.memory_available_bytes))


def _consuming(provider: TransferProvider) -> bool:
    detail: str = provider.health().detail
    return detail.startswith("consuming")


def _at_least(collected: dict[str, float], count: int) -> bool:
    return len(collected) >= count


async def _start_agent(
    transport: Transport, node: str, tmp_path: Path, extra: Mapping[str, Any] | None = None
) -> Agent:
    options = {
        "engine": "local",
        "concurrency": 32,
        "state_dir": str(tmp_path / f"state-{node}"),
        "allow_roots": [str(tmp_path / "src")],
        **(extra or {}),
    }
    agent = Agent(node, transport, {"transfer": options}, grace=10)
    return agent


async def run_mid_stream(
    tmp_path: Path,
    unique: str,
    agent_url: str,
    outage: Outage,
    *,
    jobs: int,
    outages: int,
    timeout: float,
    observer_url: str = AMQP_URL,
    transfer_options: Mapping[str, Any] | None = None,
    submit_rate: float | None = None,
) -> Figures:
    """Stream ``jobs`` transfers and events, run ``outage`` ``outages`` times; check all.

    ``observer_url``: where the test's own observer (counting ``transfer.done`` events,
    reading queue lengths) connects, out of the outages' way. ``transfer_options``: more
    options of the agents' transfer providers (e.g. the work queue type). ``submit_rate``
    (jobs per second; default: as fast as they complete) keeps the stream flowing for a
    known time, through outages that take seconds.
    """
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    dst.mkdir()
    names = [f"{'slow-' if i % SLOW_EVERY == 1 else ''}{i}.bin" for i in range(jobs)]
    for i, name in enumerate(names):
        (src / name).write_bytes(f"job {i} of {unique}\n".encode() * 4)
    nodes = [f"rs-{unique}-{k}" for k in range(AGENTS)]
    runs: Counter[str] = Counter()
    stream = Stream()
    transports: list[AmqpTransport] = []
    reconnects: list[float] = []
    losses: list[float] = []
    timelines: list[tuple[str, list[float], list[float]]] = []
    """Per client connection: its name, when it was lost, when it was back."""

    async def transport(name: str) -> AmqpTransport:
        t = AmqpTransport(
            agent_url, connection_name=name, reconnect_interval=0.2, publish_timeout=60
        )
        await t.connect()
        lost: list[float] = []
        back: list[float] = []

        def on_back() -> None:
            back.append(time.monotonic())
            reconnects.append(back[-1])

        def on_lost(*_: object) -> None:
            lost.append(time.monotonic())
            losses.append(lost[-1])

        t.on_reconnect(on_back)
        t.connection.close_callbacks.add(on_lost)
        transports.append(t)
        timelines.append((name, lost, back))
        return t

    observer = await connect(observer_url, connection_name=f"restarts observer {unique}")
    observer_back: list[float] = []
    observer.on_reconnect(lambda: observer_back.append(time.monotonic()))
    agents = [
        await _start_agent(await transport(f"agent {n}"), n, tmp_path, transfer_options)
        for n in nodes
    ]
    running = [asyncio.create_task(a.run()) for a in agents]
    stop_events = asyncio.Event()
    background: list[asyncio.Task[None]] = []
    try:
        for agent in agents:
            await asyncio.wait_for(agent.started(), 30)
            provider = agent.provider("transfer")
            assert isinstance(provider, TransferProvider)
            provider.engines["local"] = CountingEngine(provider.engines["local"], runs)
            await eventually(partial(_consuming, provider), 30)
        done_seen: list[str] = []
        async with (
            observer.subscribe([transfer_done_key(n) for n in nodes]) as done_feed,
            JupiterInterface(await transport(f"facade {unique}")) as facade,
        ):

            async def count_done() -> None:
                async for envelope in done_feed:
                    done_seen.append(decode(envelope.body, TransferResult).request_id)

            background += [
                asyncio.create_task(count_done()),
                asyncio.create_task(_watch_events(facade, nodes, stream)),
                *(asyncio.create_task(_publish_events(a, stream, stop_events)) for a in agents),
            ]
            slots = asyncio.Semaphore(IN_FLIGHT)
            waiters: list[asyncio.Task[None]] = []

            async def collect(job_id: str) -> None:
                try:
                    result = await facade.wait_transfer(job_id, timeout=timeout)
                    stream.collected[job_id] = time.monotonic()
                    stream.results.append(result)
                finally:
                    slots.release()

            async def submit_all() -> None:
                began = time.monotonic()
                for i, name in enumerate(names):
                    if submit_rate is not None:
                        await asyncio.sleep(max(0.0, began + i / submit_rate - time.monotonic()))
                    await slots.acquire()
                    stream_start = time.monotonic()
                    job_id = await facade.submit_transfer(
                        "127.0.0.1",
                        "nobody",
                        None,
                        str(src / name),
                        str(dst / name),
                        via=nodes[i % AGENTS],
                        engine="local",
                    )
                    stream.submitted[job_id] = stream_start
                    waiters.append(asyncio.create_task(collect(job_id)))

            started = time.monotonic()
            cuts: list[float] = []
            drops: list[float] = []  # per outage: when the first connection went
            async with asyncio.timeout(timeout):
                submitter = asyncio.create_task(submit_all())
                background.append(submitter)
                for k in range(outages):
                    share = jobs * (k + 1) // (outages + 2)
                    await eventually(partial(_at_least, stream.collected, share), timeout)
                    cuts.append(time.monotonic())
                    await outage()
                    drops.append(min((t for t in losses if t > cuts[-1]), default=cuts[-1]))
                    await eventually(
                        lambda: (
                            stream.first_event_after(drops[-1]) is not None
                            and stream.first_result_after(drops[-1]) is not None
                        ),
                        timeout,
                    )
                await submitter
                await asyncio.gather(*waiters)
            finished = time.monotonic()
            # every outage took connections, and each lost one came back by itself (on a
            # cluster, clients on a surviving node keep theirs)
            for cut in cuts:
                assert any(t > cut for t in losses), "an outage took no connection"
            for name, lost, back in timelines:
                for when in lost:
                    assert any(b > when for b in back), f"{name}: lost at {when:.2f}, never back"
            # the agents published events after the last cut, and the facade saw them
            for node in nodes:
                assert any(
                    stream.sent[(n, s)] > drops[-1] for t, n, s in stream.seen if n == node
                ), f"no event of {node} reached the facade after the last outage"
            if not observer_back:
                # the observer was out of the outages' way: it saw every job's event
                await eventually(lambda: len(set(done_seen)) == jobs, 30)
                missed = 0
            else:
                # the observer rode the outage too: events are live, so those published
                # while it had no queue are gone; every job submitted a second after it
                # was back (subscriptions restored) has its event
                after = {j for j, t in stream.submitted.items() if t > observer_back[-1] + 1}
                assert after, "no job was submitted after the observer came back"
                await eventually(lambda: after <= set(done_seen), 30)
                missed = jobs - len(set(done_seen))
            assert set(done_seen) <= set(stream.submitted)
            assert facade.held_results == 0
            for node in nodes:
                for _ in range(100):
                    if await observer.queue_length(work_queue(node)) == 0:
                        break
                    await asyncio.sleep(0.1)
                assert await observer.queue_length(work_queue(node)) == 0
        assert all(not task.done() for task in running), "an agent stopped by itself"
    finally:
        stop_events.set()
        for task in background:
            task.cancel()
        await asyncio.gather(*background, return_exceptions=True)
        for agent in agents:
            agent.stop()
        await asyncio.gather(*running, return_exceptions=True)
        for node in nodes:
            await observer.delete_queue(work_queue(node))
        for t in transports:
            await t.close()
        await observer.close()

    # exactly once: one run per job, one result per job, one file per job with its content
    ids = [r.request_id for r in stream.results]
    assert len(ids) == jobs
    assert len(set(ids)) == jobs
    assert set(ids) == set(stream.submitted)
    assert all(r.ok for r in stream.results), [r.error for r in stream.results if not r.ok][:3]
    reruns = {key: n for key, n in runs.items() if n != 1}
    assert not reruns, f"{len(reruns)} jobs ran more than once: {list(reruns.items())[:5]}"
    assert set(runs) == set(stream.submitted)
    files = sorted(p.name for p in dst.iterdir())
    assert files == sorted(names), f"{len(files)} files for {jobs} jobs"
    for i, name in enumerate(names):
        assert (dst / name).read_bytes() == f"job {i} of {unique}\n".encode() * 4

    last = max(stream.first_result_after(drops[-1]) or 0, stream.first_event_after(drops[-1]) or 0)
    return Figures(
        jobs=jobs,
        seconds=finished - started,
        rate_before=stream.rate(started, cuts[0]),
        rate_after=stream.rate(last, finished),
        reconnected=[
            max(t for t in reconnects if t > c and (k + 1 == len(cuts) or t < cuts[k + 1])) - d
            for k, (c, d) in enumerate(zip(cuts, drops, strict=True))
        ],
        event_recovery=[(stream.first_event_after(d) or d) - d for d in drops],
        result_recovery=[(stream.first_result_after(d) or d) - d for d in drops],
        transfer_done=len(done_seen),
        transfer_done_missed=missed,
    )


def _print(what: str, figures: Figures) -> None:
    print(
        f"\n{what}: {figures.jobs} jobs in {figures.seconds:.1f} s; "
        f"{figures.rate_before:.0f} jobs/s before the first outage, "
        f"{figures.rate_after:.0f} jobs/s after the last recovery; "
        "recovery (from the first connection lost: to the last one back / to the first "
        "event sent after it, received / to the first result of a job submitted after it): "
        + ", ".join(
            f"{c:.2f} s / {e:.2f} s / {r:.2f} s"
            for c, e, r in zip(
                figures.reconnected, figures.event_recovery, figures.result_recovery, strict=True
            )
        )
        + f"; transfer.done events {figures.transfer_done} "
        f"({figures.transfer_done - figures.jobs + figures.transfer_done_missed} answered "
        f"again from the job store, {figures.transfer_done_missed} missed while the "
        "observer itself reconnected)"
    )


async def test_every_job_completes_once_across_connection_cuts(
    broker_proxy: TcpProxy, tmp_path: Path, unique: str
) -> None:
    jobs = int(os.environ.get("JUPITER_BUS_RESTART_JOBS", "1500"))

    async def cut() -> None:
        assert broker_proxy.cut() >= AGENTS + 1

    before = broker_proxy.connections
    figures = await run_mid_stream(
        tmp_path, unique, amqp_url_via(broker_proxy.port), cut, jobs=jobs, outages=2, timeout=60
    )
    assert broker_proxy.connections >= before + 2 * (AGENTS + 1)  # all came back, twice
    _print("connections cut at a TCP proxy (twice)", figures)


def _rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", *args], check=True, capture_output=True, timeout=120)


@pytest.mark.soak
async def test_every_job_completes_once_across_a_broker_restart(
    tmp_path: Path, unique: str
) -> None:
    """Restarts the real broker: never on a broker other people's tests share."""
    if shutil.which("rabbitmqctl") is None or urlsplit(AMQP_URL).hostname not in (
        "127.0.0.1",
        "localhost",
    ):
        pytest.skip("rabbitmqctl for the local broker is not available")
    jobs = int(os.environ.get("JUPITER_BUS_RESTART_JOBS", "10000"))

    async def restart() -> None:
        await asyncio.to_thread(_rabbitmqctl, "stop_app")
        await asyncio.sleep(2)
        await asyncio.to_thread(_rabbitmqctl, "start_app")

    figures = await run_mid_stream(
        tmp_path, unique, AMQP_URL, restart, jobs=jobs, outages=1, timeout=600
    )
    _print("RabbitMQ restarted (stop_app/start_app)", figures)


# -- item 2: a worker killed mid-transfer ---------------------------------------------------

BIG = 100 * 1024 * 1024
LINK_RATE = 40_000_000  # bytes/s through the proxy: a run takes about 2.6 s


@dataclass
class DestinationWatch:
    """What rapid polling of the destination path saw."""

    polls: int = 0
    sizes_seen: Counter[int] = field(default_factory=Counter)
    first_seen: float | None = None


async def _poll(path: Path, watch: DestinationWatch, stop: asyncio.Event) -> None:
    while not stop.is_set():
        watch.polls += 1
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            pass
        else:
            watch.sizes_seen[size] += 1
            if watch.first_seen is None:
                watch.first_seen = time.monotonic()
        await asyncio.sleep(0.002)


def _has_open(pid: int, path: Path) -> bool:
    fds = Path(f"/proc/{pid}/fd")
    try:
        return any(os.readlink(fd) == str(path) for fd in fds.iterdir())
    except (FileNotFoundError, ProcessLookupError):
        return False


@pytest.fixture
async def throttled_sshd(ssh_server: SshServer) -> AsyncIterator[TcpProxy]:
    proxy = TcpProxy(ssh_server.host, ssh_server.port, rate_bytes_per_s=LINK_RATE)
    await proxy.start()
    yield proxy
    await proxy.close()


async def test_killed_worker_job_completes_elsewhere_without_partial_file(
    ssh_server: SshServer, throttled_sshd: TcpProxy, tmp_path: Path, unique: str
) -> None:
    node = f"kill-{unique}"
    known_hosts = ssh_server.known_hosts_via(throttled_sshd.port, tmp_path / "known_hosts")
    config = tmp_path / "agent.toml"
    config.write_text(
        f'node = "{node}"\nbroker = "{AMQP_URL}"\n'
        '[providers.transfer]\nengine = "sftp"\nconcurrency = 1\n'
        f'known_hosts = "{known_hosts}"\nclient_keys = ["{ssh_server.client_key}"]\n'
        f'state_dir = "{tmp_path / "state"}"\n'
    )
    source = tmp_path / "big.bin"
    with source.open("wb") as out:
        for _ in range(BIG // (1 << 20)):
            out.write(os.urandom(1 << 20))
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    folder = user_folder(ssh_server, f"kill-{unique}")
    destination = folder / "big.bin"
    observer = await connect(AMQP_URL, connection_name=f"kill observer {unique}")
    agents: list[asyncio.subprocess.Process] = []
    watch, stop = DestinationWatch(), asyncio.Event()
    poller = asyncio.create_task(_poll(destination, watch, stop))
    try:
        for k in range(2):  # two workers of the same node on its one work queue
            with (tmp_path / f"agent-{k}.log").open("wb") as log:
                agents.append(
                    await asyncio.create_subprocess_exec(
                        *(sys.executable, "-m", "jupiter_bus.cli", "agent", "--config"),
                        str(config),
                        stdout=log,
                        stderr=asyncio.subprocess.STDOUT,
                    )
                )
        for _ in range(1500):
            try:
                await observer.queue_length(work_queue(node))
                break
            except Exception:
                await asyncio.sleep(0.02)
        async with observer.subscribe([transfer_done_key(node)]) as done:
            body = request_body(
                ssh_server,
                source,
                str(destination),
                port=throttled_sshd.port,
                idempotency_key=f"big-{unique}",
            )
            published = time.monotonic()
            await observer.publish(TRANSFERS_EXCHANGE, node, body, persistent=True, mandatory=True)
            await eventually(lambda: bool(temp_names(folder)), 60)
            temp = folder / temp_names(folder)[0]
            await eventually(lambda: temp.stat().st_size > BIG // 4, 60)
            runner = next((a for a in agents if _has_open(a.pid, source)), None)
            assert runner is not None, "no agent process has the source open"
            partial = temp.stat().st_size
            runner.kill()  # SIGKILL: no clean-up of any kind
            killed = time.monotonic()
            await runner.wait()
            assert not destination.exists()
            envelope = await asyncio.wait_for(anext(done), 120)
            completed = time.monotonic()
        result = decode(envelope.body, TransferResult)
        assert result.ok, result.error
        survivor = next(a for a in agents if a is not runner)
        assert survivor.returncode is None
        stop.set()
        await poller
        assert hashlib.sha256(destination.read_bytes()).hexdigest() == digest
        assert [p.name for p in folder.iterdir()] == ["big.bin"], "a temporary file is left"
        assert set(watch.sizes_seen) == {BIG}, f"partial sizes seen: {watch.sizes_seen}"
        assert watch.first_seen is not None
        assert watch.first_seen >= killed
        print(
            f"\nworker SIGKILLed {killed - published:.2f} s after the job was published, "
            f"its temp file at {partial / BIG:.0%} of {BIG >> 20} MB; the other worker "
            f"completed it {completed - killed:.2f} s after the kill "
            f"({result.seconds:.2f} s copying, attempt {result.attempts}); destination "
            f"polled {watch.polls} times, never partial"
        )
    finally:
        stop.set()
        await asyncio.gather(poller, return_exceptions=True)
        for agent in agents:
            if agent.returncode is None:
                agent.terminate()
                try:
                    await asyncio.wait_for(agent.wait(), 30)
                except TimeoutError:
                    agent.kill()
                    await agent.wait()
        await observer.delete_queue(work_queue(node))
        await observer.close()
