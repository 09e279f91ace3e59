"""``jupiter-bus transfer``: have a node's worker copy a file, and wait for it with a
progress bar.

SOURCE is a path on the executing node (``--via``); it is copied to DESTINATION on
``--to USER@HOST[:PORT]`` by that node's transfer worker, over its engine (SFTP by
default), and the command waits for the result. A password, when the destination
needs one rather than the worker's keys, comes from ``$JUPITER_BUS_PASSWORD`` or from
a prompt (``--ask-password``), never from the command line; with ``--seal-key-file`` it
is sealed before it is published. Progress comes from the worker's
``transfer.progress`` events: a bar on a terminal, nothing else off one. The result is
one line (``--json``: the TransferResult). Exit 0 when the copy succeeded, 1 when it
failed (the error kind and message, never the password), 69/77 broker errors.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import logging
import os
import sys
import time
from collections.abc import AsyncIterator
from typing import Any, Final

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from ..errors import ConfigError
from ..facade import JupiterInterface
from ..messages import TransferEngine, TransferResult, encode
from ..sealing import load_key
from .broker_url import add_broker_arguments, resolve_broker
from .console import EXIT_FAILED, command_parser

__all__ = [
    "ENV_PASSWORD",
    "add",
    "parse_target",
    "run",
]

ENV_PASSWORD: Final = "JUPITER_BUS_PASSWORD"
"""Environment variable holding the destination's password (never pass it in argv)."""

EXAMPLES = """\
examples:
  jupiter-bus transfer --via node1 --to jupiter@10.0.0.12 /data/out.bin /srv/in/out.bin
  JUPITER_BUS_PASSWORD=... jupiter-bus transfer --via node1 --to pi@10.0.0.13:2222 a.bin b.bin
  jupiter-bus transfer --via node1 --to jupiter@10.0.0.12 --ask-password --json a.bin b.bin
"""

ENGINES: Final = ("sftp", "scp", "openssh-scp", "local")


def add(commands: Any) -> None:
    """Add the ``transfer`` sub-command."""
    parser = command_parser(
        commands,
        "transfer",
        summary="copy a file through a node's worker and wait for it",
        doc=__doc__,
        examples=EXAMPLES,
    )
    parser.add_argument("source", help="the file on the executing node")
    parser.add_argument("destination", help="where it goes on the destination host")
    add_broker_arguments(parser)
    parser.add_argument("--via", required=True, metavar="NODE", help="the executing node")
    parser.add_argument(
        "--to", required=True, metavar="USER@HOST[:PORT]", help="the destination login and host"
    )
    parser.add_argument("--engine", choices=ENGINES, help="engine (default: the worker's)")
    parser.add_argument(
        "--create-dirs", action="store_true", help="create missing folders at the destination"
    )
    parser.add_argument(
        "--ask-password",
        action="store_true",
        help=f"prompt for the password (else ${ENV_PASSWORD}, else the worker's keys)",
    )
    parser.add_argument(
        "--seal-key-file", metavar="FILE", help="seal the password with this deployment key"
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=600.0,
        metavar="S",
        help="seconds to wait for the result; the job's deadline (default: %(default)g)",
    )
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.set_defaults(run=run, log_level=logging.WARNING)


def parse_target(text: str) -> tuple[str, str, int]:
    """``user@host[:port]`` -> ``(user, host, port)``; ``[v6]:port`` for IPv6 hosts.

    Example::

        >>> parse_target("jupiter@10.0.0.12:2222")
        ('jupiter', '10.0.0.12', 2222)
        >>> parse_target("pi@[fd00::7]")
        ('pi', 'fd00::7', 22)
    """
    user, at, where = text.rpartition("@")
    if not at or not user or not where:
        raise ConfigError(f"--to: expected USER@HOST[:PORT], got {text!r}")
    port = 22
    if where.startswith("["):
        host, bracket, rest = where[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise ConfigError(f"--to: expected USER@[IPV6]:PORT, got {text!r}")
        port_text = rest[1:]
    else:
        host, _, port_text = where.partition(":")
    if port_text:
        if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
            raise ConfigError(f"--to: expected a port 1-65535, got {port_text!r}")
        port = int(port_text)
    if not host:
        raise ConfigError(f"--to: expected a host, got {text!r}")
    return user, host, port


def _password(args: argparse.Namespace) -> str | None:
    if args.ask_password:
        if not sys.stdin.isatty():
            raise ConfigError("--ask-password needs a terminal; set $JUPITER_BUS_PASSWORD instead")
        return getpass.getpass(f"password for {args.to}: ") or None
    return os.environ.get(ENV_PASSWORD) or None


@contextlib.asynccontextmanager
async def _bar(
    jupiter: JupiterInterface, args: argparse.Namespace, job: list[str]
) -> AsyncIterator[None]:
    """A progress bar fed by the job's progress events, on a terminal only."""
    if args.json or not sys.stderr.isatty():
        yield
        return
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, transient=True, console=Console(stderr=True)) as progress:
        task = progress.add_task(f"{args.via} -> {args.to}", total=None)

        async def follow() -> None:
            async with jupiter.watch_progress(node=args.via) as updates:
                async for update in updates:
                    if job and update.request_id == job[0]:
                        progress.update(task, completed=update.bytes_done, total=update.bytes_total)

        follower = asyncio.create_task(follow())
        try:
            yield
        finally:
            follower.cancel()
            await asyncio.gather(follower, return_exceptions=True)


def _line(result: TransferResult, args: argparse.Namespace) -> str:
    if result.ok:
        rate = result.bytes * 8 / 1e6 / result.seconds if result.seconds > 0 else 0.0
        return (
            f"ok: {result.bytes} bytes {args.via} -> {args.to}:{args.destination} in "
            f"{result.seconds:.2f} s ({rate:.1f} Mbit/s, {result.attempts} attempt(s))"
        )
    error = result.error
    reason = f"{error.kind}: {error.message}" if error else "failed"
    return f"failed: {reason} (after {result.attempts} attempt(s), {result.seconds:.2f} s)"


async def _transfer(args: argparse.Namespace) -> int:
    user, host, port = parse_target(args.to)
    password = _password(args)
    seal_key = load_key(args.seal_key_file) if args.seal_key_file else None
    engine: TransferEngine | None = args.engine
    job: list[str] = []  # filled once submitted; the bar matches progress against it
    async with (
        JupiterInterface(resolve_broker(args), seal_key=seal_key) as jupiter,
        _bar(jupiter, args, job),
    ):
        # the bar follows the job from before it is submitted
        job_id = await jupiter.submit_transfer(
            host,
            user,
            password,
            args.source,
            args.destination,
            via=args.via,
            port=port,
            engine=engine,
            create_dirs=args.create_dirs,
            deadline=time.time() + args.timeout,
        )
        job.append(job_id)
        result = await jupiter.wait_transfer(job_id, timeout=args.timeout, check=False)
    print(encode(result).decode() if args.json else _line(result, args), flush=True)
    return 0 if result.ok else EXIT_FAILED


def run(args: argparse.Namespace) -> int:
    """Run ``jupiter-bus transfer``."""
    return asyncio.run(_transfer(args))
