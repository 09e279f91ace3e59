"""``jupiter-bus agent``: run a node agent and its providers until SIGTERM/SIGINT.

The broker URL comes from, first found: ``--broker URL`` (works, but warns when the
URL holds a password: every user of the host sees it in ``ps``), ``--broker-file
FILE`` (a file holding the URL; warns when others may read it), the
``JUPITER_BUS_URL`` environment variable, then ``broker = "..."`` in the ``--config``
file.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import tomllib
from collections.abc import Mapping
from typing import Any

from ..agent import Agent, AgentOptions
from ..errors import ConfigError
from ..interrupt import EXIT_INTERRUPTED
from ..options import convert
from ..transport.base import safe_url
from .broker_url import ENV_URL, add_broker_arguments, broker_source, warn_where_others_see
from .console import command_parser

__all__ = [
    "add",
    "agent_options",
    "run",
    "run_agent",
]

log = logging.getLogger("jupiter_bus.cli")

EXAMPLES = f"""\
examples:
  {ENV_URL}=amqp://jupiter:secret@broker/ jupiter-bus agent --node node1
  jupiter-bus agent --config /etc/jupiter-bus/node1.toml
  jupiter-bus agent --node node2 --broker-file ~/.jupiter-bus-url --providers resources,transfer
  jupiter-bus agent --config /etc/jupiter-bus/node1.toml --metrics-port 9464
"""


def add(commands: Any) -> None:
    """Add the ``agent`` sub-command."""
    parser = command_parser(
        commands,
        "agent",
        summary="run a node agent and its providers",
        doc=__doc__,
        examples=EXAMPLES,
    )
    parser.add_argument("--node", help="this node's name ([A-Za-z0-9_-]+)")
    add_broker_arguments(parser)
    parser.add_argument(
        "--wait",
        type=float,
        metavar="SECONDS",
        help="how long to wait for the broker at start (default 60; 0: one attempt)",
    )
    parser.add_argument(
        "--providers", help="comma-separated provider names (default: those in --config)"
    )
    parser.add_argument("--config", help="TOML file: node, broker, [providers.<name>] tables")
    parser.add_argument("--host", help="address other nodes reach this node at")
    parser.add_argument("--ssh-port", type=int, help="SSH port other nodes reach this node at")
    parser.add_argument(
        "--metrics-port",
        type=int,
        metavar="PORT",
        help="serve Prometheus metrics at http://127.0.0.1:PORT/metrics (metrics_host in "
        "--config for another address; needs pip install 'jupiter-bus[metrics]')",
    )
    parser.set_defaults(run=run, log_level=logging.INFO)


def agent_options(args: argparse.Namespace) -> AgentOptions:
    """The TOML config file (if any) with the command line over it, as checked options."""
    config: dict[str, Any] = {}
    if args.config:
        try:
            with open(args.config, "rb") as file:
                config = tomllib.load(file)
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read config {args.config}: {exc}") from None
    settings = dict(config)
    flags = {"node": args.node, "host": args.host}
    settings.update({key: value for key, value in flags.items() if value})
    if args.ssh_port is not None:
        settings["ssh_port"] = args.ssh_port
    if args.wait is not None:
        settings["connect_timeout"] = args.wait
    if args.metrics_port is not None:
        settings["metrics_port"] = args.metrics_port
    broker = broker_source(args, config)
    if broker is not None:
        settings["broker"] = broker[0]
    tables = config.get("providers")
    if args.providers and (tables is None or isinstance(tables, Mapping)):
        names = [n.strip() for n in args.providers.split(",") if n.strip()]
        settings["providers"] = {name: (tables or {}).get(name, {}) for name in names}
    elif isinstance(tables, Mapping) and not tables:
        del settings["providers"]  # an empty table runs the default providers
    if not settings.get("node") or not settings.get("broker"):
        raise ConfigError(
            f"an agent needs --node NAME and a broker URL: {ENV_URL}, --broker-file FILE, "
            "broker in --config, or --broker URL (or node in --config)"
        )
    options = convert(AgentOptions, settings)
    if broker is not None:
        warn_where_others_see(args, *broker)
        log.info("broker %s (from %s)", safe_url(broker[0]), broker[1])
    return options


async def run_agent(options: AgentOptions) -> int:
    """Run a node agent until SIGTERM or SIGINT; return the exit status.

    Either signal stops the agent gracefully (providers finish their work); the status
    is 0 after SIGTERM (a service manager's ordinary stop) and 130 after SIGINT.
    """
    agent = Agent.from_options(options)
    loop = asyncio.get_running_loop()
    received: list[signal.Signals] = []

    def stop(sig: signal.Signals) -> None:
        if not received:
            log.info("agent %s: %s received; stopping", agent.node, sig.name)
        received.append(sig)
        agent.stop()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop, sig)
    try:
        await agent.run()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
    return EXIT_INTERRUPTED if signal.SIGINT in received[:1] else 0


def run(args: argparse.Namespace) -> int:
    """Run ``jupiter-bus agent``."""
    return asyncio.run(run_agent(agent_options(args)))
