"""Transfer progress, end to end: the message, the worker's rate-limited events from real
copies (sftp against the real sshd, and local), on the in-memory bus and on RabbitMQ, and
the facade's ``watch_progress``."""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from jupiter_providers import transfer_progress
from jupiter_providers.copy_job import CopyJob
from jupiter_providers.local_copy import CHUNK_BYTES, LocalEngine
from jupiter_providers.transfer_progress import ProgressReporter

from jupiter_bus import JupiterInterface
from jupiter_bus.errors import InvalidName, MessageError
from jupiter_bus.facade import Watch
from jupiter_bus.messages import TransferProgress, TransferResult, decode, encode
from jupiter_bus.topology import transfer_done_key, transfer_progress_key
from jupiter_bus.transport import Subscription, Transport, connect
from jupiter_bus.transport.memory import MemoryTransport, drop_memory_broker
from jupiter_bus.transport.values import Outgoing

from .sshd import SshServer
from .test_transfer_worker import Worker, request_body, worker_options

WAIT = 60.0
QUIET = 0.5  # seconds of silence after the result in which no progress may arrive
REQUEST_ID = "9d2f4e61-7a3b-4c8d-9e0f-1a2b3c4d5e6f"


# -- the message -------------------------------------------------------------------------


def test_a_valid_progress_is_built_and_round_trips() -> None:
    progress = TransferProgress(
        request_id=REQUEST_ID, node="node1", bytes_done=524_288, bytes_total=1_048_576
    )
    assert decode(encode(progress)) == progress
    assert decode(encode(progress), TransferProgress) == progress
    wire = orjson.loads(encode(progress))
    assert (wire["type"], wire["bytes_done"], wire["bytes_total"]) == (
        "transfer.progress",
        524_288,
        1_048_576,
    )


def test_an_unknown_total_is_omitted_on_the_wire_and_allows_any_count() -> None:
    progress = TransferProgress(request_id=REQUEST_ID, node="node1", bytes_done=10**12)
    assert "bytes_total" not in orjson.loads(encode(progress))
    assert decode(encode(progress)) == progress


@pytest.mark.parametrize(("done", "total"), [(0, 0), (5, 5), (0, 7)])
def test_bytes_done_up_to_the_total_is_accepted(done: int, total: int) -> None:
    progress = TransferProgress(request_id=REQUEST_ID, node="n", bytes_done=done, bytes_total=total)
    assert (progress.bytes_done, progress.bytes_total) == (done, total)


def test_bytes_done_above_the_total_is_refused_on_bytes_done() -> None:
    with pytest.raises(MessageError) as built:
        TransferProgress(request_id=REQUEST_ID, node="n", bytes_done=11, bytes_total=10)
    assert built.value.field == "bytes_done"
    body = orjson.loads(encode(TransferProgress(request_id=REQUEST_ID, node="n", bytes_done=1)))
    with pytest.raises(MessageError) as read:
        decode(orjson.dumps(body | {"bytes_done": 11, "bytes_total": 10}))
    assert read.value.field == "bytes_done"


@pytest.mark.parametrize(
    ("name", "value"),
    [("request_id", "job-1"), ("node", "a.b"), ("bytes_done", -1), ("bytes_total", 1.5)],
)
def test_a_bad_field_is_named(name: str, value: Any) -> None:
    fields: dict[str, Any] = {"request_id": REQUEST_ID, "node": "n", "bytes_done": 0}
    with pytest.raises(MessageError) as info:
        TransferProgress(**(fields | {name: value}))
    assert info.value.field == name


@pytest.mark.parametrize("make_key", [transfer_done_key, transfer_progress_key])
@pytest.mark.parametrize("name", ["node.1", "node 1", "*", ""])
def test_the_routing_key_is_checked_like_transfer_done(
    make_key: Callable[[str], str], name: str
) -> None:
    with pytest.raises(InvalidName):
        make_key(name)


def test_progress_goes_to_transfer_progress_node() -> None:
    assert transfer_progress_key("node1") == "transfer.progress.node1"


# -- the worker ------------------------------------------------------------------------------


@pytest.fixture
async def make_worker(
    transport: Transport, ssh_server: SshServer, tmp_path: Path, unique: str
) -> AsyncIterator[Callable[..., Awaitable[Worker]]]:
    """Start transfer workers (an agent each) on ``transport``, on one test node."""
    workers: list[Worker] = []

    async def factory(**overrides: Any) -> Worker:
        options = worker_options(ssh_server, tmp_path, **overrides)
        worker = Worker(transport, f"p-{unique}", options)
        await worker.start()
        workers.append(worker)
        return worker

    yield factory
    for worker in workers:
        await worker.stop()
    await transport.delete_queue(f"jupiter.transfer.p-{unique}")


@pytest.fixture
def remote_dir(ssh_server: SshServer, unique: str) -> Path:
    folder = ssh_server.home / f"progress-{unique}"
    folder.mkdir()
    stat = ssh_server.home.stat()
    os.chown(folder, stat.st_uid, stat.st_gid)
    return folder


def big_file(folder: Path, mib: int) -> Path:
    path = folder / f"big-{mib}.bin"
    path.write_bytes(os.urandom(mib << 20))
    return path


async def run_watching(
    worker: Worker, body: bytes
) -> tuple[TransferResult, list[TransferProgress], list[TransferProgress]]:
    """Run a job and return its result, the progress events before it and any after it."""
    request_id = orjson.loads(body)["id"]
    keys = [transfer_progress_key(worker.node), transfer_done_key(worker.node)]
    before: list[TransferProgress] = []
    after: list[TransferProgress] = []
    async with worker.transport.subscribe(keys) as feed:
        result = await worker.run(body, timeout=WAIT)
        done = False
        while not done:
            message = decode((await asyncio.wait_for(anext(feed), WAIT)).body)
            if isinstance(message, TransferResult):
                done = message.request_id == request_id
            elif isinstance(message, TransferProgress) and message.request_id == request_id:
                before.append(message)
        after.extend(await _progress_within(feed, QUIET, request_id))
    return result, before, after


async def _progress_within(
    feed: Subscription, seconds: float, request_id: str
) -> list[TransferProgress]:
    found: list[TransferProgress] = []
    try:
        async with asyncio.timeout(seconds):
            async for envelope in feed:
                message = decode(envelope.body)
                if isinstance(message, TransferProgress) and message.request_id == request_id:
                    found.append(message)
    except TimeoutError:
        pass
    return found


def check_events(
    events: list[TransferProgress], result: TransferResult, size: int, interval: float
) -> None:
    assert result.ok, result.error
    assert result.bytes == size
    assert len(events) >= 3, f"only {len(events)} progress events"
    assert events[0].bytes_done < size  # the first comes while the copy runs
    done = [e.bytes_done for e in events]
    assert done == sorted(done), done
    assert done[-1] > 0
    for event in events:
        assert event.bytes_total == size
        assert event.bytes_done <= size
        assert (event.request_id, event.node) == (result.request_id, result.node)
    # Rate-limited in the worker (not one per chunk): at most one per interval, the first
    # an interval into the copy.
    assert len(events) <= 1 + result.seconds / interval, (len(events), result.seconds)


@pytest.mark.parametrize("engine", ["sftp", "scp"])
async def test_ssh_copy_reports_progress_until_its_result(
    make_worker: Callable[..., Awaitable[Worker]],
    ssh_server: SshServer,
    remote_dir: Path,
    tmp_path: Path,
    engine: str,
) -> None:
    worker = await make_worker(progress_interval=0.01)
    source = big_file(tmp_path, 32)
    destination = remote_dir / "big.bin"
    result, events, after = await run_watching(
        worker, request_body(ssh_server, source, str(destination), engine=engine)
    )
    check_events(events, result, source.stat().st_size, 0.01)
    assert after == []
    assert destination.stat().st_size == source.stat().st_size


async def test_local_copy_reports_progress_until_its_result(
    make_worker: Callable[..., Awaitable[Worker]], tmp_path: Path
) -> None:
    worker = await make_worker(progress_interval=0.002)
    source = big_file(tmp_path, 64)
    destination = tmp_path / "out" / "big.bin"
    body = request_body(None, source, str(destination), engine="local", create_dirs=True)
    result, events, after = await run_watching(worker, body)
    check_events(events, result, source.stat().st_size, 0.002)
    assert after == []
    assert destination.read_bytes() == source.read_bytes()


async def test_openssh_scp_reports_only_the_start(
    make_worker: Callable[..., Awaitable[Worker]],
    ssh_server: SshServer,
    remote_dir: Path,
    tmp_path: Path,
) -> None:
    worker = await make_worker(progress_interval=0.001)
    source = big_file(tmp_path, 4)
    result, events, after = await run_watching(
        worker, request_body(ssh_server, source, str(remote_dir / "o.bin"), engine="openssh-scp")
    )
    assert result.ok, result.error
    assert [(e.bytes_done, e.bytes_total) for e in events] == [(0, source.stat().st_size)]
    assert after == []


@pytest.mark.parametrize("engine", ["sftp", "local"])
async def test_progress_interval_zero_sends_no_progress(
    make_worker: Callable[..., Awaitable[Worker]],
    ssh_server: SshServer,
    remote_dir: Path,
    tmp_path: Path,
    engine: str,
) -> None:
    worker = await make_worker(progress_interval=0)
    source = big_file(tmp_path, 8)
    result, events, after = await run_watching(
        worker, request_body(ssh_server, source, str(remote_dir / "quiet.bin"), engine=engine)
    )
    assert result.ok, result.error
    assert events == after == []


async def test_a_refused_job_sends_no_progress(
    make_worker: Callable[..., Awaitable[Worker]],
    ssh_server: SshServer,
    remote_dir: Path,
    tmp_path: Path,
) -> None:
    worker = await make_worker(progress_interval=0.01)
    source = big_file(tmp_path, 1)
    late = request_body(ssh_server, source, str(remote_dir / "late.bin"), deadline=1_000_000.0)
    missing = request_body(ssh_server, tmp_path / "nope.bin", str(remote_dir / "nope.bin"))
    for body, kind in ((late, "timeout"), (missing, "not_found")):
        result, events, after = await run_watching(worker, body)
        assert result.error is not None
        assert result.error.kind == kind
        assert events == after == []


async def test_the_profilers_own_probe_jobs_send_no_progress(
    make_worker: Callable[..., Awaitable[Worker]],
    ssh_server: SshServer,
    remote_dir: Path,
    tmp_path: Path,
) -> None:
    worker = await make_worker(progress_interval=0.001)
    assert worker.agent is not None
    assert worker.agent.context is not None
    source = big_file(tmp_path, 4)
    body = request_body(ssh_server, source, str(remote_dir / "probe.bin"))
    with worker.agent.context.granting(orjson.loads(body)["id"], str(source)):
        result, events, after = await run_watching(worker, body)
    assert result.ok, result.error
    assert events == after == []
    _, events, _ = await run_watching(worker, request_body(ssh_server, source, "probe2.bin"))
    assert events, "the same job, not granted, reports progress"


async def test_a_small_sftp_file_reports_its_start_and_its_end(
    make_worker: Callable[..., Awaitable[Worker]],
    ssh_server: SshServer,
    remote_dir: Path,
    tmp_path: Path,
) -> None:
    worker = await make_worker(progress_interval=0.0001)
    source = tmp_path / "small.bin"
    source.write_bytes(os.urandom(10_000))
    result, events, after = await run_watching(
        worker, request_body(ssh_server, source, str(remote_dir / "small.bin"))
    )
    assert result.ok, result.error
    assert events, "not even the start was reported"
    assert events[0].bytes_done <= 10_000
    assert all(e.bytes_total == 10_000 for e in events)
    assert after == []


# -- the local engine's chunks -----------------------------------------------------------------


@pytest.mark.parametrize("sendfile", [True, False], ids=["sendfile", "buffered"])
async def test_the_local_engine_reports_each_chunk_on_the_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sendfile: bool
) -> None:
    if not sendfile:

        def refuse(*_: object) -> int:
            raise OSError(errno.EINVAL, "sendfile refused")

        monkeypatch.setattr(os, "sendfile", refuse)
    source = tmp_path / "src.bin"
    source.write_bytes(os.urandom(5 * CHUNK_BYTES + 123))
    loop_thread = threading.get_ident()
    reports: list[tuple[int, int]] = []
    job = CopyJob(
        host="127.0.0.1",
        port=22,
        user="nobody",
        source=str(source),
        destination=str(tmp_path / "dst.bin"),
        idempotency_key="local-progress",
        progress=lambda done: reports.append((done, threading.get_ident())),
    )
    await LocalEngine().copy(job)
    assert [done for done, _ in reports] == [
        *(n * CHUNK_BYTES for n in range(1, 6)),
        5 * CHUNK_BYTES + 123,
    ]
    assert {thread for _, thread in reports} == {loop_thread}
    assert (tmp_path / "dst.bin").read_bytes() == source.read_bytes()


# -- the reporter on its own ------------------------------------------------------------------


class GatedTransport(MemoryTransport):
    """An in-memory bus whose progress publishes wait for ``gate`` (or fail with ``error``)."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.gate = asyncio.Event()
        self.error: Exception | None = None
        self.sent: list[TransferProgress] = []

    async def _send(self, message: Outgoing) -> None:
        if message.routing_key.startswith("transfer.progress."):
            await self.gate.wait()
            if self.error is not None:
                raise self.error
            self.sent.append(decode(message.body, TransferProgress))
        await super()._send(message)


@pytest.fixture
async def gated(unique: str) -> Any:
    url = f"memory://progress-{unique}"
    transport = GatedTransport(url)
    await transport.connect()
    yield transport
    await transport.close()
    drop_memory_broker(url)


async def test_an_update_is_skipped_while_the_previous_is_still_being_sent(
    gated: GatedTransport,
) -> None:
    reporter = ProgressReporter(gated, "n1", REQUEST_ID, total=1000, interval=0)
    reporter.start()
    await asyncio.sleep(0)
    for done in range(1, 101):
        reporter.update(done)  # the start is still in flight: all skipped
    assert (reporter.published, reporter.skipped) == (1, 100)
    assert len([t for t in asyncio.all_tasks() if "progress" in t.get_name()]) == 1
    gated.gate.set()
    await asyncio.sleep(0.01)
    reporter.update(500)
    await reporter.close()
    assert [p.bytes_done for p in gated.sent] == [0, 500]
    reporter.update(900)  # closed: nothing more
    await asyncio.sleep(0.01)
    assert len(gated.sent) == 2


async def test_a_copy_shorter_than_the_interval_sends_no_progress(
    gated: GatedTransport,
) -> None:
    gated.gate.set()
    reporter = ProgressReporter(gated, "n1", REQUEST_ID, total=None, interval=3600)
    reporter.start()
    for done in range(1, 1000):
        reporter.update(done)
        await asyncio.sleep(0)
    await reporter.close()
    assert gated.sent == []
    assert reporter.published == 0


async def test_the_first_event_comes_an_interval_in_with_the_bytes_done_by_then(
    gated: GatedTransport,
) -> None:
    gated.gate.set()
    reporter = ProgressReporter(gated, "n1", REQUEST_ID, total=1000, interval=0.2)
    reporter.start()
    reporter.update(100)  # too early: held back
    await asyncio.sleep(0.02)
    assert gated.sent == []
    await asyncio.sleep(0.28)  # announced at 0.2 s with what was done by then
    assert [p.bytes_done for p in gated.sent] == [100]
    reporter.update(120)  # within an interval of the announcement: held back
    await asyncio.sleep(0.25)
    reporter.update(150)  # an interval after it: due
    await reporter.close()
    assert [p.bytes_done for p in gated.sent] == [100, 150]


async def test_a_failing_publish_is_logged_at_debug_and_ignored(
    gated: GatedTransport, caplog: pytest.LogCaptureFixture
) -> None:
    gated.error = OSError("broker gone")
    gated.gate.set()
    reporter = ProgressReporter(gated, "n1", REQUEST_ID, total=10, interval=0)
    with caplog.at_level(logging.DEBUG, logger=transfer_progress.__name__):
        reporter.start()
        await asyncio.sleep(0.01)
        reporter.update(20)  # beyond the total (the file grew): clamped, not refused
        await reporter.close()
    failures = [r for r in caplog.records if "not published" in r.getMessage()]
    assert len(failures) == 2
    assert all(r.levelno == logging.DEBUG for r in failures)


async def test_close_gives_up_on_a_publish_that_hangs(
    gated: GatedTransport, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(transfer_progress, "FLUSH_SECONDS", 0.05)
    reporter = ProgressReporter(gated, "n1", REQUEST_ID, total=10, interval=0)
    reporter.start()
    await asyncio.sleep(0)
    await asyncio.wait_for(reporter.close(), 1.0)
    assert not [t for t in asyncio.all_tasks() if "progress" in t.get_name()]
    assert gated.sent == []


async def test_a_grown_source_is_reported_at_most_at_its_total(gated: GatedTransport) -> None:
    gated.gate.set()
    reporter = ProgressReporter(gated, "n1", REQUEST_ID, total=10, interval=0)
    reporter.start()
    await asyncio.sleep(0.01)
    reporter.update(25)
    await reporter.close()
    assert [(p.bytes_done, p.bytes_total) for p in gated.sent] == [(0, 10), (10, 10)]


# -- the facade ---------------------------------------------------------------------------------


async def test_the_facade_follows_progress_of_one_node_or_all(
    make_worker: Callable[..., Awaitable[Worker]],
    transport: Transport,
    ssh_server: SshServer,
    remote_dir: Path,
    tmp_path: Path,
) -> None:
    worker = await make_worker(progress_interval=0.01)
    source = big_file(tmp_path, 32)
    size = source.stat().st_size
    async with JupiterInterface(transport, node=worker.node, snapshot=False) as bus:
        mine, everyone = bus.watch_progress(node=worker.node), bus.watch_progress()
        others = bus.watch_progress(node="someone-else")
        readers = [asyncio.create_task(_collect(feed)) for feed in (mine, everyone, others)]
        async with bus.watch_transfers(node=worker.node) as results:
            body = request_body(ssh_server, source, str(remote_dir / "watched.bin"))
            request_id = orjson.loads(body)["id"]
            result = await worker.run(body, timeout=WAIT)
            assert (await asyncio.wait_for(anext(results), WAIT)).request_id == request_id
        await asyncio.sleep(0.05)  # the readers take what the pump handed them
        for feed in (mine, everyone, others):
            feed.close()
        seen_mine, seen_all, seen_others = await asyncio.gather(*readers)
    assert result.ok, result.error
    assert len(seen_mine) >= 2, "the watch saw (almost) no progress"
    assert seen_mine[0].bytes_done < size
    done = [p.bytes_done for p in seen_mine]
    assert done == sorted(done)
    assert all((p.request_id, p.bytes_total) == (request_id, size) for p in seen_mine)
    # everyone's: this job's too (a shared broker may carry other runs' jobs as well)
    assert request_id in {p.request_id for p in seen_all}
    assert {p.request_id for p in seen_all if p.node == worker.node} == {request_id}
    assert seen_others == []


async def _collect(feed: Watch[TransferProgress]) -> list[TransferProgress]:
    return [progress async for progress in feed]


async def test_watch_progress_ends_when_the_interface_closes(unique: str) -> None:
    url = f"memory://progress-end-{unique}"
    async with await connect(url) as transport:
        async with JupiterInterface(transport, snapshot=False) as bus:
            feed = bus.watch_progress()
        with pytest.raises(StopAsyncIteration):
            await asyncio.wait_for(anext(feed), 1.0)
    drop_memory_broker(url)
