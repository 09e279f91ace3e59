"""``jupiter-bus seal-key FILE``: generate a deployment key that seals transfer passwords.

The file is created with mode 0600 (readable by its owner only) and never overwritten
unless ``--force`` is given. Give the same file to the transfer workers
(``[providers.transfer] seal_key_file``) and to the facade
(``JupiterInterface(..., seal_key=load_key(FILE))``): passwords then cross the broker
sealed, never in clear.
"""

from __future__ import annotations

import argparse
import logging
import os
from typing import Any

from ..errors import ConfigError
from ..sealing import new_key
from .console import command_parser, say

__all__ = [
    "add",
    "run",
    "write_key",
]

EXAMPLES = """\
examples:
  jupiter-bus seal-key /etc/jupiter/seal.key
  jupiter-bus seal-key --force ./seal.key      # replace an existing key
"""


def add(commands: Any) -> None:
    """Add the ``seal-key`` sub-command."""
    parser = command_parser(
        commands,
        "seal-key",
        summary="generate a key file that seals transfer passwords",
        doc=__doc__,
        examples=EXAMPLES,
    )
    parser.add_argument("file", metavar="FILE", help="where to write the key (mode 0600)")
    parser.add_argument("--force", action="store_true", help="replace an existing file")
    parser.set_defaults(run=run, log_level=logging.WARNING)


def write_key(path: str, *, force: bool = False) -> None:
    """Write a fresh key to ``path`` with mode 0600; :class:`ConfigError` if it exists.

    Example::

        write_key("/etc/jupiter/seal.key")
    """
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if force else os.O_EXCL)
    try:
        descriptor = os.open(path, flags, 0o600)
    except FileExistsError:
        raise ConfigError(f"{path} exists; give --force to replace it") from None
    except OSError as exc:
        raise ConfigError(f"cannot write {path}: {exc.strerror}") from None
    with os.fdopen(descriptor, "wb") as file:
        os.fchmod(file.fileno(), 0o600)  # an existing file replaced with --force
        file.write(new_key() + b"\n")


def run(args: argparse.Namespace) -> int:
    """Run ``jupiter-bus seal-key``."""
    write_key(args.file, force=args.force)
    say(f"wrote a new seal key to {args.file} (mode 0600)")
    return 0
