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
from collections.abc import Mapping, Sequence
from typing import Any

from .agent import Agent, AgentOptions
from .demo import demo
from .errors import ConfigError, JupiterBusError
from .options import convert

__all__ = [
    "main",
    "run_agent",
]


def _use_uvloop() -> None:
    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def _agent_options(args: argparse.Namespace) -> AgentOptions:
    """The TOML config file (if any) with the command line over it, as checked options."""
    config: dict[str, Any] = {}
    if args.config:
        try:
            with open(args.config, "rb") as file:
                config = tomllib.load(file)
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read config {args.config}: {exc}") from None
    settings = dict(config)
    flags = {"node": args.node, "broker": args.broker, "host": args.host}
    settings.update({key: value for key, value in flags.items() if value})
    if args.ssh_port is not None:
        settings["ssh_port"] = args.ssh_port
    tables = config.get("providers")
    if args.providers and (tables is None or isinstance(tables, Mapping)):
        names = [n.strip() for n in args.providers.split(",") if n.strip()]
        settings["providers"] = {name: (tables or {}).get(name, {}) for name in names}
    elif isinstance(tables, Mapping) and not tables:
        del settings["providers"]  # an empty table runs the default providers
    if not settings.get("node") or not settings.get("broker"):
        raise ConfigError(
            "an agent needs --node NAME and --broker URL (or node/broker in --config)"
        )
    return convert(AgentOptions, settings)


async def run_agent(options: AgentOptions) -> int:
    """Run a node agent until SIGTERM or SIGINT; return the exit status."""
    agent = Agent.from_options(options)
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
            return asyncio.run(run_agent(_agent_options(args)))
        return asyncio.run(demo(args.broker))
    except ConfigError as exc:  # one line, the usage-error status: nothing was started
        print(f"jupiter-bus: {exc}", file=sys.stderr)
        return 2
    except JupiterBusError as exc:
        print(f"jupiter-bus: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
