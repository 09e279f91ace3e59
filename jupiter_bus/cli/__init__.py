"""The ``jupiter-bus`` command (also ``python -m jupiter_bus``).

Each sub-command lives in its own module of this package (``jupiter_bus.cli.agent``,
``jupiter_bus.cli.demo``, ...) and says what it does with ``--help``, examples
included.

Exit statuses, the same for every command: 0 done (the agent: stopped by SIGTERM);
130 interrupted by SIGINT (Ctrl-C); 2 bad command line or configuration; 69 no broker
reachable (DNS, refused, timed out); 77 the broker refused the connection
(credentials, virtual host, TLS); 1 any other jupiter-bus error (one line on stderr).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from importlib.metadata import PackageNotFoundError, version
from typing import Any, Final

from ..errors import BrokerRefused, BrokerUnreachable, ConfigError, JupiterBusError
from ..interrupt import EXIT_INTERRUPTED
from . import agent, demo, profile, seal_key, setup, status, transfer, watch
from .agent import run_agent
from .console import (
    EXIT_FAILED,
    EXIT_REFUSED,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    configure_logging,
    say,
    use_uvloop,
)

__all__ = [
    "COMMANDS",
    "main",
    "package_version",
    "run_agent",
]

COMMANDS: Final[tuple[Callable[[Any], None], ...]] = (
    demo.add,
    agent.add,
    seal_key.add,
    setup.add,
    status.add,
    profile.add,
    transfer.add,
    watch.add,
)
"""Each command module's ``add``, in the order ``--help`` lists them."""

EPILOG = """\
exit statuses: 0 done; 1 failed (one line on stderr); 2 bad command line or
configuration; 69 no broker reachable; 77 the broker refused the connection;
130 interrupted (Ctrl-C).

Run 'jupiter-bus COMMAND --help' for a command's options and examples.
"""


def package_version() -> str:
    """The installed jupiter-bus version (``unknown`` when not installed)."""
    try:
        return version("jupiter-bus")
    except PackageNotFoundError:
        return "unknown"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jupiter-bus",
        description="Event-driven integration layer for Jupiter's schedulers.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log at debug level")
    parser.add_argument("--version", action="version", version=f"jupiter-bus {package_version()}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in COMMANDS:
        add(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``jupiter-bus`` command; returns the exit status."""
    args = _parser().parse_args(argv)
    configure_logging(args.verbose, args.log_level)
    use_uvloop()
    try:
        status: int = args.run(args)
        return status
    except KeyboardInterrupt:  # Ctrl-C: the work was cancelled and cleaned up
        say("interrupted")
        return EXIT_INTERRUPTED
    except ConfigError as exc:  # one line, the usage-error status: nothing was started
        say(str(exc))
        return EXIT_USAGE
    except BrokerUnreachable as exc:
        say(str(exc))
        return EXIT_UNREACHABLE
    except BrokerRefused as exc:
        say(str(exc))
        return EXIT_REFUSED
    except JupiterBusError as exc:
        say(str(exc))
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
