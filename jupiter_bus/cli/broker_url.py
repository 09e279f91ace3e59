"""Where a command's broker URL comes from, first found: ``--broker URL`` (warns when
the URL holds a password: every user of the host sees it in ``ps``), ``--broker-file
FILE`` (warns when others may read the file), the ``JUPITER_BUS_URL`` environment
variable, then the agent's ``--config`` file.
"""

from __future__ import annotations

import argparse
import logging
import os
import stat
from collections.abc import Mapping
from typing import Any, Final
from urllib.parse import urlsplit

from ..errors import ConfigError

__all__ = [
    "ENV_URL",
    "add_broker_arguments",
    "broker_source",
    "resolve_broker",
    "warn_if_readable",
    "warn_where_others_see",
]

log = logging.getLogger("jupiter_bus.cli")

ENV_URL: Final = "JUPITER_BUS_URL"
"""The environment variable commands read the broker URL from (no ``--broker``)."""


def warn_if_readable(path: str, what: str) -> None:
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


def add_broker_arguments(parser: argparse.ArgumentParser) -> None:
    """``--broker URL`` and ``--broker-file FILE`` (``JUPITER_BUS_URL`` when neither)."""
    parser.add_argument(
        "--broker",
        default=None,
        help=f"bus URL, e.g. amqp://host/ (a password here shows in ps: prefer {ENV_URL} "
        "or --broker-file)",
    )
    parser.add_argument(
        "--broker-file", metavar="FILE", help="a file holding the bus URL (chmod 600 it)"
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


def broker_source(
    args: argparse.Namespace, config: Mapping[str, Any] | None = None
) -> tuple[str, str] | None:
    """The broker URL and where it came from: --broker, --broker-file, the environment,
    then the config file; ``None`` when there is none."""
    if args.broker and args.broker_file:
        raise ConfigError("give --broker or --broker-file, not both")
    if args.broker:
        return args.broker, "--broker"
    if args.broker_file:
        return _read_broker_file(args.broker_file), f"--broker-file {args.broker_file}"
    if os.environ.get(ENV_URL, "").strip():
        return os.environ[ENV_URL].strip(), ENV_URL
    broker = (config or {}).get("broker")
    if isinstance(broker, str) and broker:
        return broker, f"--config {getattr(args, 'config', '')}"
    return None


def warn_where_others_see(args: argparse.Namespace, url: str, source: str) -> None:
    """Say how the broker password could be seen by others."""
    if not urlsplit(url).password:
        return
    if source == "--broker":
        log.warning(
            "the broker password on the command line is visible to every user of this "
            "host (ps, /proc/*/cmdline); give the URL in %s, a --broker-file or the "
            "--config file instead",
            ENV_URL,
        )
    elif getattr(args, "broker_file", None):
        warn_if_readable(args.broker_file, "--broker-file")
    elif source.startswith("--config"):
        warn_if_readable(args.config, "--config")


def resolve_broker(args: argparse.Namespace) -> str:
    """The broker URL of a client command (not the agent), or :class:`ConfigError`."""
    found = broker_source(args)
    if found is None:
        raise ConfigError(f"no broker: give --broker URL, --broker-file FILE or set {ENV_URL}")
    warn_where_others_see(args, *found)
    return found[0]
