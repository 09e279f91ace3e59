"""The ``jupiter-bus`` command.

``jupiter-bus demo [--broker URL]`` shows the bus at work: live events published and
received through a subscription, a malformed message dead-lettered with its reason,
and a transfer request to a node that runs no worker refused at once.
Further subcommands (``agent``, ``watch``, ``transfer``, ...) arrive with the node agent.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sys
from collections.abc import Sequence

from . import messages
from .errors import JupiterBusError, MessageError, Unroutable
from .topology import (
    DEAD_EXCHANGE,
    ERROR_HEADER,
    EVENTS_EXCHANGE,
    TRANSFERS_EXCHANGE,
    network_key,
    resource_key,
)
from .transport import Envelope, Subscription, connect


def _describe(envelope: Envelope) -> str:
    try:
        message = messages.decode(envelope.body)
    except MessageError as exc:
        return f"(undecodable: {exc})"
    match message:
        case messages.ResourceSample():
            return (
                f"{message.node}: cpu {message.cpu_percent:.1f}% of {message.cpu_count}, "
                f"memory {message.memory_percent:.1f}%"
            )
        case messages.LinkCost():
            return (
                f"{message.src}->{message.dst}: cost_ms = {message.a:.3g} x^2 + "
                f"{message.b:.3g} x + {message.c:.3g} (x in Kbit, {message.samples} samples)"
            )
        case _:
            return type(message).__name__


async def _next(feed: Subscription) -> Envelope:
    return await asyncio.wait_for(anext(feed), 5)


async def demo(url: str) -> int:
    """Run the demo against the bus at ``url``; return the exit status."""
    print(f"jupiter-bus demo on {url.split('@')[-1]}")
    bus = await connect(url, connection_name="jupiter-bus demo")
    try:
        async with (
            bus.subscribe(["resource.*", "network.*.*"]) as events,
            bus.subscribe(["#"], exchange=DEAD_EXCHANGE) as dead,
        ):
            sample = messages.ResourceSample(
                node="demo-node1",
                cpu_percent=12.5,
                cpu_count=4,
                memory_percent=40.0,
                memory_total_bytes=8 << 30,
                memory_available_bytes=5 << 30,
            )
            cost = messages.LinkCost(
                src="demo-node1",
                dst="demo-node2",
                a=1.2e-9,
                b=0.00125,
                c=42.0,
                samples=24,
                r2=0.997,
                min_kbit=8.0,
                max_kbit=80_000.0,
            )
            await bus.publish(EVENTS_EXCHANGE, resource_key(sample.node), messages.encode(sample))
            await bus.publish(
                EVENTS_EXCHANGE, network_key(cost.src, cost.dst), messages.encode(cost)
            )
            for _ in range(2):
                envelope = await _next(events)
                print(f"  event  {envelope.routing_key:32} {_describe(envelope)}")

            await bus.publish(
                EVENTS_EXCHANGE, "resource.demo-node3", b'{"v": 1, "type": "resource"'
            )
            bad = await _next(events)
            try:
                messages.decode(bad.body)
            except MessageError as exc:
                await bus.dead_letter(bad, str(exc), body=messages.redact(bad.body))
            letter = await _next(dead)
            print(f"  dead   {letter.routing_key:32} reason: {letter.headers[ERROR_HEADER]}")

            request = messages.TransferRequest(
                host="127.0.0.1",
                user="demo",
                source="/tmp/in.bin",
                destination="/tmp/out.bin",
            )
            try:
                await bus.request(
                    TRANSFERS_EXCHANGE, "demo-nobody", messages.encode(request), timeout=5
                )
            except Unroutable as exc:
                print(f"  refused transfer via node demo-nobody: unreachable ({exc})")
    finally:
        await bus.close()
    return 0


def _use_uvloop() -> None:
    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``jupiter-bus`` command."""
    parser = argparse.ArgumentParser(prog="jupiter-bus", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="log at debug level")
    commands = parser.add_subparsers(dest="command", required=True)
    demo_cmd = commands.add_parser("demo", help="show the bus at work")
    demo_cmd.add_argument(
        "--broker", default="memory://demo", help="bus URL (default: memory://demo, no broker)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    _use_uvloop()
    try:
        return asyncio.run(demo(args.broker))
    except JupiterBusError as exc:
        print(f"jupiter-bus: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
