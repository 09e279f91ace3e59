"""What every ``jupiter-bus`` command shares on the console: exit statuses, one-line
errors on stderr, logging levels, and the event loop.

A command module (``jupiter_bus.cli.<name>``) exposes ``add(commands)``, which adds its
sub-parser and sets ``run`` (and ``log_level``) as the parser's defaults, and
``run(args) -> int``. The package's ``main`` parses, sets up logging, calls
``args.run(args)`` and turns the library's errors into one line and the status here.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sys
import textwrap
from typing import Any, Final

__all__ = [
    "EXIT_FAILED",
    "EXIT_REFUSED",
    "EXIT_UNREACHABLE",
    "EXIT_USAGE",
    "command_parser",
    "configure_logging",
    "say",
    "use_uvloop",
]

EXIT_FAILED: Final = 1
"""Any other jupiter-bus error (a failed transfer, a timeout, ...)."""
EXIT_USAGE: Final = 2
"""Bad command line or configuration: nothing was started."""
EXIT_UNREACHABLE: Final = 69  # sysexits EX_UNAVAILABLE
"""No broker reachable (DNS, refused, timed out)."""
EXIT_REFUSED: Final = 77  # sysexits EX_NOPERM
"""The broker refused the connection (credentials, virtual host, TLS)."""
_THIRD_PARTY_LOGGERS: Final = ("asyncssh", "aiormq", "aio_pika")


def command_parser(
    commands: Any, name: str, *, summary: str, doc: str | None, examples: str
) -> argparse.ArgumentParser:
    """A sub-command's parser: ``summary`` in the command list, the module's ``doc`` as
    its description and ``examples`` after its options.

    Example::

        parser = command_parser(commands, "watch", summary="...", doc=__doc__, examples=EXAMPLES)
    """
    parser: argparse.ArgumentParser = commands.add_parser(
        name,
        help=summary,
        description=textwrap.dedent(doc or "").strip(),
        epilog=examples,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    return parser


def say(message: str) -> None:
    """One line on stderr, prefixed with the program's name (errors and notices)."""
    print(f"jupiter-bus: {message}", file=sys.stderr)


def use_uvloop() -> None:
    """Run on uvloop when it is installed (the ``uvloop`` extra)."""
    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


class _DropAiormqConnectError(logging.Filter):
    """aiormq logs each failed connection attempt itself, naming only the exception
    class; the commands say the same in words, once."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("error when creating transport")


def configure_logging(verbose: bool, level: int = logging.WARNING) -> None:
    """``level`` for jupiter-bus (DEBUG with -v); third-party libraries at WARNING
    (INFO with -v, never DEBUG: aiormq logs whole frames there, passwords included)."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for name in _THIRD_PARTY_LOGGERS:
        logging.getLogger(name).setLevel(logging.INFO if verbose else logging.WARNING)
    logging.getLogger("aiormq.connection").addFilter(_DropAiormqConnectError())
