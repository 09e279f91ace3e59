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

from .agent import Agent
from .demo import demo
from .errors import ConfigError, JupiterBusError


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
        level=logging.DEBUG
        if args.verbose
        else logging.INFO
        if args.command == "agent"
        else logging.WARNING,
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
