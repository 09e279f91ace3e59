"""The ``jupiter-bus`` command.

- ``jupiter-bus demo [--broker URL]`` shows the bus at work: live events published
  and received through a subscription, a malformed message dead-lettered with its
  reason, and a transfer request to a node that runs no worker refused at once;
- ``jupiter-bus agent --node NAME --broker URL [--providers a,b] [--config FILE]``
  runs a node agent until SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
import tomllib
from collections.abc import Sequence
from typing import Any

from . import messages
from .agent import Agent
from .errors import ConfigError, JupiterBusError, MessageError, Unroutable
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


def _agent_settings(args: argparse.Namespace) -> dict[str, Any]:
    """Merge the TOML config file (if any) with the command line (which wins)."""
    config: dict[str, Any] = {}
    if args.config:
        try:
            with open(args.config, "rb") as file:
                config = tomllib.load(file)
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read config {args.config}: {exc}") from None
    providers: dict[str, Any] = dict(config.get("providers", {}))
    if args.providers:
        names = [n.strip() for n in args.providers.split(",") if n.strip()]
        providers = {name: providers.get(name, {}) for name in names}
    elif not providers:
        providers = {"resources": {}}
    node = args.node or config.get("node")
    broker = args.broker or config.get("broker")
    if not node or not broker:
        raise ConfigError(
            "an agent needs --node NAME and --broker URL (or node/broker in --config)"
        )
    return {
        "node": node,
        "broker": broker,
        "providers": providers,
        "host": args.host or config.get("host"),
        "ssh_port": args.ssh_port or config.get("ssh_port"),
        "grace": float(config.get("grace", 30.0)),
    }


async def run_agent(settings: dict[str, Any]) -> int:
    """Run a node agent until SIGTERM or SIGINT; return the exit status."""
    agent = Agent(
        settings["node"],
        settings["broker"],
        settings["providers"],
        host=settings["host"],
        ssh_port=settings["ssh_port"],
        grace=settings["grace"],
    )
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, agent.stop)
    await agent.run()
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="jupiter-bus", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="log at debug level")
    commands = parser.add_subparsers(dest="command", required=True)
    demo_cmd = commands.add_parser("demo", help="show the bus at work")
    demo_cmd.add_argument(
        "--broker", default="memory://demo", help="bus URL (default: memory://demo, no broker)"
    )
    agent_cmd = commands.add_parser("agent", help="run a node agent and its providers")
    agent_cmd.add_argument("--node", help="this node's name ([A-Za-z0-9_-]+)")
    agent_cmd.add_argument("--broker", help="bus URL, e.g. amqp://user:pass@host/")
    agent_cmd.add_argument(
        "--providers", help="comma-separated provider names (default: those in --config)"
    )
    agent_cmd.add_argument("--config", help="TOML file: node, broker, [providers.<name>] tables")
    agent_cmd.add_argument("--host", help="address other nodes reach this node at")
    agent_cmd.add_argument("--ssh-port", type=int, help="SSH port other nodes reach this node at")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``jupiter-bus`` command."""
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("aiormq").setLevel(logging.WARNING)
    logging.getLogger("aio_pika").setLevel(logging.WARNING)
    _use_uvloop()
    try:
        if args.command == "agent":
            return asyncio.run(run_agent(_agent_settings(args)))
        return asyncio.run(demo(args.broker))
    except JupiterBusError as exc:
        print(f"jupiter-bus: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
