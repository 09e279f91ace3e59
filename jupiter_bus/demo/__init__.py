"""``jupiter-bus demo``: the bus at work, with no setup (in-process bus by default).

It starts a node agent (resources and a transfer worker using the local engine),
shows its live resource event, a link-cost event, a transfer request answered by
the worker, a malformed event dead-lettered with its reason, and a transfer to a
node that runs no worker refused at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
from pathlib import Path

from .. import messages
from ..agent import Agent
from ..errors import MessageError, Unroutable
from ..topology import (
    DEAD_EXCHANGE,
    ERROR_HEADER,
    EVENTS_EXCHANGE,
    TRANSFERS_EXCHANGE,
    network_key,
)
from ..transport import Envelope, Subscription, Transport, connect
from ..transport.base import safe_url

__all__ = [
    "NODE",
    "demo",
]

NODE = "demo-node1"


def _describe(envelope: Envelope) -> str:
    try:
        message = messages.decode(envelope.body)
    except MessageError as exc:
        return f"(undecodable: {exc})"
    match message:
        case messages.ResourceSample():
            return (
                f"{message.node}: cpu {message.cpu_percent:.1f}% of {message.cpu_count}, "
                f"memory {message.memory_percent:.1f}% of {message.memory_total_bytes >> 20} MiB"
            )
        case messages.LinkCost():
            return (
                f"{message.src}->{message.dst}: cost_ms = {message.a:.3g} x^2 + "
                f"{message.b:.3g} x + {message.c:.3g} (x in Kbit, {message.samples} samples)"
            )
        case messages.TransferResult():
            return f"ok={message.ok} {message.bytes} bytes in {message.seconds * 1000:.1f} ms"
        case _:
            return type(message).__name__


async def _next(feed: Subscription) -> Envelope:
    return await asyncio.wait_for(anext(feed), 10)


async def _show_transfer(bus: Transport, folder: Path) -> None:
    source = folder / "task3 output.bin"
    source.write_bytes(os.urandom(1 << 20))
    request = messages.TransferRequest(
        host="127.0.0.1",
        user=os.environ.get("USER", "demo") or "demo",
        source=str(source),
        destination=str(folder / "inbox" / "task3 input.bin"),
        engine="local",
        create_dirs=True,
    )
    reply = await bus.request(TRANSFERS_EXCHANGE, NODE, messages.encode(request), timeout=10)
    result = messages.decode(reply.body, messages.TransferResult)
    print(f"  reply  transfer via {NODE:23} {_describe(reply)}")
    if not result.ok:
        raise SystemExit(f"demo transfer failed: {result.error}")


async def _show_bad_input(bus: Transport, dead: Subscription) -> None:
    async with bus.subscribe(["resource.demo-node3"]) as events:
        await bus.publish(EVENTS_EXCHANGE, "resource.demo-node3", b'{"v": 1, "type": "resource"')
        bad = await _next(events)
    try:
        messages.decode(bad.body)
    except MessageError as exc:
        await bus.dead_letter(bad, str(exc), body=messages.redact(bad.body))
    letter = await _next(dead)
    print(f"  dead   {letter.routing_key:32} reason: {letter.headers[ERROR_HEADER]}")
    request = messages.TransferRequest(
        host="127.0.0.1", user="demo", source="/tmp/in.bin", destination="/tmp/out.bin"
    )
    try:
        await bus.request(TRANSFERS_EXCHANGE, "demo-nobody", messages.encode(request), timeout=5)
    except Unroutable:
        print("  refused transfer via demo-nobody: unreachable (no worker serves that node)")


async def demo(url: str) -> int:
    """Run the demo against the bus at ``url``; return the exit status."""
    print(f"jupiter-bus demo on {safe_url(url)}")
    bus = await connect(url, connection_name="jupiter-bus demo")
    with tempfile.TemporaryDirectory(prefix="jupiter-demo-") as tmp:
        folder = Path(tmp)
        agent = Agent(
            NODE,
            bus,
            {
                "resources": {"interval": 1.0},
                "transfer": {
                    "engine": "local",
                    "allow_roots": [tmp],
                    "state_dir": str(folder / "state"),
                },
            },
            host="127.0.0.1",
        )
        running: asyncio.Task[None] | None = None
        try:
            async with (
                bus.subscribe([f"resource.{NODE}", "network.*.*", "transfer.done.*"]) as events,
                bus.subscribe(["#"], exchange=DEAD_EXCHANGE) as dead,
            ):
                running = asyncio.create_task(agent.run())
                await asyncio.wait_for(agent.started(), 10)
                envelope = await _next(events)
                print(f"  event  {envelope.routing_key:32} {_describe(envelope)}")
                cost = messages.LinkCost(
                    src=NODE,
                    dst="demo-node2",
                    a=1.2e-9,
                    b=0.00125,
                    c=42.0,
                    samples=24,
                    r2=0.997,
                    min_kbit=8.0,
                    max_kbit=80_000.0,
                )
                await bus.publish(
                    EVENTS_EXCHANGE, network_key(cost.src, cost.dst), messages.encode(cost)
                )
                envelope = await _next(events)
                print(f"  event  {envelope.routing_key:32} {_describe(envelope)} [synthetic]")
                await _show_transfer(bus, folder)
                envelope = await _next(events)
                print(f"  event  {envelope.routing_key:32} {_describe(envelope)}")
                await _show_bad_input(bus, dead)
                agent.stop()
                await asyncio.wait_for(running, 30)
        finally:
            agent.stop()
            if running is not None and not running.done():  # interrupted: let it finish
                with contextlib.suppress(Exception, asyncio.CancelledError):
                    await asyncio.wait_for(running, 30)
            await bus.close()
    return 0
