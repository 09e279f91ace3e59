"""Bus overhead: jupiter-bus against raw aio-pika and FastStream, side by side, in one run.

Run it from the repository root against a RabbitMQ broker::

    python bench/bus.py                 # default run: a few minutes
    python bench/bus.py --quick         # under about a minute, fewer messages
    python bench/bus.py --uvloop        # the same on uvloop's event loop
    python bench/bus.py --url amqp://guest:guest@127.0.0.1:5672/ --rounds 5

Three contenders do the same work with the same settings (1 KB JSON bodies, persistent
messages, publisher confirms, prefetch 100, classic durable queues):

- ``jupiter-bus``: :class:`~jupiter_bus.transport.amqp.AmqpTransport` via
  ``jupiter_bus.transport.connect``;
- ``aio-pika``: raw aio-pika 0-9-1 code written the usual way (``connect_robust``,
  a channel with ``publisher_confirms=True``, ``exchange.publish``, ``queue.iterator()``
  with ``message.ack()``, direct reply-to for requests);
- ``faststream``: a ``RabbitBroker`` used as its documentation shows (a publisher object,
  a subscriber with the default ack policy, ``broker.request`` for RPC), with its
  per-message log lines turned off (``logger=None``), as neither other contender logs
  per message.

Figures (each is the median over ``--rounds`` rounds; within a round the contenders take
turns figure by figure, in an order rotated every round, so drift on a busy machine hits
all three alike):

1. confirmed publish throughput to ``jupiter.events`` (a durable queue bound to the key,
   purged after each sample): one publish at a time, then 100 in flight (msgs/s);
2. consume + ack throughput from a durable queue pre-filled with N messages, prefetch
   100, timed from opening the consumer to the N-th ack (msgs/s);
3. request/reply round trip on ``jupiter.transfers`` (persistent, mandatory, confirmed;
   replies by direct reply-to) with a responder of the same kind on its own connection:
   sequential, then 100 in flight (p50 and p99 in ms, and requests/s).

The table gives each figure and the ratios to raw aio-pika from the same run; then a
summary says whether jupiter-bus meets DESIGN section 5 (>= 0.9x raw throughput, <= 1/0.9x
raw latency, ahead of FastStream). Queues are named ``bench.<run id>.*`` and deleted at the
end.
"""

from __future__ import annotations

import abc
import asyncio
import gc
import platform
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, Final

import aio_pika
from aio_pika.abc import (
    AbstractChannel,
    AbstractConnection,
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustConnection,
    DeliveryMode,
)
from faststream.rabbit import Channel, ExchangeType, RabbitBroker, RabbitExchange, RabbitQueue
from harness import broker
from harness.environment import versions
from harness.loop import use_uvloop
from harness.options import bench_parser
from harness.rounds import rotated
from harness.stats import Percentiles, median_ratio, ratios
from harness.tables import Ruled, figure_text, print_table, ratio_text, verdict
from harness.window import Timed, in_window

from jupiter_bus.topology import EVENTS_EXCHANGE, TRANSFERS_EXCHANGE
from jupiter_bus.transport import Delivery, Transport, connect

JSON: Final = "application/json"
DIRECT_REPLY_TO: Final = "amq.rabbitmq.reply-to"
WINDOW: Final = 100
PREFETCH: Final = 100
BODY_BYTES: Final = 1024
REQUEST_TIMEOUT_S: Final = 30.0
TARGET_RATIO: Final = 0.9


def _json_body(size: int) -> bytes:
    """A valid JSON object of exactly ``size`` bytes (FastStream decodes JSON bodies)."""
    head, tail = b'{"v":1,"type":"bench","pad":"', b'"}'
    return head + b"x" * (size - len(head) - len(tail)) + tail


BODY: Final = _json_body(BODY_BYTES)


@dataclass(frozen=True, slots=True)
class Settings:
    """How much work each sample does; the same for every contender."""

    url: str
    rounds: int
    publish_one_count: int
    publish_window_count: int
    consume_count: int
    request_one_count: int
    request_window_count: int
    sample_timeout_s: float = 300.0


def settings_for(url: str, quick: bool, rounds: int | None) -> Settings:
    if quick:
        return Settings(url, rounds or 3, 300, 2_000, 2_000, 150, 400)
    return Settings(url, rounds or 7, 600, 5_000, 6_000, 400, 1_000)


@dataclass(frozen=True, slots=True)
class Names:
    """One contender's queues; each queue's name is also its routing key."""

    events: str  # bound to jupiter.events
    work: str  # pre-filled through the default exchange
    rpc: str  # bound to jupiter.transfers

    @classmethod
    def for_run(cls, run_id: str, contender: str) -> Names:
        base = f"bench.{run_id}.{contender}"
        return cls(f"{base}.events", f"{base}.work", f"{base}.rpc")


class Admin:
    """Topology and bookkeeping outside the timed code, on its own plain connection."""

    def __init__(self, connection: AbstractConnection, channel: AbstractChannel) -> None:
        self._connection = connection
        self._channel = channel
        self._queues: dict[str, AbstractQueue] = {}

    @classmethod
    async def open(cls, url: str) -> Admin:
        connection = await aio_pika.connect(url)
        return cls(connection, await connection.channel(publisher_confirms=True))

    def broker_version(self) -> str:
        return broker.server_version(self._connection)

    async def declare(self, names: Names) -> None:
        for name, exchange in (
            (names.events, EVENTS_EXCHANGE),
            (names.work, ""),
            (names.rpc, TRANSFERS_EXCHANGE),
        ):
            queue = await self._channel.declare_queue(name, durable=True)
            self._queues[name] = queue
            if exchange:
                await queue.bind(exchange, name)

    async def purge(self, name: str) -> None:
        await self._queues[name].purge()

    async def fill(self, name: str, count: int, timeout_s: float) -> None:
        """Empty ``name``, then put ``count`` persistent, confirmed messages in it."""
        await self.purge(name)
        exchange = self._channel.default_exchange

        async def put() -> None:
            message = aio_pika.Message(
                BODY, content_type=JSON, delivery_mode=DeliveryMode.PERSISTENT
            )
            await exchange.publish(message, name, mandatory=False)

        async with asyncio.timeout(timeout_s):
            await in_window(count, 500, put)

    async def close(self) -> None:
        for queue in self._queues.values():
            await queue.delete(if_unused=False, if_empty=False)
        await self._connection.close()


class Contender(abc.ABC):
    """One way of using RabbitMQ; each method is one unit of timed work."""

    label: str
    key: str

    def __init__(self, url: str, names: Names) -> None:
        self.url = url
        self.names = names

    @abc.abstractmethod
    async def start(self) -> None:
        """Connect, and start the responder on its own connection."""

    @abc.abstractmethod
    async def close(self) -> None: ...

    @abc.abstractmethod
    async def publish(self) -> None:
        """Publish one persistent body to jupiter.events and await its confirm."""

    @abc.abstractmethod
    async def consume(self, count: int) -> float:
        """Consume and ack ``count`` messages of the work queue; seconds taken."""

    @abc.abstractmethod
    async def request(self) -> None:
        """One request/reply round trip through jupiter.transfers."""


class JupiterBus(Contender):
    """jupiter-bus's AmqpTransport; the responder answers each delivery in its own task."""

    label = "jupiter-bus"
    key = "jb"

    async def start(self) -> None:
        self._bus: Transport = await connect(self.url, connection_name="bench jupiter-bus")
        self._responder: Transport = await connect(self.url, connection_name="bench responder")
        self._serving = asyncio.create_task(self._serve())

    async def _serve(self) -> None:
        async with (
            self._responder.consume(self.names.rpc, prefetch=PREFETCH) as requests,
            asyncio.TaskGroup() as tasks,
        ):
            async for delivery in requests:
                tasks.create_task(self._answer(delivery))

    async def _answer(self, delivery: Delivery) -> None:
        await self._responder.reply(delivery.envelope, BODY)
        await delivery.ack()

    async def close(self) -> None:
        self._serving.cancel()
        await asyncio.gather(self._serving, return_exceptions=True)
        await self._responder.close()
        await self._bus.close()

    async def publish(self) -> None:
        await self._bus.publish(EVENTS_EXCHANGE, self.names.events, BODY, persistent=True)

    async def consume(self, count: int) -> float:
        started, seen = time.perf_counter(), 0
        async with self._bus.consume(self.names.work, prefetch=PREFETCH) as deliveries:
            async for delivery in deliveries:
                await delivery.ack()
                seen += 1
                if seen == count:
                    return time.perf_counter() - started
        raise RuntimeError(f"jupiter-bus consumer stopped after {seen} of {count}")

    async def request(self) -> None:
        await self._bus.request(TRANSFERS_EXCHANGE, self.names.rpc, BODY, timeout=REQUEST_TIMEOUT_S)


class RawAioPika(Contender):
    """aio-pika as its documentation writes it; the responder is a consume callback."""

    label = "aio-pika"
    key = "raw"

    async def start(self) -> None:
        self._connection = await aio_pika.connect_robust(self.url)
        channel = await self._connection.channel(publisher_confirms=True)
        self._events = await channel.get_exchange(EVENTS_EXCHANGE, ensure=False)
        await self._start_requester(self._connection)
        self._responder_connection = await aio_pika.connect_robust(self.url)
        await self._start_responder(self._responder_connection)

    async def _start_requester(self, connection: AbstractRobustConnection) -> None:
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        self._transfers = await channel.get_exchange(TRANSFERS_EXCHANGE, ensure=False)
        self._pending: dict[str, asyncio.Future[AbstractIncomingMessage]] = {}
        replies = await channel.declare_queue(DIRECT_REPLY_TO, passive=True)
        await replies.consume(self._on_reply, no_ack=True)

    async def _on_reply(self, message: AbstractIncomingMessage) -> None:
        waiter = self._pending.pop(message.correlation_id or "", None)
        if waiter is not None and not waiter.done():
            waiter.set_result(message)

    async def _start_responder(self, connection: AbstractRobustConnection) -> None:
        channel = await connection.channel(publisher_confirms=True)
        await channel.set_qos(prefetch_count=PREFETCH)
        self._reply_exchange = channel.default_exchange
        queue = await channel.declare_queue(self.names.rpc, passive=True)
        await queue.consume(self._answer)

    async def _answer(self, message: AbstractIncomingMessage) -> None:
        reply = aio_pika.Message(BODY, content_type=JSON, correlation_id=message.correlation_id)
        await self._reply_exchange.publish(reply, message.reply_to or "", mandatory=False)
        await message.ack()

    async def close(self) -> None:
        await self._responder_connection.close()
        await self._connection.close()

    async def publish(self) -> None:
        message = aio_pika.Message(BODY, content_type=JSON, delivery_mode=DeliveryMode.PERSISTENT)
        await self._events.publish(message, self.names.events, mandatory=False)

    async def consume(self, count: int) -> float:
        started, seen = time.perf_counter(), 0
        channel = await self._connection.channel(publisher_confirms=False)
        try:
            await channel.set_qos(prefetch_count=PREFETCH)
            queue = await channel.declare_queue(self.names.work, passive=True)
            async with queue.iterator() as messages:
                async for message in messages:
                    await message.ack()
                    seen += 1
                    if seen == count:
                        return time.perf_counter() - started
        finally:
            await channel.close()
        raise RuntimeError(f"aio-pika consumer stopped after {seen} of {count}")

    async def request(self) -> None:
        correlation_id = uuid.uuid4().hex
        waiter = asyncio.get_running_loop().create_future()
        self._pending[correlation_id] = waiter
        try:
            message = aio_pika.Message(
                BODY,
                content_type=JSON,
                delivery_mode=DeliveryMode.PERSISTENT,
                correlation_id=correlation_id,
                reply_to=DIRECT_REPLY_TO,
            )
            await self._transfers.publish(message, self.names.rpc, mandatory=True)
            await asyncio.wait_for(waiter, REQUEST_TIMEOUT_S)
        finally:
            self._pending.pop(correlation_id, None)


class FastStream(Contender):
    """A FastStream RabbitBroker: publisher object, subscribers, ``broker.request``."""

    label = "faststream"
    key = "fs"

    async def start(self) -> None:
        self._channel = Channel(prefetch_count=PREFETCH)
        self._broker = RabbitBroker(self.url, logger=None)
        self._responder = RabbitBroker(self.url, logger=None)
        self._transfers = RabbitExchange(TRANSFERS_EXCHANGE, type=ExchangeType.DIRECT)
        serve = self._responder.subscriber(
            RabbitQueue(self.names.rpc, durable=True, routing_key=self.names.rpc),
            self._transfers,
            channel=Channel(prefetch_count=PREFETCH),
        )

        @serve  # type: ignore[untyped-decorator, unused-ignore]  # without faststream installed
        async def answer(request: dict[str, Any]) -> bytes:
            return BODY

        await self._responder.start()
        await self._broker.start()
        self._events = self._broker.publisher(
            routing_key=self.names.events,
            exchange=RabbitExchange(EVENTS_EXCHANGE, type=ExchangeType.TOPIC),
            persist=True,
            mandatory=False,
            content_type=JSON,
            persistent=False,
        )

    async def close(self) -> None:
        await self._broker.stop()
        await self._responder.stop()

    async def publish(self) -> None:
        await self._events.publish(BODY)

    async def consume(self, count: int) -> float:
        done = asyncio.Event()
        seen, finished = 0, 0.0
        subscriber = self._broker.subscriber(
            RabbitQueue(self.names.work, durable=True), channel=self._channel, persistent=False
        )

        @subscriber  # type: ignore[untyped-decorator, unused-ignore]  # without faststream installed
        async def on_event(event: dict[str, Any]) -> None:
            nonlocal seen, finished
            seen += 1
            if seen == count:
                finished = time.perf_counter()
                done.set()

        started = time.perf_counter()
        await subscriber.start()
        try:
            await done.wait()
        finally:
            await subscriber.stop()
        return finished - started

    async def request(self) -> None:
        await self._broker.request(
            BODY,
            routing_key=self.names.rpc,
            exchange=self._transfers,
            persist=True,
            mandatory=True,
            timeout=REQUEST_TIMEOUT_S,
            content_type=JSON,
        )


# -- drivers: the same loops time every contender ----------------------------------------


async def publish_figures(contender: Contender, count: int, window: int) -> dict[str, float]:
    """Messages/s and CPU microseconds per message."""
    timed = await in_window(count, window, contender.publish)
    return {"": count / timed.wall_s, "cpu": timed.cpu_s / count * 1e6}


async def consume_figures(contender: Contender, count: int) -> dict[str, float]:
    """Messages/s and CPU microseconds per message."""
    cpu = time.process_time()
    wall_s = await contender.consume(count)
    return {"": count / wall_s, "cpu": (time.process_time() - cpu) / count * 1e6}


async def request_figures(contender: Contender, count: int, window: int) -> dict[str, float]:
    """p50 and p99 round trip in ms, requests/s, CPU microseconds per request."""
    samples: list[float] = []

    async def one() -> None:
        started = time.perf_counter()
        await contender.request()
        samples.append(time.perf_counter() - started)

    timed: Timed = await in_window(count, window, one)
    spread = Percentiles.of(samples)
    return {
        "p50": spread.p50 * 1e3,
        "p99": spread.p99 * 1e3,
        "rate": count / timed.wall_s,
        "cpu": timed.cpu_s / count * 1e6,
    }


# -- figures, rounds and the report ----------------------------------------------------


@dataclass(frozen=True, slots=True)
class Row:
    key: str
    title: str
    higher_is_better: bool


ROWS: Final = (
    Row("pub1", "publish 1 KB confirmed, 1 at a time (msg/s)", True),
    Row("pub100", f"publish 1 KB confirmed, {WINDOW} in flight (msg/s)", True),
    Row("consume", f"consume + ack, prefetch {PREFETCH} (msg/s)", True),
    Row("rr1.p50", "request/reply sequential, p50 (ms)", False),
    Row("rr1.p99", "request/reply sequential, p99 (ms)", False),
    Row("rr100.p50", f"request/reply {WINDOW} in flight, p50 (ms)", False),
    Row("rr100.p99", f"request/reply {WINDOW} in flight, p99 (ms)", False),
    Row("rr100.rate", f"request/reply {WINDOW} in flight (req/s)", True),
)
CPU_ROWS: Final = (
    Row("pub1.cpu", "publish, 1 at a time (us/msg)", False),
    Row("pub100.cpu", f"publish, {WINDOW} in flight (us/msg)", False),
    Row("consume.cpu", "consume + ack (us/msg)", False),
    Row("rr1.cpu", "request/reply sequential, both sides (us/req)", False),
    Row("rr100.cpu", f"request/reply {WINDOW} in flight, both sides (us/req)", False),
)
Results = dict[str, dict[str, list[float]]]


async def take_turns(
    contenders: Sequence[Contender],
    results: Results,
    prefix: str,
    measure: Callable[[Contender], Awaitable[dict[str, float]]],
    *,
    before: Callable[[Contender], Awaitable[None]] | None = None,
    after: Callable[[Contender], Awaitable[None]] | None = None,
) -> None:
    """One figure for every contender in turn: ``before`` and ``after`` it are untimed."""
    for contender in contenders:
        if before is not None:
            await before(contender)
        gc.collect()
        for name, value in (await measure(contender)).items():
            row = f"{prefix}.{name}" if name else prefix
            results.setdefault(row, {}).setdefault(contender.key, []).append(value)
        if after is not None:
            await after(contender)


async def one_round(
    contenders: Sequence[Contender], admin: Admin, settings: Settings, results: Results
) -> None:
    """Every figure once for every contender, contenders taking turns figure by figure."""
    s = settings

    async def purge(contender: Contender) -> None:
        await admin.purge(contender.names.events)

    async def fill(contender: Contender) -> None:
        await admin.fill(contender.names.work, s.consume_count, s.sample_timeout_s)

    turns = partial(take_turns, contenders, results)
    await turns("pub1", lambda c: publish_figures(c, s.publish_one_count, 1), after=purge)
    await turns("pub100", lambda c: publish_figures(c, s.publish_window_count, WINDOW), after=purge)
    await turns("consume", lambda c: consume_figures(c, s.consume_count), before=fill)
    await turns("rr1", lambda c: request_figures(c, s.request_one_count, 1))
    await turns("rr100", lambda c: request_figures(c, s.request_window_count, WINDOW))


async def warm_up(contenders: Sequence[Contender], admin: Admin) -> None:
    """Open the lazily created channels and fill caches before anything is timed."""
    for contender in contenders:
        await publish_figures(contender, 200, WINDOW)
        await admin.purge(contender.names.events)
        await admin.fill(contender.names.work, 200, 60.0)
        await contender.consume(200)
        await request_figures(contender, 50, 1)
        await request_figures(contender, 200, WINDOW)


def medians(results: Results, row: Row) -> dict[str, float]:
    return {key: statistics.median(values) for key, values in results[row.key].items()}


def round_ratios(results: Results, row: Row, key: str, base: str = "raw") -> list[float]:
    """``key``'s value over ``base``'s, round by round (the two ran back to back)."""
    values = results[row.key]
    return ratios(values[key], values[base])


def ratio(results: Results, row: Row, key: str, base: str = "raw") -> float:
    """Median of the per-round ratios: steadier than a ratio of medians on a busy host."""
    values = results[row.key]
    return median_ratio(values[key], values[base])


def print_figures(
    results: Results, contenders: Sequence[Contender], rows: Sequence[Row], title: str
) -> None:
    heads = [title, *(c.label for c in contenders), "jb/raw", "fs/raw"]
    lines = []
    for row in rows:
        med = medians(results, row)
        jb, fs = ratio(results, row, "jb"), ratio(results, row, "fs")
        lines.append(
            [
                row.title,
                *(figure_text(med[c.key]) for c in contenders),
                ratio_text(jb),
                ratio_text(fs),
            ]
        )
    print_table(heads, lines, Ruled())


def print_rounds(results: Results, contenders: Sequence[Contender]) -> None:
    print("\nper-round values (the tables show their median):")
    for row in (*ROWS, *CPU_ROWS):
        parts = [
            f"{c.key} " + " ".join(figure_text(v) for v in results[row.key][c.key])
            for c in contenders
        ]
        print(f"  {row.key:<11} " + " | ".join(parts))


def print_summary(results: Results) -> bool:
    """Say, figure by figure, whether jupiter-bus meets DESIGN section 5; all met?"""
    print("\nsummary (DESIGN section 5: jupiter-bus >= 0.9x raw aio-pika throughput,")
    print("<= 1/0.9x raw latency, and ahead of FastStream; ratios are medians of per-round")
    print("ratios, with their range over the rounds in brackets):")
    all_met = True
    for row in ROWS:
        to_raw, to_fs = ratio(results, row, "jb"), ratio(results, row, "jb", "fs")
        spread = round_ratios(results, row, "jb")
        if row.higher_is_better:
            near_raw, ahead = to_raw >= TARGET_RATIO, to_fs > 1
            goal = f">= {TARGET_RATIO:.2f}x"
        else:
            near_raw, ahead = to_raw <= 1 / TARGET_RATIO, to_fs < 1
            goal = f"<= {1 / TARGET_RATIO:.2f}x"
        all_met = all_met and near_raw and ahead
        print(
            f"  {row.title}: jupiter-bus {ratio_text(to_raw, 3)} raw "
            f"[{min(spread):.2f}-{max(spread):.2f}], goal {goal}: "
            f"{verdict(near_raw)}; {'ahead of' if ahead else 'BEHIND'} "
            f"FastStream (jb/fs {ratio_text(to_fs)})"
        )
    cpu = ", ".join(
        f"{row.key.removesuffix('.cpu')} {ratio_text(ratio(results, row, 'jb'))}"
        for row in CPU_ROWS
    )
    print(f"  client CPU per operation, jupiter-bus / raw aio-pika: {cpu}")
    print(f"  overall: {'every goal met' if all_met else 'some goals missed (see above)'}")
    return all_met


async def run(settings: Settings, loop_name: str) -> None:
    run_id = uuid.uuid4().hex[:8]
    admin = await Admin.open(settings.url)
    contenders: list[Contender] = [
        kind(settings.url, Names.for_run(run_id, kind.key))
        for kind in (JupiterBus, RawAioPika, FastStream)
    ]
    started: list[Contender] = []
    try:
        print_header(settings, loop_name, admin.broker_version(), run_id)
        for contender in contenders:
            await admin.declare(contender.names)
            await contender.start()
            started.append(contender)
        await warm_up(contenders, admin)
        results: Results = {}
        for number in range(settings.rounds):
            began = time.perf_counter()
            async with asyncio.timeout(settings.sample_timeout_s * 8):
                await one_round(rotated(contenders, number), admin, settings, results)
            took = time.perf_counter() - began
            print(f"round {number + 1}/{settings.rounds} done in {took:.1f} s", flush=True)
        print_report(results, contenders)
    finally:
        for contender in reversed(started):
            await contender.close()
        await admin.close()


def print_report(results: Results, contenders: Sequence[Contender]) -> None:
    print()
    print_figures(results, contenders, ROWS, "figure (median of rounds)")
    print(
        "\nmsg/s and req/s: higher is better (ratio > 1: faster than raw aio-pika); "
        "ms: lower is better (ratio < 1: faster than raw aio-pika).\n"
        "Ratios are medians of per-round ratios (each pair ran back to back).\n"
    )
    print_figures(results, contenders, CPU_ROWS, "client CPU per operation")
    print(
        "\nus of this process's CPU per message or request (lower is better); less "
        "disturbed than wall-clock figures by other load on the machine."
    )
    print_rounds(results, contenders)
    print_summary(results)


def print_header(settings: Settings, loop_name: str, broker_version: str, run_id: str) -> None:
    packages = versions("jupiter-bus", "aio-pika", "aiormq", "faststream")
    print(f"bench/bus.py run {run_id}: Python {platform.python_version()}, {packages}")
    print(f"RabbitMQ {broker_version} at {broker.address(settings.url)}; event loop: {loop_name}")
    print(
        f"{settings.rounds} rounds, median shown; per sample: publish {settings.publish_one_count}"
        f" (1 at a time) / {settings.publish_window_count} ({WINDOW} in flight), consume "
        f"{settings.consume_count}, requests {settings.request_one_count} (sequential) / "
        f"{settings.request_window_count} ({WINDOW} in flight); bodies {BODY_BYTES} B",
        flush=True,
    )


def main(argv: Sequence[str] | None = None) -> None:
    rounds = "rounds to take the median of (default 7; 3 with --quick)"
    parser = bench_parser(
        __doc__, "fewer messages: under a minute", rounds_help=rounds, uvloop=True
    )
    args = parser.parse_args(argv)
    loop_name = use_uvloop() if args.uvloop else "asyncio default"
    asyncio.run(run(settings_for(args.url, args.quick, args.rounds), loop_name))


if __name__ == "__main__":
    main()
