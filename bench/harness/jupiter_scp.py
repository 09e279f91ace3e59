"""Jupiter's legacy way of copying a file: ``sshpass -p PW scp -o StrictHostKeyChecking=no``.

The benches run it with ``sshpass -e`` (the password in ``$SSHPASS``, out of argv) and
otherwise as Jupiter does: password login, no host key check, a new connection per file.
"""

from __future__ import annotations

import os
from pathlib import Path

OPTIONS = (
    "StrictHostKeyChecking=no",
    "UserKnownHostsFile=/dev/null",  # root's known_hosts stays untouched
    "LogLevel=ERROR",
    "PubkeyAuthentication=no",
)


def sshpass_scp_argv(port: int, source: Path, target: str) -> list[str]:
    """The command that copies ``source`` to ``target`` (``user@host:path``).

    Example::

        argv = sshpass_scp_argv(2222, Path("f.bin"), "bench@127.0.0.1:f.bin")
        await run_program(argv, timeout_s=60, env=password_env(password))
    """
    return [
        *("sshpass", "-e", "scp", "-q", "-P", str(port)),
        *(word for option in OPTIONS for word in ("-o", option)),
        str(source),
        target,
    ]


def password_env(password: str) -> dict[str, str]:
    """This process's environment with ``SSHPASS`` set, for ``sshpass -e``."""
    return dict(os.environ, SSHPASS=password)
