"""The ``jupiter-bus`` command.

- ``jupiter-bus demo [--broker URL]`` shows the bus at work: live events published
  and received through a subscription, a malformed message dead-lettered with its
  reason, and a transfer request to a node that runs no worker refused at once;
- ``jupiter-bus agent --node NAME [--broker-file FILE] [--providers a,b] [--config FILE]``
  runs a node agent until SIGTERM/SIGINT.

The agent's broker URL comes from, first found: ``--broker URL`` (works, but warns when
the URL holds a password: every user of the host sees it in ``ps``), ``--broker-file
FILE`` (a file holding the URL; warns when others may read it), the ``JUPITER_BUS_URL``
environment variable, then ``broker = "..."`` in the ``--config`` file.

Exit statuses: 0 stopped by SIGTERM (or the demo done); 130 interrupted by SIGINT
(Ctrl-C); 2 bad command line or configuration; 69 no broker reachable within
``--wait`` seconds (DNS, refused, timed out); 77 the broker refused the connection
(credentials, virtual host, TLS); 1 any other jupiter-bus error.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import stat
import sys
import tomllib
from collections.abc import Mapping, Sequence
from typing import Any, Final
from urllib.parse import urlsplit

from .agent import Agent, AgentOptions
from .demo import demo
from .errors import BrokerRefused, BrokerUnreachable, ConfigError, JupiterBusError
from .interrupt import EXIT_INTERRUPTED, run_interruptible
from .options import convert
from .transport.base import safe_url

__all__ = [
    "main",
    "run_agent",
]


log = logging.getLogger("jupiter_bus.cli")

ENV_URL: Final = "JUPITER_BUS_URL"
"""The environment variable the agent reads its broker URL from (no ``--broker``)."""
EXIT_USAGE: Final = 2
EXIT_UNREACHABLE: Final = 69  # sysexits EX_UNAVAILABLE
EXIT_REFUSED: Final = 77  # sysexits EX_NOPERM
_THIRD_PARTY_LOGGERS: Final = ("asyncssh", "aiormq", "aio_pika")


def _use_uvloop() -> None:
    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def _warn_if_readable(path: str, what: str) -> None:
    """Warn when a file holding a broker password may be read by other users."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning(
            "%s %s holds the broker password and other users may read it (mode %03o); chmod 600 %s",
            what,
            path,
            stat.S_IMODE(mode),
            path,
        )


def _read_broker_file(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as file:
            url = file.read().strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"--broker-file: cannot read {path}: {exc}") from None
    if not url or len(url.splitlines()) != 1:
        raise ConfigError(f"--broker-file: {path} must hold one line, the bus URL")
    return url


def _broker(args: argparse.Namespace, config: Mapping[str, Any]) -> tuple[str, str] | None:
    """The broker URL and where it came from: --broker, --broker-file, env, config file."""
    if args.broker and args.broker_file:
        raise ConfigError("give --broker or --broker-file, not both")
    if args.broker:
        return args.broker, "--broker"
    if args.broker_file:
        return _read_broker_file(args.broker_file), f"--broker-file {args.broker_file}"
    if os.environ.get(ENV_URL, "").strip():
        return os.environ[ENV_URL].strip(), ENV_URL
    broker = config.get("broker")
    if isinstance(broker, str) and broker:
        return broker, f"--config {args.config}"
    return None


def _warn_where_others_see(args: argparse.Namespace, url: str, source: str) -> None:
    """Say how the broker password could be seen by others, once the options are good."""
    if not urlsplit(url).password:
        return
    if source == "--broker":
        log.warning(
            "the broker password on the command line is visible to every user of this "
            "host (ps, /proc/*/cmdline); give the URL in %s, a --broker-file or the "
            "--config file instead",
            ENV_URL,
        )
    elif args.broker_file:
        _warn_if_readable(args.broker_file, "--broker-file")
    elif source.startswith("--config"):
        _warn_if_readable(args.config, "--config")


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
    flags = {"node": args.node, "host": args.host}
    settings.update({key: value for key, value in flags.items() if value})
    if args.ssh_port is not None:
        settings["ssh_port"] = args.ssh_port
    if args.wait is not None:
        settings["connect_timeout"] = args.wait
    broker = _broker(args, config)
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
        _warn_where_others_see(args, *broker)
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


class _DropAiormqConnectError(logging.Filter):
    """aiormq logs each failed connection attempt itself, naming only the exception
    class; the agent says the same in words, once."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("error when creating transport")


def _configure_logging(verbose: bool, command: str) -> None:
    """INFO for the agent (DEBUG with -v); third-party libraries at WARNING unless -v."""
    level = logging.INFO if command == "agent" else logging.WARNING
    logging.basicConfig(
        level=logging.DEBUG if verbose else level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # Not DEBUG even with -v: aiormq logs whole frames there, passwords included.
    for name in _THIRD_PARTY_LOGGERS:
        logging.getLogger(name).setLevel(logging.INFO if verbose else logging.WARNING)
    logging.getLogger("aiormq.connection").addFilter(_DropAiormqConnectError())


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
    agent_cmd.add_argument(
        "--broker",
        help=f"bus URL, e.g. amqp://host/ (a password here shows in ps: prefer {ENV_URL}, "
        "--broker-file or the config file)",
    )
    agent_cmd.add_argument(
        "--broker-file", metavar="FILE", help="a file holding the bus URL (chmod 600 it)"
    )
    agent_cmd.add_argument(
        "--wait",
        type=float,
        metavar="SECONDS",
        help="how long to wait for the broker at start (default 60; 0: one attempt)",
    )
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
    _configure_logging(args.verbose, args.command)
    _use_uvloop()
    try:
        if args.command == "agent":
            return asyncio.run(run_agent(_agent_options(args)))
        return run_interruptible(demo(args.broker), name="jupiter-bus")
    except KeyboardInterrupt:  # Ctrl-C: the work was cancelled and cleaned up
        print("jupiter-bus: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except ConfigError as exc:  # one line, the usage-error status: nothing was started
        print(f"jupiter-bus: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except BrokerUnreachable as exc:
        print(f"jupiter-bus: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE
    except BrokerRefused as exc:
        print(f"jupiter-bus: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    except JupiterBusError as exc:
        print(f"jupiter-bus: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
