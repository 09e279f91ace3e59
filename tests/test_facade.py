"""JupiterInterface against both transports: waiting reads, transfers, feeds, cancellation.

Node names carry the test's unique word: on RabbitMQ other tests (and other people's
runs) may publish on ``jupiter.events`` at the same time.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import pytest

from jupiter_bus.agent import Agent
from jupiter_bus.batch import LinkBatch
from jupiter_bus.errors import QueueMismatch, TransportError
from jupiter_bus.facade import (
    InterfaceClosed,
    InvalidRequest,
    JupiterInterface,
    NoReply,
    NotFound,
    TransferFailed,
    Unreachable,
)
from jupiter_bus.messages import (
    LinkCost,
    Message,
    ResourceSample,
    TransferError,
    TransferRequest,
    TransferResult,
    decode,
    encode,
)
from jupiter_bus.state import NetworkData, StaleState, StateUnavailable
from jupiter_bus.topology import (
    EVENTS_EXCHANGE,
    network_key,
    resource_key,
    transfer_done_key,
    work_queue,
)
from jupiter_bus.transport import Transport, connect
from jupiter_bus.transport.base import HeaderValue, QueueType

from .conftest import AMQP_URL, TransportFactory, eventually

WAIT = 10.0


def cost(src: str, dst: str, c: float = 40.0, b: float = 0.002) -> LinkCost:
    return LinkCost(
        src=src, dst=dst, a=0.0, b=b, c=c, samples=10, r2=0.99, min_kbit=8.0, max_kbit=8e4
    )


def sample(
    node: str, cpu: float = 12.5, host: str | None = None, ssh_port: int | None = None
) -> ResourceSample:
    return ResourceSample(
        node=node,
        cpu_percent=cpu,
        cpu_count=4,
        memory_percent=30.0,
        memory_total_bytes=8_000_000_000,
        memory_available_bytes=5_600_000_000,
        host=host,
        ssh_port=ssh_port,
    )


def done(node: str, request_id: str | None = None, ok: bool = True) -> TransferResult:
    return TransferResult(
        request_id=request_id or str(uuid.uuid4()),
        node=node,
        ok=ok,
        bytes=10 if ok else 0,
        seconds=0.1,
        attempts=1,
        error=None if ok else TransferError("remote", "disk full"),
    )


async def publish(transport: Transport, *messages: Message) -> None:
    """Publish events as a provider on another node would."""
    for message in messages:
        if isinstance(message, LinkCost):
            key = network_key(message.src, message.dst)
        elif isinstance(message, ResourceSample):
            key = resource_key(message.node)
        else:
            assert isinstance(message, TransferResult)
            key = transfer_done_key(message.node)
        await transport.publish(EVENTS_EXCHANGE, key, encode(message))


@pytest.fixture
async def bus(bus_url: str) -> AsyncIterator[JupiterInterface]:
    """An interface that connects (and closes) its own transport."""
    async with JupiterInterface(bus_url) as interface:
        yield interface


@pytest.fixture
def names(unique: str) -> tuple[str, str, str]:
    return (f"a-{unique}", f"b-{unique}", f"c-{unique}")


def started(coroutine: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
    return asyncio.ensure_future(coroutine)


# -- state reads ------------------------------------------------------------------------


async def test_get_network_data_waits_until_the_nodes_asked_for_arrive(
    bus: JupiterInterface, transport: Transport, names: tuple[str, str, str]
) -> None:
    a, b, _ = names
    waiting = started(bus.get_network_data(nodes=[a, b], timeout=WAIT))
    await publish(transport, cost(a, b, c=40.0))
    await asyncio.sleep(0.1)
    assert not waiting.done()  # b -> a still missing
    await publish(transport, cost(b, a, c=7.0))
    data = await asyncio.wait_for(waiting, WAIT)
    assert data.cost_ms(a, b, 1000.0) == pytest.approx(42.0)
    assert data.cost_ms(b, a, 0.0) == 7.0
    again = await bus.get_network_data(links=[(a, b)], timeout=0)  # known: at once
    assert again.version >= data.version


async def test_get_network_data_times_out_naming_the_missing_links(
    bus: JupiterInterface, transport: Transport, names: tuple[str, str, str]
) -> None:
    a, b, c = names
    await publish(transport, cost(a, b), cost(b, a))
    await bus.get_network_data(nodes=[a, b], timeout=WAIT)
    start = time.monotonic()
    with pytest.raises(StateUnavailable) as caught:
        await bus.get_network_data(nodes=[a, b, c], timeout=0.3)
    assert 0.25 <= time.monotonic() - start < 2.0
    message = str(caught.value)
    assert "4 of 6 requested links" in message
    assert f"{a}->{c}" in message
    assert f"never heard of: {c}" in message
    assert f"{a}->{c}" in caught.value.missing
    assert isinstance(caught.value, TimeoutError)


async def test_stale_links_are_reported_and_all_stale_raises(
    bus: JupiterInterface, transport: Transport, names: tuple[str, str, str]
) -> None:
    a, b, _ = names
    await publish(transport, cost(a, b))
    await bus.get_network_data(links=[(a, b)], timeout=WAIT)
    await asyncio.sleep(0.3)
    with pytest.raises(StaleState) as caught:
        await bus.get_network_data(links=[(a, b)], max_age=0.2, timeout=0.1)
    assert caught.value.stale == (f"{a}->{b}",)
    assert "older than max_age=0.2 s" in str(caught.value)
    assert isinstance(caught.value.data, NetworkData)
    assert caught.value.data.has_link(a, b)
    await publish(transport, cost(b, a))
    data = await bus.get_network_data(nodes=[a, b], max_age=0.2, timeout=WAIT)
    assert (a, b) in data.stale
    assert (b, a) not in data.stale


async def test_first_network_state_is_awaited_without_naming_anything(unique: str) -> None:
    url = f"memory://first-{unique}"
    async with JupiterInterface(url) as bus, JupiterInterface(url) as other:
        waiting = started(bus.get_network_data(timeout=WAIT))
        await asyncio.sleep(0.05)
        assert not waiting.done()
        await publish(other.transport, cost("n1", "n2"))
        data = await asyncio.wait_for(waiting, WAIT)
        assert data.nodes == ("n1", "n2")
        with pytest.raises(StateUnavailable, match="nothing has been received"):
            await bus.get_resource_data(timeout=0.05)
        assert len(await bus.get_resource_data(nodes=[], timeout=0)) == 0  # nothing asked
        assert (await bus.get_network_data(nodes=["n1"], timeout=0)).nodes == ("n1", "n2")


async def test_get_resource_data_waits_then_times_out_naming_missing_nodes(
    bus: JupiterInterface, transport: Transport, names: tuple[str, str, str]
) -> None:
    a, b, c = names
    waiting = started(bus.get_resource_data(nodes=[a, b], timeout=WAIT))
    await publish(transport, sample(a, cpu=10.0, host="10.0.0.1"))
    await asyncio.sleep(0.1)
    assert not waiting.done()
    await publish(transport, sample(b, cpu=20.0))
    data = await asyncio.wait_for(waiting, WAIT)
    assert data[a].cpu_percent == 10.0
    assert data[b].cpu_percent == 20.0
    assert data.ips()[a] == "10.0.0.1"
    assert data.to_jupiter()[b]["cpu"] == 20.0
    with pytest.raises(StateUnavailable) as caught:
        await bus.get_resource_data(nodes=[a, c], timeout=0.2)
    assert f"1 of 2 requested nodes: {c}" in str(caught.value)
    assert caught.value.missing == (c,)


async def test_stale_resources_are_reported_not_served_silently(
    bus: JupiterInterface, transport: Transport, names: tuple[str, str, str]
) -> None:
    a, b, _ = names
    await publish(transport, sample(a))
    await bus.get_resource_data(nodes=[a], timeout=WAIT)
    await asyncio.sleep(0.3)
    with pytest.raises(StaleState, match=a):
        await bus.get_resource_data(nodes=[a], max_age=0.2, timeout=0.1)
    await publish(transport, sample(b))
    data = await bus.get_resource_data(nodes=[a, b], max_age=0.2, timeout=WAIT)
    assert a in data.stale
    assert b not in data.stale


async def test_a_malformed_event_is_dead_lettered_and_the_feed_goes_on(
    bus: JupiterInterface, transport: Transport, names: tuple[str, str, str]
) -> None:
    a, _, _ = names
    await transport.publish(EVENTS_EXCHANGE, resource_key(a), b"not json")
    await transport.publish(EVENTS_EXCHANGE, resource_key(a), b'{"v": 9, "type": "resource"}')
    await publish(transport, sample(a, cpu=3.0))
    data = await bus.get_resource_data(nodes=[a], timeout=WAIT)
    assert data[a].cpu_percent == 3.0


async def test_reading_state_copies_nothing_while_nothing_changes(unique: str) -> None:
    # its speed (microseconds) is measured by bench/facade.py, not here
    async with JupiterInterface(f"memory://fast-{unique}") as bus:
        for i in range(100):
            bus.network.apply(cost(f"n{i}", f"n{(i + 1) % 100}"))
        first = await bus.get_network_data()
        second = await bus.get_network_data()
        assert first.version == second.version
        assert np.shares_memory(first.params, second.params)


async def test_a_waiting_read_lets_updates_write_in_place(unique: str) -> None:
    """A read waiting for more links holds no snapshot between wake-ups: otherwise each
    update would copy every array (60 MB at 1,000 nodes; a late joiner took 11 s)."""

    def address(data: NetworkData) -> int:
        return int(data.params.__array_interface__["data"][0])

    async with JupiterInterface(f"memory://inplace-{unique}", snapshot=False) as bus:
        state = bus.network
        state.apply(cost("n0", "n1"))
        state.add_node("n2")
        before = address(state.snapshot())
        waiter = asyncio.create_task(bus.get_network_data(nodes=["n0", "n1", "n2"], timeout=WAIT))
        for k in range(5):
            await asyncio.sleep(0.01)  # the waiter wakes, judges, waits again
            state.apply_batch(LinkBatch.from_costs([cost("n0", "n1", c=float(k))]))
            state.apply(cost("n1", "n0", c=float(k)))
            assert address(state.snapshot()) == before, f"arrays copied at update {k}"
        assert not waiter.done()
        state.apply_batch(
            LinkBatch.from_costs(
                [cost(s, d) for s in ("n0", "n1", "n2") for d in ("n0", "n1", "n2") if s != d]
            )
        )
        data = await asyncio.wait_for(waiter, WAIT)
    assert data.link_count == 6


# -- transfers --------------------------------------------------------------------------


class Worker:
    """A node agent running the transfer provider with the local-copy engine."""

    def __init__(self, transport: Transport, node: str, state_dir: Path) -> None:
        options = {"engine": "local", "state_dir": str(state_dir), "retry_initial_seconds": 0.01}
        self.agent = Agent(node, transport, {"transfer": options}, grace=5)
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.task = asyncio.create_task(self.agent.run())
        await asyncio.wait_for(self.agent.started(), WAIT)
        provider = self.agent.provider("transfer")
        await eventually(lambda: provider.health().detail.startswith("consuming"))

    async def stop(self) -> None:
        if self.task is not None:
            self.agent.stop()
            await asyncio.wait_for(self.task, WAIT)


@pytest.fixture
async def start_worker(
    make_transport: TransportFactory, tmp_path: Path
) -> AsyncIterator[Callable[[str], Awaitable[Worker]]]:
    workers: list[Worker] = []
    transports: list[Transport] = []

    async def start(node: str) -> Worker:
        transport = await make_transport()
        worker = Worker(transport, node, tmp_path / f"state-{node}")
        await worker.start()
        workers.append(worker)
        transports.append(transport)
        return worker

    yield start
    for worker, transport in zip(workers, transports, strict=True):
        await worker.stop()
        await transport.delete_queue(work_queue(worker.agent.node))


@pytest.fixture
def source(tmp_path: Path) -> Path:
    path = tmp_path / "source data.bin"
    path.write_bytes(b"x" * 50_000)
    return path


async def test_data_transfer_runs_on_the_worker_and_returns_its_result(
    bus_url: str,
    start_worker: Callable[[str], Awaitable[Worker]],
    source: Path,
    tmp_path: Path,
    unique: str,
) -> None:
    node = f"w-{unique}"
    await start_worker(node)
    destination = tmp_path / "in" / "copy.bin"
    async with JupiterInterface(bus_url, node=node) as bus:
        result = await bus.data_transfer(
            "127.0.0.1",
            "nobody",
            None,
            str(source),
            str(destination),
            engine="local",
            create_dirs=True,
            timeout=WAIT,
        )
    assert result.ok
    assert result.bytes == 50_000
    assert result.node == node
    assert destination.read_bytes() == source.read_bytes()


async def test_failed_transfer_raises_its_kind_without_the_password(
    bus_url: str,
    start_worker: Callable[[str], Awaitable[Worker]],
    tmp_path: Path,
    unique: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    node = f"w-{unique}"
    await start_worker(node)
    secret = f"pw-{unique}-hunter2"
    async with JupiterInterface(bus_url) as bus:
        with pytest.raises(NotFound) as caught:
            await bus.data_transfer(
                "127.0.0.1",
                "nobody",
                secret,
                str(tmp_path / "no such file"),
                str(tmp_path / "out.bin"),
                via=node,
                engine="local",
                timeout=WAIT,
            )
        shown = repr(bus)
    error = caught.value
    assert isinstance(error, TransferFailed)
    assert error.kind == "not_found"
    assert error.result is not None
    assert error.result.error is not None
    assert error.result.error.kind == "not_found"
    assert error.node == node
    assert error.job_id == error.result.request_id
    # Our own log lines (aiormq's DEBUG frame dumps show bodies: see the sealing option).
    ours = "\n".join(
        record.getMessage()
        for record in caplog.records
        if record.name.startswith(("jupiter_bus", "jupiter_providers"))
    )
    assert "job" in ours
    for text in (str(error), repr(error), repr(error.result), shown, ours):
        assert secret not in text


async def test_transfer_to_a_node_without_worker_is_unreachable_at_once(
    bus_url: str, unique: str
) -> None:
    ghost = f"ghost-{unique}"
    async with JupiterInterface(bus_url, node=ghost) as bus:
        start = time.monotonic()
        with pytest.raises(Unreachable) as caught:
            await bus.data_transfer("127.0.0.1", "u", "secret", "/a", "/b", timeout=30)
        assert time.monotonic() - start < 2.0
        assert caught.value.result is None
        assert caught.value.node == ghost
        assert f"jupiter.transfer.{ghost}" in str(caught.value)
        with pytest.raises(Unreachable):
            await bus.submit_transfer("127.0.0.1", "u", None, "/a", "/b")


async def test_a_job_to_a_stopped_node_expires_instead_of_running_later(
    bus_url: str,
    transport: Transport,
    start_worker: Callable[[str], Awaitable[Worker]],
    source: Path,
    tmp_path: Path,
    unique: str,
) -> None:
    node = f"down-{unique}"
    await transport.declare_work_queue(node)  # its agent ran once, and is now down
    waited, submitted = tmp_path / "waited.bin", tmp_path / "submitted.bin"
    async with JupiterInterface(bus_url, node=node) as bus:
        start = time.monotonic()
        with pytest.raises(NoReply):
            await bus.data_transfer(
                "127.0.0.1", "u", None, str(source), str(waited), engine="local", timeout=0.5
            )
        assert time.monotonic() - start < 2.0
        job = await bus.submit_transfer(
            "127.0.0.1",
            "u",
            None,
            str(source),
            str(submitted),
            engine="local",
            deadline=time.time() + 0.5,
        )
        await asyncio.sleep(0.8)  # both past their deadline, still queued
        async with bus.watch_transfers(node=node) as results:
            await start_worker(node)
            # Expired in the queue: the worker never sees them, so not even a
            # "timeout" result comes (a worker refusing them would publish one).
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(anext(results), 1.0)
        with pytest.raises(NoReply):
            await bus.wait_transfer(job, timeout=0.2)
    assert not waited.exists()
    assert not submitted.exists()
    assert await transport.queue_length(work_queue(node)) == 0


async def test_a_late_job_with_a_clear_password_is_refused_not_dead_lettered(
    bus_url: str,
    transport: Transport,
    start_worker: Callable[[str], Awaitable[Worker]],
    source: Path,
    tmp_path: Path,
    unique: str,
) -> None:
    """Expiry would dead-letter the body as published, password included: such a job
    gets no TTL, and the worker that takes it late answers timeout without running it."""
    node = f"downpw-{unique}"
    await transport.declare_work_queue(node)
    target = tmp_path / "late.bin"
    async with JupiterInterface(bus_url, node=node) as bus:
        with pytest.raises(NoReply):
            await bus.data_transfer(
                "127.0.0.1", "u", "s3cret-pw", str(source), str(target), engine="local",
                timeout=0.3,
            )  # fmt: skip
        await asyncio.sleep(0.5)
        assert await transport.queue_length(work_queue(node)) == 1  # kept, not expired
        async with bus.watch_transfers(node=node) as results:
            await start_worker(node)
            result = await asyncio.wait_for(anext(results), 10.0)
    assert not result.ok
    assert result.error is not None
    assert result.error.kind == "timeout"
    assert result.attempts == 0
    assert not target.exists()


async def test_transfer_to_a_node_takes_its_address_from_its_resource_events(
    transport: Transport, bus_url: str, unique: str
) -> None:
    """The request carries the host and SSH port the destination announced."""
    worker, dest, mute = f"tw-{unique}", f"td-{unique}", f"tm-{unique}"
    queue = await transport.declare_work_queue(worker)
    seen: list[TransferRequest] = []

    async def answer_one() -> None:
        async with transport.consume(queue, prefetch=1) as jobs:
            delivery = await anext(jobs)
            request = decode(delivery.envelope.body, TransferRequest)
            seen.append(request)
            reply = TransferResult(
                request_id=request.id, node=worker, ok=True, bytes=3, seconds=0.1, attempts=1
            )
            assert delivery.envelope.reply_to is not None
            await transport.publish(
                "",
                delivery.envelope.reply_to,
                encode(reply),
                correlation_id=delivery.envelope.correlation_id,
            )
            await delivery.ack()

    try:
        async with JupiterInterface(bus_url, node=worker, snapshot=False) as bus:
            for node, host in ((dest, "10.1.2.3"), (mute, None)):
                announced = sample(node, 5.0, host=host, ssh_port=2222 if host else None)
                await transport.publish(EVENTS_EXCHANGE, resource_key(node), encode(announced))
            with pytest.raises(StateUnavailable, match=f"{mute}.*announced no host"):
                await bus.transfer_to(mute, "u", None, "/a", "/b", timeout=WAIT)
            with pytest.raises(StateUnavailable, match="nobody"):
                await bus.transfer_to(f"nobody-{unique}", "u", None, "/a", "/b", timeout=0.2)
            responder = asyncio.create_task(answer_one())
            result = await bus.transfer_to(dest, "u", "pw", "/a", "/b", timeout=WAIT)
            await asyncio.wait_for(responder, WAIT)
    finally:
        await transport.delete_queue(queue)
    assert result.ok
    assert [(r.host, r.port, r.user, r.source) for r in seen] == [("10.1.2.3", 2222, "u", "/a")]


async def test_transfer_needs_an_executing_node_and_a_valid_request(bus: JupiterInterface) -> None:
    with pytest.raises(InvalidRequest, match="via="):
        await bus.data_transfer("127.0.0.1", "u", None, "/a", "/b")
    with pytest.raises(InvalidRequest, match="host"):
        await bus.data_transfer("-oProxyCommand=x", "u", "s3cret", "/a", "/b", via="n1")
    with pytest.raises(InvalidRequest, match="executing node"):
        await bus.data_transfer("127.0.0.1", "u", None, "/a", "/b", via="bad.node")


async def test_submitted_job_is_collected_with_wait_transfer(
    bus_url: str,
    start_worker: Callable[[str], Awaitable[Worker]],
    source: Path,
    tmp_path: Path,
    unique: str,
) -> None:
    node = f"w-{unique}"
    await start_worker(node)
    async with JupiterInterface(bus_url, node=node) as bus:
        ok = await bus.submit_transfer(
            "h", "u", None, str(source), str(tmp_path / "ok.bin"), engine="local"
        )
        bad = await bus.submit_transfer(
            "h", "u", None, str(tmp_path / "missing"), str(tmp_path / "x"), engine="local"
        )
        assert bus.completion_queue == f"jupiter.completions.{bus.client_id}"
        result = await bus.wait_transfer(ok, timeout=WAIT)
        assert result.ok
        assert result.request_id == ok
        assert await bus.wait_transfer(ok, timeout=0) == result  # collected: same again
        failed = await bus.wait_transfer(bad, timeout=WAIT, check=False)
        assert failed.error is not None
        assert failed.error.kind == "not_found"
        with pytest.raises(NotFound):
            await bus.wait_transfer(bad, timeout=0)
        with pytest.raises(NoReply, match="may still run"):
            await bus.wait_transfer(str(uuid.uuid4()), timeout=0.1)
        queue = bus.completion_queue
        transport = bus.transport
        assert await transport.queue_length(queue) == 0
    assert (tmp_path / "ok.bin").read_bytes() == source.read_bytes()


async def test_another_interface_collects_results_from_the_same_completion_queue(
    bus_url: str,
    make_transport: TransportFactory,
    start_worker: Callable[[str], Awaitable[Worker]],
    source: Path,
    tmp_path: Path,
    unique: str,
) -> None:
    node = f"w-{unique}"
    queue = f"jupiter.completions.test-{unique}"
    admin = await make_transport()
    await admin.declare_work_queue(node)  # the worker is not running yet
    try:
        async with JupiterInterface(bus_url, node=node, completion_queue=queue) as first:
            job = await first.submit_transfer(
                "h", "u", None, str(source), str(tmp_path / "later.bin"), engine="local"
            )
        await start_worker(node)  # runs the job after the submitter has gone
        async with JupiterInterface(bus_url, completion_queue=queue) as second:
            result = await second.wait_transfer(job, timeout=WAIT)
        assert result.ok
        assert result.request_id == job
        assert (tmp_path / "later.bin").exists()
        assert await admin.queue_length(queue) == 0  # collected and acked
    finally:
        await admin.delete_queue(queue)


async def test_uncollected_results_stay_in_a_named_completion_queue(
    bus_url: str,
    make_transport: TransportFactory,
    start_worker: Callable[[str], Awaitable[Worker]],
    source: Path,
    tmp_path: Path,
    unique: str,
) -> None:
    node = f"w-{unique}"
    queue = f"jupiter.completions.test-{unique}"
    admin = await make_transport()
    await start_worker(node)
    try:
        async with JupiterInterface(bus_url, node=node, completion_queue=queue) as first:
            job = await first.submit_transfer(
                "h", "u", None, str(source), str(tmp_path / "f.bin"), engine="local"
            )
            await eventually(lambda: first.held_results == 1)  # arrived, not collected
        await eventually(lambda: (tmp_path / "f.bin").exists())
        async with JupiterInterface(bus_url, completion_queue=queue) as second:
            assert (await second.wait_transfer(job, timeout=WAIT)).ok
    finally:
        await admin.delete_queue(queue)


async def test_an_own_completion_queue_left_with_other_arguments_is_used_as_it_is(
    bus_url: str,
    make_transport: TransportFactory,
    start_worker: Callable[[str], Awaitable[Worker]],
    source: Path,
    tmp_path: Path,
    unique: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An earlier version declared ``jupiter.completions.<client_id>`` without
    ``x-expires``: the same client, upgraded, still gets its results through it. A named
    (shared) queue declared otherwise is refused with :class:`QueueMismatch`."""
    node = f"w-{unique}"
    client_id = f"up-{unique}"
    own = f"jupiter.completions.{client_id}"
    shared = f"jupiter.completions.shared-{unique}"
    admin = await make_transport()
    await admin.declare_queue(own)  # as an earlier version made it: no arguments
    await admin.declare_queue(shared, arguments={"x-expires": 60_000})
    await start_worker(node)
    try:
        async with JupiterInterface(bus_url, node=node, client_id=client_id) as bus:
            job = await bus.submit_transfer(
                "h", "u", None, str(source), str(tmp_path / "up.bin"), engine="local"
            )
            assert bus.completion_queue == own
            assert (await bus.wait_transfer(job, timeout=WAIT)).ok
        assert "using it as it is" in caplog.text
        with pytest.raises(QueueMismatch, match="must declare it alike") as refused:
            async with JupiterInterface(bus_url, node=node, completion_queue=shared):
                pass
        assert refused.value.queue == shared
        assert (await admin.queue_stats(shared)).messages == 0  # left as it was
    finally:
        await admin.delete_queue(own)
        await admin.delete_queue(shared)


@pytest.mark.amqp
@pytest.mark.parametrize(
    ("addresses", "chosen", "declared"),
    [(1, None, "classic"), (2, None, "quorum"), (2, "classic", "classic"), (1, "quorum", "quorum")],
)
async def test_completion_queue_is_quorum_when_the_url_names_a_cluster(
    addresses: int, chosen: QueueType | None, declared: QueueType, unique: str
) -> None:
    """Several broker addresses name a cluster, where a classic queue's results are out of
    reach while its one node is down: the completion queue is then a quorum queue, unless
    the caller chose its type."""
    host = urlsplit(AMQP_URL).netloc.rpartition("@")[2]
    url = AMQP_URL.replace(host, ",".join([host] * addresses), 1)
    queue = f"jupiter.completions.test-{unique}"
    quorum: dict[str, HeaderValue] = {"x-queue-type": "quorum"}
    admin = await connect(AMQP_URL, connection_name=f"completion type {unique}")
    try:
        async with JupiterInterface(
            url, completion_queue=queue, completion_queue_type=chosen, snapshot=False
        ):
            await admin.declare_queue(queue, arguments=quorum if declared == "quorum" else None)
            with pytest.raises(TransportError, match="declare it alike"):
                await admin.declare_queue(queue, arguments=None if declared == "quorum" else quorum)
    finally:
        await admin.delete_queue(queue)
        await admin.close()


def test_completion_queue_type_is_checked() -> None:
    with pytest.raises(ValueError, match="completion_queue_type"):
        JupiterInterface("memory://x", completion_queue_type="mirrored")  # type: ignore[arg-type]


async def test_a_second_answer_to_a_held_job_is_acked_not_kept(
    bus_url: str, make_transport: TransportFactory, unique: str
) -> None:
    """A rerun answered from its job store sends a job's result twice: one held copy is
    kept, the other acked, so the queue gets back one result, not two, on close."""
    queue = f"jupiter.completions.test-{unique}"
    admin = await make_transport()
    job = str(uuid.uuid4())
    result = TransferResult(request_id=job, node="n1", ok=True, bytes=3, seconds=0.1, attempts=1)
    try:
        async with JupiterInterface(bus_url, completion_queue=queue, snapshot=False) as bus:
            for _ in range(2):
                await admin.publish("", queue, encode(result), correlation_id=job)
            await eventually(lambda: bus.held_results == 1)
            await asyncio.sleep(0.2)  # the second answer has arrived too
            assert bus.held_results == 1
        await asyncio.sleep(0.5)  # what closing handed back is in the queue again
        assert await admin.queue_length(queue) == 1
    finally:
        await admin.delete_queue(queue)


# -- live feeds -------------------------------------------------------------------------


async def test_watch_network_filters_and_coalesces_per_link(
    bus: JupiterInterface, transport: Transport, names: tuple[str, str, str]
) -> None:
    a, b, c = names
    async with bus.watch_network(src=a) as updates:
        await publish(transport, cost(a, b, c=1.0), cost(b, a, c=9.0))
        await publish(transport, cost(a, c, c=3.0), cost(a, b, c=2.0))
        await eventually(lambda: updates.coalesced == 1)
        assert updates.pending == 2
        first = await asyncio.wait_for(anext(updates), WAIT)
        second = await asyncio.wait_for(anext(updates), WAIT)
    assert (first.dst, first.c) == (b, 2.0)  # latest value, first place in line
    assert (second.dst, second.c) == (c, 3.0)
    async with bus.watch_network(src=a, dst=c) as only:
        await publish(transport, cost(a, b, c=5.0), cost(a, c, c=6.0))
        update = await asyncio.wait_for(anext(only), WAIT)
        assert (update.dst, update.c) == (c, 6.0)
        assert only.pending == 0
    async with (
        bus.watch_network(links=[(a, b), (c, a)]) as pairs,
        bus.watch_network(src=[b, c], dst={a}) as into_a,
    ):
        await publish(transport, cost(a, c, c=7.0), cost(b, a, c=8.0), cost(c, a, c=9.0))
        await publish(transport, cost(a, b, c=10.0))
        got = [await asyncio.wait_for(anext(pairs), WAIT) for _ in range(2)]
        into = [await asyncio.wait_for(anext(into_a), WAIT) for _ in range(2)]
        assert pairs.pending == into_a.pending == 0
    assert [(u.src, u.dst, u.c) for u in got] == [(c, a, 9.0), (a, b, 10.0)]
    assert [(u.src, u.c) for u in into] == [(b, 8.0), (c, 9.0)]


async def test_watch_resources_and_transfers_filter_by_node(
    bus: JupiterInterface, transport: Transport, names: tuple[str, str, str]
) -> None:
    a, b, _ = names
    async with bus.watch_resources(node=a) as samples, bus.watch_transfers(node=b) as results:
        await publish(transport, sample(b, cpu=1.0), sample(a, cpu=2.0), sample(a, cpu=3.0))
        mine = done(b)
        await publish(transport, done(a), mine)
        got = await asyncio.wait_for(anext(samples), WAIT)
        assert (got.node, got.cpu_percent) in {(a, 2.0), (a, 3.0)}
        assert (await asyncio.wait_for(anext(results), WAIT)) == mine


async def test_a_slow_transfer_watch_keeps_only_the_newest_results(
    bus: JupiterInterface, transport: Transport, names: tuple[str, str, str]
) -> None:
    _, b, _ = names
    async with bus.watch_transfers(node=b, max_pending=3) as results:
        sent = [done(b) for _ in range(5)]
        await publish(transport, *sent)
        await eventually(lambda: results.dropped == 2)
        got = [await asyncio.wait_for(anext(results), WAIT) for _ in range(3)]
    assert got == sent[2:]


async def test_watches_end_when_the_interface_closes(bus_url: str, unique: str) -> None:
    async with JupiterInterface(bus_url) as bus:
        updates = bus.watch_network(src=f"quiet-{unique}")  # others may share the broker
        reader = started(anext(updates))
        await asyncio.sleep(0.05)
    with pytest.raises(StopAsyncIteration):
        await asyncio.wait_for(reader, WAIT)


# -- lifecycle and cancellation ---------------------------------------------------------


def owned_by(transport: Transport) -> set[Any]:
    """Subscriptions and consumers a transport still has open (both keep this set)."""
    owned = getattr(transport, "_owned", None)
    assert isinstance(owned, set)
    return owned


def reply_waiters(transport: Transport) -> dict[str, Any]:
    broker = getattr(transport, "broker", None)
    pending = broker.replies if broker is not None else getattr(transport, "_pending", None)
    assert isinstance(pending, dict)
    return pending


async def test_cancelling_any_wait_leaves_nothing_behind(
    transport: Transport, unique: str, names: tuple[str, str, str]
) -> None:
    a, _, _ = names
    idle = f"idle-{unique}"
    await transport.declare_work_queue(idle)  # routable, but nobody answers
    try:
        async with JupiterInterface(transport, node=idle) as bus:
            await bus.submit_transfer("h", "u", None, "/a", "/b")  # completion queue running
            with pytest.raises(NoReply):  # and the transport's reply channel is open
                await bus.data_transfer("h", "u", None, "/a", "/b", timeout=0.05)
            baseline = asyncio.all_tasks()
            updates = bus.watch_resources()
            waits: list[Coroutine[Any, Any, Any]] = [
                bus.get_network_data(nodes=[a, "nowhere"], timeout=30),
                bus.get_resource_data(nodes=["nowhere"], timeout=30),
                bus.get_network_data(links=[(a, "x")], max_age=1, timeout=30),
                bus.wait_transfer(str(uuid.uuid4()), timeout=30),
                bus.data_transfer("h", "u", "pw", "/a", "/b", timeout=30),
                anext(updates),
            ]
            for wait in waits:
                task = started(wait)
                await asyncio.sleep(0.05)
                assert not task.done()
                task.cancel()
                await asyncio.wait([task], timeout=WAIT)
                assert task.cancelled()
            assert asyncio.all_tasks() == baseline
            assert bus.network._signal._waiters == []
            assert bus.resources._signal._waiters == []
            assert bus._completions._waiters == {}
            assert reply_waiters(transport) == {}
            assert updates._waiter is None
            async with bus.watch_network() as scoped:
                assert len(bus._watches.network) == 1
            assert scoped not in bus._watches.network
            assert len(bus._watches.network) == 0
            del updates, waits, wait, task
            gc.collect()  # the cancelled task's traceback held the watch in a cycle
            assert len(bus._watches.resources) == 0  # dropped: unregistered
        assert asyncio.all_tasks() <= baseline
        assert owned_by(transport) == set()  # subscription and consumer closed
        with pytest.raises(TransportError):
            await transport.queue_length(bus.completion_queue)  # default queue deleted
    finally:
        await transport.delete_queue(work_queue(idle))


async def test_closing_wakes_waiters_with_interface_closed(bus_url: str) -> None:
    bus = JupiterInterface(bus_url)
    async with bus:
        waiting = started(bus.get_resource_data(nodes=["never"], timeout=30))
        job = started(bus.wait_transfer(str(uuid.uuid4()), timeout=30))
        await asyncio.sleep(0.05)
    with pytest.raises(InterfaceClosed):
        await asyncio.wait_for(waiting, WAIT)
    with pytest.raises(InterfaceClosed):
        await asyncio.wait_for(job, WAIT)
    with pytest.raises(InterfaceClosed):
        await bus.get_network_data(timeout=0)
    with pytest.raises(InterfaceClosed):
        async with bus:
            pass


async def test_cancelled_enter_leaves_nothing_open(transport: Transport) -> None:
    baseline = asyncio.all_tasks()
    bus = JupiterInterface(transport, completion_queue=f"jupiter.completions.x-{uuid.uuid4()}")
    entering = started(bus.__aenter__())
    await asyncio.sleep(0)
    entering.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await entering
    await bus.close()
    # aio-pika finishes a channel whose opening was cancelled in tasks of its own
    await eventually(lambda: asyncio.all_tasks() <= baseline, timeout=5)
    assert owned_by(transport) == set()
    await transport.delete_queue(bus.completion_queue)


def test_repr_shows_no_broker_credentials() -> None:
    bus = JupiterInterface("amqp://jupiter:broker-secret@127.0.0.1:5672/", node="n1")
    assert "broker-secret" not in repr(bus)
    assert "127.0.0.1:5672" in repr(bus)


async def test_follow_binds_and_keeps_only_the_followed_nodes(
    bus_url: str, transport: Transport, unique: str
) -> None:
    mine, theirs = f"fa-{unique}", f"fb-{unique}"
    other_agent = Agent(theirs, bus_url, {"resources": {"interval": 0.2}})
    other = asyncio.create_task(other_agent.run())
    try:
        await asyncio.wait_for(other_agent.started(), WAIT)
        await asyncio.sleep(0.3)  # it has published: it will answer the snapshot request
        async with JupiterInterface(bus_url, follow=[mine]) as bus:
            async with bus.watch_transfers() as results:
                await publish(
                    transport,
                    sample(theirs),
                    cost(theirs, mine),
                    done(theirs),
                    sample(mine),
                    cost(mine, theirs),
                    done(mine),
                )
                result = await asyncio.wait_for(anext(results), WAIT)
                assert result.node == mine
            await eventually(lambda: mine in bus.resources.nodes)
            await eventually(lambda: bus.network.link_count == 1)
            await asyncio.sleep(0.5)  # the other agent went on publishing meanwhile
            assert bus.resources.nodes == (mine,)
            held = bus.network.snapshot()
            assert [(e.src, e.dst) for e in held.links()] == [(mine, theirs)]
        async with JupiterInterface(bus_url) as everyone:  # without follow: all of them
            await eventually(lambda: theirs in everyone.resources.nodes)
    finally:
        other_agent.stop()
        await asyncio.wait_for(other, WAIT)
