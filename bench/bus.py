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

import asyncio
import time
import uuid
from collections.abc import Sequence

from bus_parts.admin import Admin, Names
from bus_parts.contenders import Contender, FastStream, JupiterBus, RawAioPika
from bus_parts.report import print_header, print_report
from bus_parts.sampling import Results, one_round, warm_up
from bus_parts.settings import Settings, settings_for
from harness.loop import use_uvloop
from harness.options import bench_parser
from harness.rounds import rotated


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
